"""Logging set-up: JSON lines (default) or plain text, on stdout, with secrets kept out.

`SecretFilter` sits on the one handler, so it sees every record from every logger:
- a database error (SQLAlchemy or a driver error anywhere in the exception chain) is logged as its
  classes, SQLSTATE and stack frames only — never its message, which drivers fill with bound
  values (asyncpg: "invalid input for query argument $3: 'value'"; SQLAlchemy: "[parameters: ...]");
- any other message or traceback is scrubbed of argon2 hashes, JWTs, API keys and 64-hex digests
  (key HMACs), in case one slips into an exception text.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from typing import TextIO

import orjson

_SECRETS = re.compile(
    r"\$argon2(?:id|i|d)\$[^\s'\",)\]]+"              # argon2 PHC hashes
    r"|eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]+"                # JWTs (header.payload.signature)
    r"|sk-pr-[A-Za-z0-9_-]+"                            # API keys
    r"|(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])"  # HMAC-SHA256 digests (API-key hashes)
)
_DRIVER_MODULES = ("asyncpg", "aiosqlite", "sqlite3", "sqlalchemy")


def scrub(text: str) -> str:
    """`text` with every secret-shaped token replaced by `[redacted]`."""
    return _SECRETS.sub("[redacted]", text)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_database_error(exc: BaseException) -> bool:
    """True when the exception or one it chains comes from SQLAlchemy or a database driver."""
    return any(type(item).__module__.split(".")[0] in _DRIVER_MODULES for item in _chain(exc))


def describe_database_error(exc: BaseException) -> str:
    """The chain's classes, the SQLSTATE and the SQL text (placeholders only): no message, no values."""
    names = " <- ".join(f"{type(item).__module__}.{type(item).__qualname__}" for item in _chain(exc))
    sqlstate = next((code for item in _chain(exc) if isinstance(code := getattr(item, "sqlstate", None), str)), None)
    statement = next((text for item in _chain(exc) if isinstance(text := getattr(item, "statement", None), str)), None)
    parts = [names]
    if sqlstate:
        parts.append(f"SQLSTATE {sqlstate}")
    if statement:
        parts.append("SQL: " + " ".join(statement.split())[:500])
    return "; ".join(parts)


class SecretFilter(logging.Filter):
    """Rewrites each record so that no bound value, hash, key or token reaches the output."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if is_database_error(exc):
                frames = "".join(traceback.format_tb(exc.__traceback__))
                record.exc_text = f"Traceback (most recent call last):\n{frames}{describe_database_error(exc)}"
            else:
                record.exc_text = scrub("".join(traceback.format_exception(exc)).rstrip("\n"))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        record.msg, record.args = scrub(message), None
        return True

ACCESS_LOGGER = "pr.access"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.name == ACCESS_LOGGER:
            return record.getMessage()  # already one JSON object
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return orjson.dumps(entry).decode()


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """One handler on the root logger (stdout unless `stream`), with `SecretFilter` on it."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.addFilter(SecretFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # pr.access replaces it
    # Neither format shows where a line was logged from, nor the thread or process: skip collecting them
    # for every record (the logging HOWTO's "Optimization"; the access line is one record per request).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # httpx logs every upstream call at INFO: as many lines as the access log, and nothing it lacks.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    # At DEBUG these log every statement with its bound values (emails, hashes): never below WARNING.
    for name in ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool"):
        logging.getLogger(name).setLevel(logging.WARNING)
