"""The operator's subcommands of `privaterouter`: config check, nodes, models, usage export and smoke.

Each handler is thin: it parses arguments, calls one domain function (the same one the admin API
calls) and renders the result. Expected failures raise `CliError` (one line, exit 1); a check that
finds a problem returns its own exit status through `CheckFailed`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from gateway.registry import load
from gateway.settings import Settings

Add = Callable[..., argparse.ArgumentParser]


class CheckFailed(Exception):
    """A check ran and found problems (already printed); the command exits with `status`."""

    def __init__(self, status: int = 1) -> None:
        super().__init__(status)
        self.status = status


def cmd_config_check(args: argparse.Namespace) -> None:
    """Validate a registry file offline with the server's own loader (so the messages are identical)."""
    path = Path(args.file) if args.file else Settings.from_env().models_file
    registry = load(path)  # RegistryError -> "privaterouter: error: <file>:<line>: <key>: <problem>", exit 1
    print(f"{path} is valid: {len(registry.nodes)} nodes, {len(registry.models)} models, "
          f"{len(registry.plans)} plans (version {registry.version})")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the operator subcommands to the `privaterouter` parser."""
    config = commands.add_parser("config", help="Registry file tools.", description="Registry file tools.")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_commands.add_parser(
        "check", help="Validate a models.yaml offline (default: MODELS_FILE), exit 1 on error.",
        description="Validate a models.yaml offline with the server's own rules; exit 1 naming the line and key.")
    check.add_argument("file", nargs="?", help="registry file (default: MODELS_FILE)")
    check.set_defaults(handler=cmd_config_check)
