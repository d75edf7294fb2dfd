"""`privaterouter smoke` against a real `serve` process whose node is the emulator."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import httpx

from gateway import smoke
from tests.support.processes import deployment, stop

REPO = Path(__file__).resolve().parent.parent.parent


def _admin_token(env: dict[str, str], url: str) -> str:
    subprocess.run([sys.executable, "-m", "gateway", "create-admin", "ops@example.com", "--password-stdin"],
                   input=b"correct-horse-battery-staple\n", env=env, cwd=env["DATA_DIR"] + "/..", check=True,
                   capture_output=True)
    login = httpx.post(f"{url}/api/auth/login", json={"email": "ops@example.com",
                                                      "password": "correct-horse-battery-staple"})
    return str(login.json()["access_token"])


def _smoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "smoke", *args], capture_output=True, text=True,
                          timeout=120)


def test_smoke_passes_then_names_the_failing_steps(tmp_path: Path) -> None:
    with deployment(tmp_path) as deployed:
        token = _admin_token(deployed.env, deployed.url)
        passed = _smoke("--url", deployed.url, "--admin-token", token)
        assert passed.returncode == 0, passed.stdout + passed.stderr
        lines = passed.stdout.splitlines()
        steps = [line.split(" ", 1)[1].split(" (")[0] for line in lines[:-1]]
        assert steps == ["health", "sign-up", "login", "key", "models", "chat", "stream", "embeddings", "usage",
                         "balance", "rate limit", "clean-up"]
        assert all(line.startswith("PASS ") for line in lines[:-1]) and lines[-1].endswith("all steps passed")
        assert "disabled" in lines[-2]
        users = httpx.get(f"{deployed.url}/api/admin/users?email=smoke-",
                          headers={"Authorization": f"Bearer {token}"}).json()["items"]
        assert [user["status"] for user in users] == ["disabled"]

        stop(deployed.emulator)  # the GPU node goes away: inference steps fail, the rest still runs
        failed = _smoke("--url", deployed.url, "--skip-rate-limit")
    assert failed.returncode == 1
    report = {line.split(" ", 2)[1].rstrip(":"): line.split(" ", 1)[0] for line in failed.stdout.splitlines()[:-1]}
    assert report["chat"] == "FAIL" and report["stream"] == "FAIL" and report["sign-up"] == "PASS"
    assert report["clean-up"] == "PASS" and "SKIP rate limit: --skip-rate-limit" in failed.stdout
    assert "HTTP 503 upstream_unavailable" in failed.stdout


def test_unreachable_url_fails_every_step_cleanly(tmp_path: Path) -> None:
    from tests.support.processes import free_port

    result = _smoke("--url", f"http://127.0.0.1:{free_port()}", "--skip-rate-limit")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stdout.splitlines()[0].startswith("FAIL health: cannot reach")


def test_runs_on_a_bare_interpreter_from_a_checkout() -> None:
    """`python3 -m gateway.smoke` with the base interpreter: no virtualenv, no third-party package."""
    import os

    from tests.support.processes import free_port

    bare = Path(sys.base_prefix) / "bin" / "python3"
    assert bare.exists() and Path(sys.prefix) != Path(sys.base_prefix)  # tests run in a virtualenv
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    result = subprocess.run([str(bare), "-s", "-m", "gateway.smoke", "--url", f"http://127.0.0.1:{free_port()}",
                             "--skip-rate-limit"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.startswith("FAIL health: cannot reach")


def test_smoke_uses_the_standard_library_only() -> None:
    tree = ast.parse((REPO / "gateway" / "smoke.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported
    assert smoke.build_parser().parse_args(["--url", "http://x"]).skip_rate_limit is False
