"""Slow clients against a real `privaterouter serve` process (failing input 17): half-sent headers are
disconnected after HEADER_TIMEOUT, trickled bodies get 408 after BODY_TIMEOUT, and 300 slowloris
connections cannot take a server with 256 file descriptors down."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODELS_FILE
from tests.support.private_services import free_port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    environment = {**os.environ, "PORT": str(port), "MODELS_FILE": str(MODELS_FILE), "DATA_DIR": str(tmp_path),
                   "HEADER_TIMEOUT": "1", "BODY_TIMEOUT": "1", "LOG_LEVEL": "warning", "LOG_FORMAT": "text"}
    for name in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET", "APP_SECRET_KEY", "WORKERS"):
        environment.pop(name, None)

    def few_descriptors() -> None:  # what the audit ran with: 300 idle sockets used to exhaust it
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=environment, cwd=tmp_path,
                                   stdout=output, stderr=subprocess.STDOUT, preexec_fn=few_descriptors)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=15)


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, TimeoutError):
        return False


def test_half_sent_headers_are_disconnected_and_the_server_survives(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    slow: list[socket.socket] = []
    try:
        for _ in range(300):
            sock = socket.socket()
            sock.settimeout(20)
            try:
                sock.connect(("127.0.0.1", port))
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            except OSError:  # the backlog is full while the server is at its descriptor limit: still a slow client
                sock.close()
                continue
            slow.append(sock)
        for sock in slow[:5]:  # a byte now and then does not extend the deadline
            sock.sendall(b"a")
        # The server is still there for everyone else (the deadline frees the descriptors).
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{server}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server stopped answering"
            time.sleep(0.2)
        assert sum(_closed_by_peer(sock) for sock in slow[:20]) == 20
    finally:
        for sock in slow:
            sock.close()


def test_a_trickled_body_gets_408(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"email\":")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request_timeout" in answer or b"content-length" in answer.lower()


def _cap_with_descriptors(limit: int, requested: int) -> tuple[int, int]:
    """connection_cap() run in a child whose open-file limit is `limit` (soft and hard)."""
    code = ("import resource; from gateway.serving import connection_cap; "
            f"cap = connection_cap({requested}); print(cap, resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
    cap, soft = result.stdout.split()
    return int(cap), int(soft)


def test_the_connection_cap_fits_the_open_file_limit() -> None:
    assert _cap_with_descriptors(256, 4096) == ((256 - 64) // 2, 256)  # two descriptors per connection


def test_the_soft_open_file_limit_is_raised_for_the_cap() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2 * 100 + 64:
        pytest.fail(f"this machine's hard open-file limit {hard} is too low for the test")
    code = ("import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (100, resource.getrlimit("
            "resource.RLIMIT_NOFILE)[1])); from gateway.serving import connection_cap; "
            "print(connection_cap(100), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    cap, raised = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout.split()
    assert (int(cap), int(raised)) == (100, 2 * 100 + 64)
