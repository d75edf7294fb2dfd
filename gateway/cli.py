"""The `privaterouter` command. Expected mistakes end with one clear line and a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import errno
import getpass
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway import __version__, cli_ops
from gateway.registry import RegistryError, load
from gateway.settings import Settings, SettingsError, describe

log = logging.getLogger("pr.serve")


class CliError(Exception):
    """An expected failure: printed as one line, exit status 1."""


def _settings() -> Settings:
    return Settings.from_env()


DRAIN_SECONDS = 30  # SIGTERM: in-flight requests get this long; then settlements flush (recovery.py)


def _pid_file(settings: Settings) -> Path:
    return settings.data_dir / "privaterouter.pid"


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from gateway.logs import configure_logging
    from gateway.metrics import prepare_multiprocess_dir

    settings = _settings()
    load(settings.models_file)  # refuse to start on an invalid registry, with its message
    configure_logging(settings.log_level, settings.log_format)
    if not args.no_migrate:
        from gateway.db.migrate import upgrade  # Alembic costs ~10 MB of memory: only load it to migrate

        upgrade(settings.database_url)
    host = args.host or settings.host
    port = args.port or settings.port
    check_port_free(host, port)
    workers = args.workers or settings.workers
    if workers > 1 and settings.redis_url is None:
        raise CliError(f"WORKERS={workers} needs REDIS_URL: without Redis each worker keeps its own rate limits "
                       f"and login throttle, multiplying every limit by {workers}; set REDIS_URL or use one worker")
    prepare_multiprocess_dir(settings.data_dir, workers)  # the workers inherit PROMETHEUS_MULTIPROC_DIR
    from gateway.serving import connection_cap

    max_connections = connection_cap(settings.max_connections)
    if max_connections < settings.max_connections:
        log.warning("MAX_CONNECTIONS=%d lowered to %d: the open-file limit (ulimit -n) carries two descriptors "
                    "per connection; raise it to serve more at once", settings.max_connections, max_connections)
    pid_file = _pid_file(settings)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(str(os.getpid()))
    try:
        uvicorn.run("gateway.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_config=None, access_log=False, proxy_headers=False, server_header=False,
                    timeout_graceful_shutdown=DRAIN_SECONDS, http="gateway.serving:HeaderDeadlineProtocol",
                    limit_concurrency=max_connections, timeout_keep_alive=settings.keepalive_timeout)
    finally:
        pid_file.unlink(missing_ok=True)


def cmd_migrate(args: argparse.Namespace) -> None:
    from gateway.db.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    print("database is at the latest revision")


def cmd_reload(args: argparse.Namespace) -> None:
    """Validate the registry here first, then SIGHUP the running server (pid from DATA_DIR)."""
    settings = _settings()
    load(settings.models_file)
    pid_file = _pid_file(settings)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        raise CliError(f"no running server found ({pid_file} missing); is `privaterouter serve` running?") from None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise CliError(f"process {pid} from {pid_file} is not running") from None
    print(f"{settings.models_file} is valid; sent SIGHUP to {pid}")


def cmd_create_admin(args: argparse.Namespace) -> None:
    from gateway.accounts import create_admin
    from gateway.db.engine import create_engine, session_factory
    from gateway.db.migrate import upgrade

    settings = _settings()
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Repeat password: "):
            raise CliError("the passwords differ")
    upgrade(settings.database_url)
    registry = load(settings.models_file)

    async def run() -> str:
        engine = create_engine(settings.database_url)
        try:
            return await create_admin(session_factory(engine), registry, email=args.email, password=password)
        finally:
            await engine.dispose()

    try:
        user_id = asyncio.run(run())
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"admin {args.email} ready (user id {user_id})")


def cmd_settings(args: argparse.Namespace) -> None:
    print(describe())


def cmd_version(args: argparse.Namespace) -> None:
    print(f"privaterouter {__version__}")


def cmd_fake_ollama(args: argparse.Namespace) -> None:
    from providers.ollama.fake import FakeConfig, run_fake

    config = FakeConfig(tokens_per_reply=args.tokens, token_delay=args.token_delay_ms / 1000,
                        first_token_delay=args.first_token_delay_ms / 1000)
    run_fake(args.host, args.port, config)


def cmd_demo(args: argparse.Namespace) -> None:
    from gateway.demo import demo_settings, run_demo
    from gateway.logs import configure_logging

    settings = _settings()
    load(settings.models_file)
    host, port = args.host or settings.host, args.port or settings.port
    check_port_free(host, port)
    configure_logging("WARNING", "text")
    # uvicorn re-raises the SIGTERM it handled once it has shut down; make that an exception, so the
    # throwaway directory is removed on the way out instead of the process dying with it in place.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with tempfile.TemporaryDirectory(prefix="privaterouter-demo-") as data_dir:
        asyncio.run(run_demo(demo_settings(settings, Path(data_dir)), host=host, port=port))


def check_port_free(host: str, port: int) -> None:
    """CliError naming the address when something already listens there (instead of uvicorn's traceback)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CliError(f"port {port} on {host} is already in use; stop the other server or set PORT") from None
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _database_failure(exc: BaseException) -> str | None:
    """The one-line message for a database that cannot be reached, or None for any other error."""
    from sqlalchemy.engine import make_url

    from gateway.db.availability import is_database_unavailable

    if not (is_database_unavailable(exc) or isinstance(exc, ConnectionError | TimeoutError)):
        return None
    try:
        url = make_url(Settings.from_env().database_url)
        where = f"{url.host}:{url.port or 5432}" if url.host else str(url.database)
    except Exception:
        where = "DATABASE_URL"
    return f"cannot reach the database at {where} ({type(exc).__name__}); is it running, and is DATABASE_URL right?"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="privaterouter", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    serve = add("serve", cmd_serve, "Run the gateway (migrates the database first unless --no-migrate).")
    serve.add_argument("--host", help="bind address (default: HOST)")
    serve.add_argument("--port", type=int, help="port (default: PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (default: WORKERS)")
    serve.add_argument("--no-migrate", action="store_true", help="skip migrations (replicas behind a migrate job)")
    add("migrate", cmd_migrate, "Upgrade the database to the latest schema (idempotent).")
    add("reload", cmd_reload, "Validate MODELS_FILE and make the running server reload it (SIGHUP).")
    admin = add("create-admin", cmd_create_admin,
                "Create an admin user, or promote an existing one (who keeps their own password).")
    admin.add_argument("email")
    admin.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add("settings", cmd_settings, "List every setting with its default and meaning.")
    add("version", cmd_version, "Print the version.")
    fake = add("fake-ollama", cmd_fake_ollama, "Serve the Ollama emulator (for demos, tests and benchmarks).")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=11434)
    fake.add_argument("--tokens", type=int, default=32, help="tokens per reply")
    fake.add_argument("--token-delay-ms", type=float, default=0.0, help="delay between streamed tokens")
    fake.add_argument("--first-token-delay-ms", type=float, default=0.0, help="delay before the first token")
    demo = add("demo", cmd_demo, "Run the gateway with the Ollama emulator as its node, a demo user and a key.")
    demo.add_argument("--host", help="bind address (default: HOST)")
    demo.add_argument("--port", type=int, help="port (default: PORT)")
    cli_ops.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (CliError, cli_ops.CliError, SettingsError, RegistryError) as exc:
        print(f"privaterouter: error: {exc}", file=sys.stderr)
        return 1
    except cli_ops.CheckFailed as failed:
        return failed.status
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = _database_failure(exc)
        if message is None:
            raise
        print(f"privaterouter: error: {message}", file=sys.stderr)
        return 1
    return 0
