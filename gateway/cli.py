"""The `privaterouter` command. Expected mistakes end with one clear line and a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway import __version__
from gateway.registry import RegistryError, load
from gateway.settings import Settings, SettingsError, describe


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
    workers = args.workers or settings.workers
    prepare_multiprocess_dir(settings.data_dir, workers)  # the workers inherit PROMETHEUS_MULTIPROC_DIR
    pid_file = _pid_file(settings)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(str(os.getpid()))
    try:
        uvicorn.run("gateway.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_config=None, access_log=False, proxy_headers=False, server_header=False,
                    timeout_graceful_shutdown=DRAIN_SECONDS)
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
    from gateway.demo import run_demo
    from gateway.logs import configure_logging

    settings = _settings()
    configure_logging("WARNING", "text")
    asyncio.run(run_demo(settings, host=args.host or settings.host, port=args.port or settings.port))


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (CliError, SettingsError, RegistryError) as exc:
        print(f"privaterouter: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
