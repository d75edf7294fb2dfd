"""Settings: one table of (name, default, help, parser), read from the environment and `.env`.

A bad value fails at start with a message that names the variable. Secrets are never printed.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A setting is missing or has a bad value; the message names the variable."""


def _str(value: str) -> str:
    return value


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 0 < number < 65536:
        raise ValueError("must be a TCP port between 1 and 65535")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be a positive number of seconds")
    return number


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def _cidrs(value: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip())


def _database_url(value: str) -> str:
    if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        raise ValueError("must start with postgresql+asyncpg:// or sqlite+aiosqlite://")
    return value


def _redis_url(value: str) -> str:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return lowered

    return parse


def _log_level(value: str) -> str:
    return _choice("debug", "info", "warning", "error", "critical")(value).upper()


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    help: str
    parse: Callable[[str], Any] = _str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("DATA_DIR", "./data", "Directory for the embedded database and generated secrets."),
    Setting("DATABASE_URL", None, "postgresql+asyncpg://... in production; default: SQLite file in DATA_DIR.",
            _database_url, secret=True),
    Setting("REDIS_URL", None, "Redis for shared rate limits; unset = in-process limiter (one replica only).",
            _redis_url, secret=True),
    Setting("JWT_SECRET", None, "HS256 key for dashboard sessions; generated into DATA_DIR on SQLite, "
            "required with PostgreSQL.", secret=True),
    Setting("APP_SECRET_KEY", None, "HMAC key for API-key hashes at rest; generated into DATA_DIR on SQLite, "
            "required with PostgreSQL. Changing it invalidates every API key.", secret=True),
    Setting("JWT_TTL_SECONDS", "3600", "Lifetime of a dashboard session token.", _positive_int),
    Setting("COOKIE_SECURE", "false", "Mark the pr_session cookie Secure (set true behind HTTPS).", _bool),
    Setting("MODELS_FILE", "models.yaml", "The registry of nodes, models and plans."),
    Setting("HOST", "127.0.0.1", "Address `privaterouter serve` binds."),
    Setting("PORT", "8000", "Port `privaterouter serve` binds.", _port),
    Setting("WORKERS", "1", "uvicorn worker processes.", _positive_int),
    Setting("METRICS_PORT", None, "Serve /metrics on this separate port only (the public port then refuses it).",
            _port),
    Setting("MAX_BODY_BYTES", "10485760", "Largest accepted request body, in bytes (413 above).", _positive_int),
    Setting("UPSTREAM_CONNECT_TIMEOUT", "5", "Seconds to connect to an Ollama node.", _positive_float),
    Setting("UPSTREAM_FIRST_BYTE_TIMEOUT", "120", "Seconds to wait for Ollama's first byte (model loads are slow).",
            _positive_float),
    Setting("UPSTREAM_IDLE_TIMEOUT", "60", "Seconds a started stream may stay silent.", _positive_float),
    Setting("UPSTREAM_ACQUIRE_TIMEOUT", "10", "Seconds to wait for a free node slot before 503.", _positive_float),
    Setting("HEALTH_CHECK_INTERVAL", "5", "Seconds between active health checks of each node.", _positive_float),
    Setting("INSTANCE_LEASE_SECONDS", "20", "Lease of each serving process: when it lapses (a crash), another "
            "process settles its open requests as `interrupted` (gateway/billing/leases.py).", _positive_float),
    Setting("ADMIN_ALLOWED_CIDRS", "", "Comma-separated networks allowed to call /api/admin/*; empty = any.",
            _cidrs),
    Setting("TRUSTED_PROXIES", "", "Comma-separated networks whose X-Forwarded-For is believed.", _cidrs),
    Setting("LOG_LEVEL", "info", "debug, info, warning, error or critical.", _log_level),
    Setting("LOG_FORMAT", "json", "json (one object a line) or text.", _choice("json", "text")),
)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    redis_url: str | None
    jwt_secret: str
    app_secret_key: str
    jwt_ttl_seconds: int
    cookie_secure: bool
    models_file: Path
    host: str
    port: int
    workers: int
    metrics_port: int | None
    max_body_bytes: int
    upstream_connect_timeout: float
    upstream_first_byte_timeout: float
    upstream_idle_timeout: float
    upstream_acquire_timeout: float
    health_check_interval: float
    admin_allowed_cidrs: tuple[IPNetwork, ...]
    trusted_proxies: tuple[IPNetwork, ...]
    log_level: str
    log_format: str
    instance_lease_seconds: float = 20.0

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, dotenv: Path | None = Path(".env")) -> Settings:
        """Read every setting; the environment wins over `.env`. Raises SettingsError naming the variable."""
        source: dict[str, str] = {}
        if dotenv is not None and dotenv.is_file():
            source.update(read_dotenv(dotenv))
        source.update(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = source.get(setting.name)
            if raw is None or (raw == "" and setting.default is None):
                raw = setting.default
            if raw is None:
                values[setting.name.lower()] = None
                continue
            try:
                values[setting.name.lower()] = setting.parse(raw)
            except ValueError as exc:
                shown = "<hidden>" if setting.secret else repr(raw)
                raise SettingsError(f"{setting.name}={shown}: {exc}") from None
        data_dir = Path(values["data_dir"])
        values["data_dir"] = data_dir
        values["models_file"] = Path(values["models_file"])
        if values["database_url"] is None:
            values["database_url"] = f"sqlite+aiosqlite:///{data_dir / 'privaterouter.db'}"
        for name in ("jwt_secret", "app_secret_key"):
            if values[name] is None:
                if not values["database_url"].startswith("sqlite"):
                    raise SettingsError(f"{name.upper()} is required when DATABASE_URL points to PostgreSQL "
                                        "(every replica must share it)")
                values[name] = _persistent_secret(data_dir / name)
            elif len(values[name]) < 32:
                raise SettingsError(f"{name.upper()} must be at least 32 characters long")
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; `#` comments and blank lines skipped; one level of quotes stripped."""
    result: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.removeprefix("export ").partition("=")
        if not sep:
            raise SettingsError(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        result[key.strip()] = value
    return result


def _persistent_secret(path: Path) -> str:
    """Generate a secret once and keep it (mode 0600) so sessions and keys survive restarts."""
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker won the race; use its secret
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret


def describe() -> str:
    """The settings table as text, for `privaterouter settings`."""
    width = max(len(s.name) for s in SETTINGS)
    lines = [f"{s.name.ljust(width)}  {s.default if s.default is not None else '(unset)'}\n"
             f"{' ' * width}  {s.help}" for s in SETTINGS]
    return "\n".join(lines)
