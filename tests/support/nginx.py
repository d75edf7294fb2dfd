"""A private nginx (Debian's `nginx` binary) on a free loopback port: own config, pid, logs and temp dirs."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.processes import free_port


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((path for path in ("/usr/sbin/nginx",) if Path(path).exists()), None)
    if found is None:
        raise RuntimeError("nginx is not installed (apt-get install nginx; .ci/run does it)")
    return found


@contextmanager
def private_nginx(tmp_path: Path, server_block: str) -> Iterator[int]:
    """Run nginx with `server_block` (which must `listen PORT`, replaced here) until the block ends."""
    port = free_port()
    root = tmp_path / "nginx"
    for folder in ("logs", "temp"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    block = server_block.replace("listen 80;", f"listen 127.0.0.1:{port};")
    config = root / "nginx.conf"
    config.write_text(f"""
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {root}/logs/access.log;
    client_body_temp_path {root}/temp/body;
    proxy_temp_path {root}/temp/proxy;
    fastcgi_temp_path {root}/temp/fastcgi;
    uwsgi_temp_path {root}/temp/uwsgi;
    scgi_temp_path {root}/temp/scgi;
{block}
}}
""")
    binary = nginx_binary()
    check = subprocess.run([binary, "-t", "-p", str(root), "-e", str(root / "logs/error.log"), "-c", str(config)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen([binary, "-p", str(root), "-e", str(root / "logs/error.log"), "-c", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((root / "logs/error.log").read_text()) from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
