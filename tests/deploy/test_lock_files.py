"""The lock files pin, with hashes, every dependency pyproject.toml names (CI and the image install from them)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    """PEP 503 normalised project name of a requirement string such as "uvicorn[standard]>=0.30"."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _pins(lock: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    lines = lock.read_text().splitlines()
    for number, line in enumerate(lines):
        found = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if found:
            assert lines[number + 1].strip().startswith("--hash=sha256:"), f"{lock.name}: {line} has no hash"
            pins[_name(found.group(1))] = found.group(2)
    return pins


@pytest.mark.parametrize(("lock", "extras"), [("requirements.lock", ()), ("requirements-dev.lock", ("test", "dev"))])
def test_every_dependency_is_pinned_with_a_hash(lock: str, extras: tuple[str, ...]) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    wanted = list(project["dependencies"]) + [dep for extra in extras for dep in optional[extra]]
    pins = _pins(REPO / lock)
    missing = sorted({_name(dep) for dep in wanted} - set(pins))
    assert not missing, f"{lock} lacks {missing}: regenerate it (README, Development)"


def test_ci_and_the_image_install_from_the_locks() -> None:
    assert "--require-hashes -r requirements-dev.lock" in (REPO / ".ci/run").read_text()
    assert "--require-hashes -r requirements.lock" in (REPO / "Containerfile").read_text()
