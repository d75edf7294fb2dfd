from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.cli import main
from tests.conftest import MODELS_FILE


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET", "APP_SECRET_KEY", "PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODELS_FILE", str(MODELS_FILE))
    return tmp_path


def test_version_and_settings(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "privaterouter 0.1.0" in out and "UPSTREAM_IDLE_TIMEOUT" in out


def test_migrate_twice(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate"]) == 0
    assert main(["migrate"]) == 0
    assert (env / "data" / "privaterouter.db").exists()


def test_bad_setting_is_one_line_and_exit_1(env: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PORT", "eighty")
    assert main(["serve"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("privaterouter: error: PORT=") and "\n" not in err


def test_invalid_registry_refuses_serve_and_reload(env: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = env / "bad.yaml"
    bad.write_text(MODELS_FILE.read_text().replace("rpm: 60", "rpn: 60"))
    monkeypatch.setenv("MODELS_FILE", str(bad))
    assert main(["serve"]) == 1
    assert main(["reload"]) == 1
    assert "plans[1].rpn: unknown key" in capsys.readouterr().err


def test_reload_without_server_says_so(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reload"]) == 1
    assert "no running server" in capsys.readouterr().err


def _wait_health(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(log.read_text())
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not become healthy")


def test_serve_answers_health_and_reloads_on_sighup(env: Path) -> None:
    """The README's run command on the embedded default, then SIGHUP with an invalid and a valid file."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    models = env / "models.yaml"
    models.write_text(MODELS_FILE.read_text())
    environment = {**os.environ, "PORT": str(port), "MODELS_FILE": str(models), "LOG_FORMAT": "text"}
    log = env / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=environment,
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_health(f"{base}/health", process, log)
        version = httpx.get(f"{base}/health/readiness").json()["checks"]["registry"]

        models.write_text(MODELS_FILE.read_text().replace("rpm: 20", "rpm: lots"))
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert httpx.get(f"{base}/health/readiness").json()["checks"]["registry"] == version

        models.write_text(MODELS_FILE.read_text().replace("rpm: 20", "rpm: 21"))
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while httpx.get(f"{base}/health/readiness").json()["checks"]["registry"] == version:
            assert time.monotonic() < deadline, "valid registry was not picked up"
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_create_admin_reads_the_password_from_stdin(env: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("correct-horse-battery\n"))
    assert main(["create-admin", "Root@Example.com", "--password-stdin"]) == 0
    assert "admin Root@Example.com ready" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["create-admin", "other@example.com", "--password-stdin"]) == 1
    assert "password" in capsys.readouterr().err.lower()


def test_several_workers_without_redis_are_refused(env: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # failing input 18: WORKERS=2 without REDIS_URL let 40 of 60 calls through a 20-rpm plan
    monkeypatch.setenv("WORKERS", "2")
    assert main(["serve", "--no-migrate"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("privaterouter: error: WORKERS=2 needs REDIS_URL") and "\n" not in err
    assert main(["serve", "--no-migrate", "--workers", "3"]) == 1
    assert "WORKERS=3 needs REDIS_URL" in capsys.readouterr().err


def test_unreachable_database_is_one_line_without_the_password(env: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.private_services import free_port

    port = free_port()  # nothing listens there
    monkeypatch.setenv("DATABASE_URL", f"postgresql+asyncpg://app:s3cr3t-pw@127.0.0.1:{port}/app")
    monkeypatch.setenv("JWT_SECRET", "j" * 40)
    monkeypatch.setenv("APP_SECRET_KEY", "k" * 40)
    for command in (["migrate"], ["serve", "--port", str(free_port())]):
        assert main(command) == 1
        err = capsys.readouterr().err.strip()
        assert err == (f"privaterouter: error: cannot reach the database at 127.0.0.1:{port} (ConnectionRefusedError); "
                       "is it running, and is DATABASE_URL right?"), err


def test_port_in_use_is_one_line(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for command in ("serve", "demo"):
            assert main([command, "--port", str(port)]) == 1
            err = capsys.readouterr().err.strip()
            assert err == f"privaterouter: error: port {port} on 127.0.0.1 is already in use; stop the other server " \
                          "or set PORT", err


def test_missing_models_file_is_one_line(env: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MODELS_FILE", str(env / "nowhere.yaml"))
    for command in ("serve", "demo", "reload"):
        assert main([command]) == 1
        err = capsys.readouterr().err.strip()
        assert "nowhere.yaml: cannot read" in err and "\n" not in err
