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
PAYMENT_PROVIDER_NAMES = ("mock", "stripe", "btcpay")


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


def _auto_bool(value: str) -> bool | None:
    """`auto` (None: decided per request) or a boolean."""
    return None if value.strip().lower() == "auto" else _bool(value)


def _metrics_token(value: str) -> str:
    if len(value) < 32:
        raise ValueError("must be at least 32 characters long")
    return value


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


def _providers(value: str) -> tuple[str, ...]:
    """Comma-separated payment providers; `none` (or empty) turns every one off."""
    names = [part.strip().lower() for part in value.split(",") if part.strip()]
    if names == ["none"]:
        return ()
    for name in names:
        if name not in PAYMENT_PROVIDER_NAMES:
            raise ValueError(f"unknown provider {name!r}: use any of {', '.join(PAYMENT_PROVIDER_NAMES)}, or none")
    return tuple(dict.fromkeys(names))


def _base_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http(s):// URL")
    return value.rstrip("/")
def _root_path(value: str) -> str:
    text = value.strip().rstrip("/")
    if not text:
        return ""
    if not text.startswith("/") or "//" in text or any(char in text for char in "?#% "):
        raise ValueError("must be a path such as /api/litellm (leading slash, no query)")
    return text  # gateway.middleware.root_path.check_root_path refuses one that shadows a route


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
    Setting("DATABASE_PASSWORD", None, "The database password, any characters, set into DATABASE_URL (so it "
            "needs no URL escaping); overrides a password in the URL.", secret=True),
    Setting("REDIS_URL", None, "Redis for shared rate limits; unset = in-process limiter (one replica only).",
            _redis_url, secret=True),
    Setting("JWT_SECRET", None, "HS256 key for dashboard sessions; generated into DATA_DIR on SQLite, "
            "required with PostgreSQL.", secret=True),
    Setting("APP_SECRET_KEY", None, "HMAC key for API-key hashes at rest; generated into DATA_DIR on SQLite, "
            "required with PostgreSQL. Changing it invalidates every API key.", secret=True),
    Setting("JWT_TTL_SECONDS", "3600", "Lifetime of a dashboard session token.", _positive_int),
    Setting("COOKIE_SECURE", "auto", "Mark the pr_session cookie Secure: auto = when the request came over https "
            "(directly or as X-Forwarded-Proto from TRUSTED_PROXIES); true or false to force it.", _auto_bool),
    Setting("SIGNUPS_PER_ADDRESS", "10", "Sign-ups one client address may make per hour before each further one "
            "waits progressively longer (30 s, doubling, at most 1 h).", _positive_int),
    Setting("MODELS_FILE", "models.yaml", "The registry of nodes, models and plans."),
    Setting("HOST", "127.0.0.1", "Address `privaterouter serve` binds."),
    Setting("PORT", "8000", "Port `privaterouter serve` binds.", _port),
    Setting("WORKERS", "1", "uvicorn worker processes.", _positive_int),
    Setting("METRICS_PORT", None, "Serve /metrics on this separate port only (the public port then refuses it).",
            _port),
    Setting("METRICS_TOKEN", None, "Serve /metrics on the public port to `Authorization: Bearer <this>` "
            "(at least 32 characters); unset with no METRICS_PORT: /metrics is not served at all.",
            _metrics_token, secret=True),
    Setting("HEADER_TIMEOUT", "10", "Seconds a client has to send a request's headers (slow clients are "
            "disconnected).", _positive_float),
    Setting("BODY_TIMEOUT", "30", "Seconds a client has to send a request's body (408 after).", _positive_float),
    Setting("KEEPALIVE_TIMEOUT", "5", "Seconds an idle keep-alive connection stays open.", _positive_int),
    Setting("MAX_CONNECTIONS", "4096", "Connections and requests served at once per worker; beyond it new "
            "requests get 503 at once (uvicorn's limit_concurrency). Lowered at start to what the process's "
            "file descriptors carry (two per stream), with a warning.", _positive_int),
    Setting("MAX_BODY_BYTES", "10485760", "Largest accepted request body, in bytes (413 above).", _positive_int),
    Setting("DB_CONNECT_TIMEOUT", "5", "Seconds to open a PostgreSQL connection (503 after).", _positive_float),
    Setting("DB_STATEMENT_TIMEOUT", "15", "Seconds a PostgreSQL statement may run, enforced by the server and by "
            "the client (a frozen server too); 503 after.", _positive_float),
    Setting("DB_POOL_TIMEOUT", "5", "Seconds to wait for a free pooled database connection (503 after).",
            _positive_float),
    Setting("UPSTREAM_CONNECT_TIMEOUT", "5", "Seconds to connect to an Ollama node.", _positive_float),
    Setting("UPSTREAM_FIRST_BYTE_TIMEOUT", "120", "Seconds to wait for Ollama's first byte (model loads are slow).",
            _positive_float),
    Setting("UPSTREAM_IDLE_TIMEOUT", "60", "Seconds a started stream may stay silent.", _positive_float),
    Setting("UPSTREAM_ACQUIRE_TIMEOUT", "10", "Seconds to wait for a free node slot before 503.", _positive_float),
    Setting("HEALTH_CHECK_INTERVAL", "5", "Seconds between active health checks of each node.", _positive_float),
    Setting("INSTANCE_LEASE_SECONDS", "20", "Lease of each serving process: when it lapses (a crash), another "
            "process settles its open requests as `interrupted` (gateway/billing/leases.py).", _positive_float),
    Setting("ADMIN_ALLOWED_CIDRS", "", "Comma-separated networks allowed to reach /api/admin/* and the /admin "
            "pages; empty = any.", _cidrs),
    Setting("TRUSTED_PROXIES", "", "Comma-separated networks whose X-Forwarded-For is believed.", _cidrs),
    Setting("LOG_LEVEL", "info", "debug, info, warning, error or critical.", _log_level),
    Setting("LOG_FORMAT", "json", "json (one object a line) or text.", _choice("json", "text")),
    # Money in (issue 11): who may sign up and how credit is bought.
    Setting("SIGNUP_MODE", "open", "open (anyone; free plan and its starter credits), invite (only with an "
            "admin's single-use invite) or closed (admins create users).", _choice("open", "invite", "closed")),
    Setting("PAYMENT_PROVIDERS", None, "Comma-separated: mock, stripe, btcpay, or none. Default: mock on SQLite, "
            "none with PostgreSQL (mock gives credit away: demos only).", _providers),
    Setting("PUBLIC_BASE_URL", None, "The gateway's public URL (https://router.example.com): payment pages "
            "send the buyer back here.", _base_url),
    Setting("STRIPE_SECRET_KEY", None, "Stripe secret key (sk_test_... or sk_live_...); required with stripe.",
            secret=True),
    Setting("STRIPE_WEBHOOK_SECRET", None, "Signing secret (whsec_...) of the Stripe webhook endpoint "
            "/api/billing/stripe/webhook; required with stripe.", secret=True),
    Setting("STRIPE_API_BASE", "https://api.stripe.com", "Stripe API address (tests point it at a fake).",
            _base_url),
    Setting("BTCPAY_URL", None, "Your BTCPay Server (https://btcpay.example.com); required with btcpay.", _base_url),
    Setting("BTCPAY_STORE_ID", None, "The BTCPay store that issues invoices; required with btcpay."),
    Setting("BTCPAY_API_KEY", None, "Greenfield API key with btcpay.store.cancreateinvoice and "
            "btcpay.store.canviewinvoices; required with btcpay.", secret=True),
    Setting("SMTP_HOST", None, "SMTP server for password resets, verification, invites and receipts; unset = no "
            "email (those flows say so)."),
    Setting("SMTP_PORT", "587", "SMTP port.", _port),
    Setting("SMTP_SECURITY", "starttls", "starttls, tls (implicit, port 465) or none.",
            _choice("starttls", "tls", "none")),
    Setting("SMTP_USERNAME", None, "SMTP login (unset = no authentication)."),
    Setting("SMTP_PASSWORD", None, "SMTP password.", secret=True),
    Setting("SMTP_FROM", None, "Sender address, e.g. PrivateRouter <noreply@example.com>; required with SMTP_HOST."),
    Setting("REQUIRE_EMAIL_VERIFICATION", "false", "New users verify their email before their first API key; "
            "starter and trial credits are granted only then (needs SMTP_HOST).", _bool),
    Setting("BTCPAY_WEBHOOK_SECRET", None, "Secret of the store webhook to /api/billing/btcpay/webhook "
            "(checks BTCPay-Sig); required with btcpay.", secret=True),
    Setting("READINESS_REQUIRE_MODELS", "false", "Readiness fails (503) while a registry model's tag is missing on "
            "a node that should serve it (`privaterouter models check`).", _bool),
    Setting("ROOT_PATH", "", "Path prefix the gateway is served under behind a reverse proxy (e.g. /api/litellm); "
            "empty = served at /.", _root_path),
    Setting("WS_HEARTBEAT_SECONDS", "15", "Seconds between heartbeat events on a /ws socket.", _positive_float),
    Setting("WS_IDLE_TIMEOUT", "300", "Seconds a /ws socket may stay without a message or a running chat.",
            _positive_float),
    Setting("IP_RPM", None, "Requests per minute per client address on /v1, /api and /ws (429); unset = off.",
            _positive_int),
)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    redis_url: str | None
    jwt_secret: str
    app_secret_key: str
    jwt_ttl_seconds: int
    cookie_secure: bool | None  # None: automatic, per request
    signups_per_address: int
    models_file: Path
    host: str
    port: int
    workers: int
    metrics_port: int | None
    metrics_token: str | None
    header_timeout: float
    body_timeout: float
    keepalive_timeout: int
    max_connections: int
    max_body_bytes: int
    db_connect_timeout: float
    db_statement_timeout: float
    db_pool_timeout: float
    upstream_connect_timeout: float
    upstream_first_byte_timeout: float
    upstream_idle_timeout: float
    upstream_acquire_timeout: float
    health_check_interval: float
    admin_allowed_cidrs: tuple[IPNetwork, ...]
    trusted_proxies: tuple[IPNetwork, ...]
    log_level: str
    log_format: str
    readiness_require_models: bool
    ip_rpm: int | None
    ws_heartbeat_seconds: float
    ws_idle_timeout: float
    root_path: str
    signup_mode: str = "open"
    payment_providers: tuple[str, ...] = ()
    public_base_url: str | None = None
    stripe_secret_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str = "https://api.stripe.com"
    btcpay_url: str | None = None
    btcpay_store_id: str | None = None
    btcpay_api_key: str | None = None
    btcpay_webhook_secret: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from: str | None = None
    require_email_verification: bool = False
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
        if values.pop("database_password", None) is not None:
            values["database_url"] = _with_password(values["database_url"], source["DATABASE_PASSWORD"])
        for name in ("jwt_secret", "app_secret_key"):
            if values[name] is None:
                if not values["database_url"].startswith("sqlite"):
                    raise SettingsError(f"{name.upper()} is required when DATABASE_URL points to PostgreSQL "
                                        "(every replica must share it)")
                values[name] = _persistent_secret(data_dir / name)
            elif len(values[name]) < 32:
                raise SettingsError(f"{name.upper()} must be at least 32 characters long")
        if values["payment_providers"] is None:
            values["payment_providers"] = ("mock",) if values["database_url"].startswith("sqlite") else ()
        _check_providers(values)
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


def _check_providers(values: dict[str, Any]) -> None:
    """An enabled provider must have its secrets: a half-configured till would take money it cannot see."""
    required = {"stripe": ("stripe_secret_key", "stripe_webhook_secret", "public_base_url"),
                "btcpay": ("btcpay_url", "btcpay_store_id", "btcpay_api_key", "btcpay_webhook_secret",
                           "public_base_url")}
    if values["smtp_host"] and not (values["smtp_from"] and values["public_base_url"]):
        raise SettingsError("SMTP_FROM and PUBLIC_BASE_URL are required with SMTP_HOST (mails carry links back here)")
    if values["require_email_verification"] and not values["smtp_host"]:
        raise SettingsError("REQUIRE_EMAIL_VERIFICATION needs SMTP_HOST: without email nobody could verify")
    for provider, names in required.items():
        if provider not in values["payment_providers"]:
            continue
        for name in names:
            if not values[name]:
                raise SettingsError(f"{name.upper()} is required when PAYMENT_PROVIDERS includes {provider}")
def _with_password(url: str, password: str) -> str:
    """`url` with `password` set, escaped as a URL needs (`@`, `/`, `%`, `:` ... are all fine)."""
    from sqlalchemy.engine import make_url

    if url.startswith("sqlite"):
        raise SettingsError("DATABASE_PASSWORD is set but DATABASE_URL is SQLite (it has no password)")
    return make_url(url).set(password=password).render_as_string(hide_password=False)


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
