"""compose.yaml and the Containerfile cannot run here (no container engine): check their structure."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.conftest import REPO


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "compose.yaml").read_text()))


def test_compose_services_health_checks_and_order() -> None:
    services = _compose()["services"]
    assert {"api", "migrate", "postgres", "redis"} <= set(services)
    for name in ("api", "postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
    api = services["api"]
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert api["command"] == ["privaterouter", "serve", "--no-migrate"]
    assert services["migrate"]["command"] == ["privaterouter", "migrate"]
    assert "ports" not in api and api["expose"] == ["8000"]  # the proxy publishes: `--scale api=3` works
    assert any(str(port).endswith(":8000") for port in services["proxy"]["ports"])
    assert services["ollama"]["profiles"] == ["gpu"]


def test_compose_secrets_are_required_not_defaulted() -> None:
    text = (REPO / "compose.yaml").read_text()
    for secret in ("POSTGRES_PASSWORD", "JWT_SECRET", "APP_SECRET_KEY"):
        assert re.search(r"\$\{" + secret + r":\?[^}]+\}", text), secret
    env = _compose()["services"]["api"]["environment"]
    assert env["DATABASE_URL"] == "postgresql+asyncpg://privaterouter@postgres:5432/privaterouter"  # no password
    assert env["REDIS_URL"].startswith("redis://")


def test_containerfile_is_slim_nonroot_and_healthchecked() -> None:
    text = (REPO / "Containerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", text, re.M)
    assert re.search(r"^USER (?!root)\S+", text, re.M)
    assert "HEALTHCHECK" in text and "/health" in text
    assert "privaterouter" in text and "serve" in text
    for copied in ("gateway", "providers", "migrations", "models.yaml", "pyproject.toml"):
        assert copied in text


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert match and duration, duration
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def test_the_api_stop_grace_period_is_above_the_drain() -> None:
    from gateway.cli import DRAIN_SECONDS
    from gateway.recovery import SHUTDOWN_FLUSH_SECONDS

    api = _compose()["services"]["api"]
    assert _seconds(api["stop_grace_period"]) > DRAIN_SECONDS + SHUTDOWN_FLUSH_SECONDS


def test_the_settlement_journal_lives_on_a_volume() -> None:
    compose = _compose()
    data_dir = re.search(r"DATA_DIR=(\S+)", (REPO / "Containerfile").read_text())
    assert data_dir is not None
    mounts = [str(volume).split(":") for volume in compose["services"]["api"]["volumes"]]
    assert any(source in compose["volumes"] and target == data_dir.group(1) for source, target, *_ in mounts)
