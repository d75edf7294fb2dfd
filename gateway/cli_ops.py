"""The operator's subcommands of `privaterouter`: config check, nodes, models, usage export and smoke.

Each handler is thin: it parses arguments, calls one domain function (the same one the admin API
calls) and renders the result. Expected failures raise `CliError` (one line, exit 1); a check that
finds a problem returns its own exit status through `CheckFailed`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import httpx
import orjson

if TYPE_CHECKING:  # rich is imported by the commands that print with it: `serve` never loads it
    from rich.progress import TaskID
    from rich.table import Table

from gateway import nodes, smoke, usage_export
from gateway.registry import Node, Registry, load
from gateway.settings import Settings

T = TypeVar("T")


class CliError(Exception):
    """An expected failure: printed as one line, exit status 1 (the same as `gateway.cli.CliError`)."""


class CheckFailed(Exception):
    """A check ran and found problems (already printed); the command exits with `status`."""

    def __init__(self, status: int = 1) -> None:
        super().__init__(status)
        self.status = status


def cmd_config_check(args: argparse.Namespace) -> None:
    """Validate a registry file offline with the server's own loader (so the messages are identical)."""
    path = Path(args.file) if args.file else Settings.from_env().models_file
    registry = load(path)  # RegistryError -> "privaterouter: error: <file>:<line>: <key>: <problem>", exit 1
    counts = ", ".join(_count(len(items), noun) for items, noun in
                       ((registry.nodes, "node"), (registry.models, "model"), (registry.plans, "plan")))
    print(f"{path} is valid: {counts} (version {registry.version})")


def _count(number: int, noun: str) -> str:
    """Counted noun: "1 node", "2 nodes"."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


# --- nodes and models -----------------------------------------------------------------------------


def _registry(args: argparse.Namespace) -> Registry:
    return load(Path(args.models_file) if getattr(args, "models_file", None) else Settings.from_env().models_file)


def _run(work: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with httpx.AsyncClient() as http:
            return await work(http)

    return asyncio.run(main())


def _size(value: int) -> str:
    return f"{value / 1e9:.1f} GB" if value >= 1e8 else f"{value / 1e6:.1f} MB"


def cmd_nodes(args: argparse.Namespace) -> None:
    """Every node: up/down, latency, version, resident models; with --url, the server's view (in flight too)."""
    if args.url:
        statuses = _run(lambda http: _server_nodes(http, args.url, args.admin_token))
    else:
        registry = _registry(args)
        statuses = _run(lambda http: nodes.node_statuses(registry, http))
    if args.json:
        print(orjson.dumps({"items": [status.as_json() for status in statuses]}, option=orjson.OPT_INDENT_2).decode())
    else:
        from rich.console import Console

        Console().print(nodes_table(statuses))
    if not all(status.inspection.up for status in statuses):
        raise CheckFailed(1)


async def _server_nodes(http: httpx.AsyncClient, url: str, token: str | None) -> list[nodes.NodeStatus]:
    if not token:
        raise CliError("--url needs --admin-token (an admin's session token)")
    try:
        response = await http.get(url.rstrip("/") + "/api/admin/nodes", headers={"Authorization": f"Bearer {token}"},
                                  timeout=30)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {url}: {exc}") from None
    if response.status_code != 200:
        raise CliError(f"{url} answered HTTP {response.status_code}: {response.text[:200]}")
    return [nodes.NodeStatus.from_json(item) for item in response.json()["items"]]


def nodes_table(statuses: list[nodes.NodeStatus]) -> Table:
    """The `privaterouter nodes` table (also used for `--url` answers of the admin API)."""
    from rich.table import Table

    table = Table(title="GPU nodes")
    for column in ("node", "state", "latency", "ollama", "in flight", "resident models (size, VRAM, expires)"):
        table.add_column(column)
    for status in statuses:
        found = status.inspection
        resident = "\n".join(f"{item.name} ({_size(item.size)}, {_size(item.size_vram)} VRAM, "
                             f"until {item.expires_at or '?'})" for item in found.resident) or "-"
        in_flight = "?" if status.in_flight is None else str(status.in_flight)
        state = "[green]up[/]" if found.up else f"[red]down[/] {found.error}"
        if status.routable is False:
            state += "\n[yellow]not routed (failed health checks)[/]"
        table.add_row(f"{status.name}\n{status.host}", state,
                      f"{found.latency_ms:g} ms" if found.latency_ms is not None else "-", found.version or "-",
                      f"{in_flight}/{status.max_concurrency}", resident)
    return table


def cmd_models_check(args: argparse.Namespace) -> None:
    """Is every registry model's tag on every node that should serve it? Exit 1 naming what is missing."""
    registry = _registry(args)
    presences = _run(lambda http: nodes.check_models(registry, http))
    missing = [item for item in presences if not item.present]
    if args.json:
        print(orjson.dumps({"items": [item.as_json() for item in presences]}, option=orjson.OPT_INDENT_2).decode())
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="Models on nodes")
        for column in ("model", "tag", "node", "digest"):
            table.add_column(column)
        for item in presences:
            digest = item.digest[:12] if item.digest else ("[red]missing[/]" if item.node_up else "[red]node down[/]")
            table.add_row(item.model, item.tag, item.node, digest)
        Console().print(table)
    for item in missing:
        reason = "is not pulled" if item.node_up else "cannot be checked (node down)"
        print(f"missing: {item.model} ({item.tag}) {reason} on node {item.node}", file=sys.stderr)
    if missing:
        raise CheckFailed(1)


def cmd_models_pull(args: argparse.Namespace) -> None:
    """Pull one model (or all) on one node (or every node that serves it), a progress bar per layer."""
    registry = _registry(args)
    try:
        targets = nodes.pull_targets(registry, args.model, args.node)
    except nodes.NodeOpsError as exc:
        raise CliError(str(exc)) from None
    failures = _run(lambda http: _pull_with_bars(http, targets))
    for failure in failures:
        print(f"failed: {failure.tag} on node {failure.node}: {failure.error}", file=sys.stderr)
    if failures:
        raise CheckFailed(1)


async def _pull_with_bars(http: httpx.AsyncClient, targets: list[tuple[Node, str]]) -> list[nodes.PullEvent]:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    failures: list[nodes.PullEvent] = []
    bars: dict[tuple[str, str, str], TaskID] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns) as progress:
        async for event in nodes.pull(http, targets):
            line = event.progress
            if event.error is not None:
                failures.append(event)
                progress.console.print(f"[red]{event.node} {event.tag}: {event.error}[/]")
            elif line is not None and line.digest and line.total is not None:
                key = (event.node, event.tag, line.digest)
                if key not in bars:
                    bars[key] = progress.add_task(f"{event.node} {event.tag} {line.digest[7:19]}", total=line.total)
                progress.update(bars[key], completed=line.completed or 0)
            elif line is not None:
                progress.console.print(f"{event.node} {event.tag}: {line.status}")
    return failures


def cmd_models_warm(args: argparse.Namespace) -> None:
    """Load one model (or all) into memory on its nodes so the first user does not wait for the load."""
    registry = _registry(args)
    text = args.keep_alive.strip()
    keep_alive: str | int = int(text) if text.lstrip("-").isdigit() else text  # Ollama reads a bare number as seconds
    try:
        results = _run(lambda http: nodes.warm(registry, http, args.model, args.node, keep_alive=keep_alive))
    except nodes.NodeOpsError as exc:
        raise CliError(str(exc)) from None
    for result in results:
        print(f"{'loaded' if result.error is None else 'FAILED'}: {result.model} on node {result.node}"
              + (f": {result.error}" if result.error else f" (keep_alive {args.keep_alive})"))
    if any(result.error for result in results):
        raise CheckFailed(1)


# --- usage export ---------------------------------------------------------------------------------


def cmd_usage_export(args: argparse.Namespace) -> None:
    """Stream the usage events of [--from, --to) (optionally one user's) as CSV or JSON Lines."""
    from gateway.db.engine import create_engine, session_factory
    from gateway.fields import FieldError

    try:
        since = usage_export.parse_bound(args.since, param="--from")
        until = usage_export.parse_bound(args.until, param="--to")
    except FieldError as exc:
        raise CliError(exc.message) from None
    if until <= since:
        raise CliError("--to must be later than --from")
    settings = Settings.from_env()
    query = usage_export.ExportQuery(since=since, until=until, email=args.user)

    try:
        output = Path(args.output).open("wb") if args.output else sys.stdout.buffer
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror}") from None

    async def run() -> int:
        engine = create_engine(settings.database_url, pool_size=1)
        count = 0
        try:
            async for chunk in usage_export.lines(session_factory(engine), query, args.format):
                output.write(chunk)
                count += chunk.count(b"\n")
            output.flush()
        finally:
            if args.output:
                output.close()
            await engine.dispose()
        return count - (1 if args.format == "csv" else 0)

    try:
        count = asyncio.run(run())
    except usage_export.UnknownUser as exc:
        raise CliError(str(exc)) from None
    except BrokenPipeError:  # `| head`: the reader has all it wanted; no traceback when stdout is flushed at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    print(f"exported {count} usage events", file=sys.stderr)


def cmd_smoke(args: argparse.Namespace) -> None:
    """`gateway.smoke` (standard library only) against a deployment."""
    status = smoke.run(args)
    if status:
        raise CheckFailed(status)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the operator subcommands to the `privaterouter` parser."""
    config = commands.add_parser("config", help="Registry file tools.", description="Registry file tools.")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_commands.add_parser(
        "check", help="Validate a models.yaml offline (default: MODELS_FILE), exit 1 on error.",
        description="Validate a models.yaml offline with the server's own rules; exit 1 naming the line and key.")
    check.add_argument("file", nargs="?", help="registry file (default: MODELS_FILE)")
    check.set_defaults(handler=cmd_config_check)

    models_file = argparse.ArgumentParser(add_help=False)
    models_file.add_argument("--models-file", help="registry file (default: MODELS_FILE)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    node_list = commands.add_parser("nodes", parents=[models_file, as_json],
                                    help="Show every GPU node: up/down, latency, Ollama version, resident models.",
                                    description="Show every GPU node of the registry; exit 1 if one is down.")
    node_list.add_argument("--url", help="ask a running gateway (GET /api/admin/nodes) instead: adds in-flight")
    node_list.add_argument("--admin-token", help="an admin's session token, for --url")
    node_list.set_defaults(handler=cmd_nodes)
    models = commands.add_parser("models", help="Check, pull and warm the registry's models on the nodes.",
                                 description="Check, pull and warm the registry's models on the nodes.")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    check = model_commands.add_parser("check", parents=[models_file, as_json],
                                      help="Is every model's tag on each node that should serve it? Exit 1 if not.")
    check.set_defaults(handler=cmd_models_check)
    choose = argparse.ArgumentParser(add_help=False)
    choose.add_argument("model", nargs="?", help="public model name (default: every registry model)")
    choose.add_argument("--node", help="only this node (default: every node that serves the model)")
    pull = model_commands.add_parser("pull", parents=[models_file, choose],
                                     help="Pull models onto their nodes with a progress bar per layer (resumable).")
    pull.set_defaults(handler=cmd_models_pull)
    warm = model_commands.add_parser("warm", parents=[models_file, choose],
                                     help="Load models into memory on their nodes (Ollama keep_alive).")
    warm.add_argument("--keep-alive", default=nodes.DEFAULT_KEEP_ALIVE,
                      help="how long the model stays loaded (Ollama duration, e.g. 30m, 2h, -1 = forever)")
    warm.set_defaults(handler=cmd_models_warm)

    usage = commands.add_parser("usage", help="Usage data tools.", description="Usage data tools.")
    usage_commands = usage.add_subparsers(dest="usage_command", required=True, metavar="ACTION")
    export = usage_commands.add_parser(
        "export", help="Export usage events as CSV or JSON Lines, streamed from the database.",
        description="Export the usage events of [--from, --to) (UTC unless an offset is given) to stdout or --output.")
    export.add_argument("--from", dest="since", required=True, help="start, inclusive (e.g. 2026-11-01)")
    export.add_argument("--to", dest="until", required=True, help="end, exclusive (e.g. 2026-12-01)")
    export.add_argument("--user", help="only this user's events (email)")
    export.add_argument("--format", choices=usage_export.FORMATS, default="csv")
    export.add_argument("--output", "-o", help="write to this file instead of standard output")
    export.set_defaults(handler=cmd_usage_export)

    smoke_parser = commands.add_parser(
        "smoke", help="End-to-end check of a running deployment; one PASS/FAIL line per step.",
        description="Sign up a throw-away user and walk health, login, key, chat, stream, embeddings, usage, "
                    "balance and the rate limit against --url; exit 1 if any step fails.")
    smoke.add_arguments(smoke_parser)
    smoke_parser.set_defaults(handler=cmd_smoke)
