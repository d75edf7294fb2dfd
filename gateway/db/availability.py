"""Telling "the database is unavailable" apart from a bug, so the answer is 503 + Retry-After, not 500.

Unavailable means: no connection could be made or the pool had none free in time (connect refused or
timed out, `DB_POOL_TIMEOUT`), the connection broke or was closed by a server restart, the server is
shutting down, starting up or out of connections (SQLSTATE classes 08, 57P, 53), or a statement ran
past `DB_STATEMENT_TIMEOUT` (57014, or the client-side command timeout). SQLite: the file is locked
or unreadable. Anything else (a constraint, a bad statement) is not unavailability.
"""

from __future__ import annotations

import traceback

from gateway.errors import GatewayError

RETRY_AFTER_SECONDS = 5
_UNAVAILABLE_SQLSTATES = ("08", "57P", "53", "57014")
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database", "disk i/o error")
_DB_MODULES = ("asyncpg", "sqlalchemy", "aiosqlite", "sqlite3")


def database_unavailable() -> GatewayError:
    """503 `service_unavailable` with Retry-After."""
    return GatewayError(503, "service_unavailable", "The service is temporarily unavailable; retry shortly.",
                        type="api_error", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _chain(exc: BaseException) -> list[BaseException]:
    items: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in items:
        items.append(current)
        current = current.__cause__ or current.__context__
    return items


def _from_database_code(exc: BaseException) -> bool:
    return any(frame.filename.split("site-packages/")[-1].split("/")[0] in _DB_MODULES
               for frame in traceback.extract_tb(exc.__traceback__))


def is_database_unavailable(exc: BaseException) -> bool:
    """True when `exc` (or an exception it chains) means the database cannot serve right now."""
    for item in _chain(exc):
        module = type(item).__module__.split(".")[0]
        name = type(item).__name__
        if module == "sqlalchemy":
            if name == "TimeoutError" or getattr(item, "connection_invalidated", False):
                return True
            continue
        sqlstate = getattr(item, "sqlstate", None)
        if module == "asyncpg":
            if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
                return True
            if sqlstate is None and name != "DataError":  # InterfaceError family: the connection itself
                return True
            continue
        if module == "sqlite3" and name == "OperationalError":
            if str(item).lower().startswith(_SQLITE_UNAVAILABLE):
                return True
            continue
        if isinstance(item, ConnectionError | TimeoutError | OSError) and _from_database_code(item):
            return True
    return False
