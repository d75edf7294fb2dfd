from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.settings import SETTINGS, Settings, SettingsError, describe


def test_defaults_use_embedded_sqlite_and_generate_persistent_secrets(tmp_path: Path) -> None:
    first = Settings.from_env({"DATA_DIR": str(tmp_path)}, dotenv=None)
    assert first.database_url == f"sqlite+aiosqlite:///{tmp_path / 'privaterouter.db'}"
    assert first.redis_url is None
    assert len(first.jwt_secret) >= 32
    mode = stat.S_IMODE((tmp_path / "jwt_secret").stat().st_mode)
    assert mode == 0o600
    second = Settings.from_env({"DATA_DIR": str(tmp_path)}, dotenv=None)
    assert (second.jwt_secret, second.app_secret_key) == (first.jwt_secret, first.app_secret_key)


def test_postgres_without_jwt_secret_fails_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="JWT_SECRET is required"):
        Settings.from_env({"DATA_DIR": str(tmp_path), "DATABASE_URL": "postgresql+asyncpg://u@h/db"}, dotenv=None)


@pytest.mark.parametrize(("name", "value"), [
    ("PORT", "eighty"), ("PORT", "70000"), ("WORKERS", "0"), ("MAX_BODY_BYTES", "-1"),
    ("UPSTREAM_FIRST_BYTE_TIMEOUT", "0"), ("ADMIN_ALLOWED_CIDRS", "10.0.0.0/33"), ("LOG_LEVEL", "loud"),
    ("DATABASE_URL", "mysql://x"), ("REDIS_URL", "http://x"), ("COOKIE_SECURE", "maybe"),
])
def test_bad_value_names_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name}="):
        Settings.from_env({"DATA_DIR": str(tmp_path), name: value}, dotenv=None)


def test_secret_values_are_not_echoed_in_errors(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DATA_DIR": str(tmp_path), "REDIS_URL": "secret-password-here"}, dotenv=None)
    assert "secret-password-here" not in str(caught.value)


def test_short_explicit_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="APP_SECRET_KEY must be at least 32"):
        Settings.from_env({"DATA_DIR": str(tmp_path), "APP_SECRET_KEY": "short"}, dotenv=None)


def test_dotenv_is_read_and_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nPORT=9001\nexport WORKERS='3'\nLOG_LEVEL=debug\n")
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "LOG_LEVEL": "error"}, dotenv=dotenv)
    assert (settings.port, settings.workers, settings.log_level) == (9001, 3, "ERROR")


def test_cidrs_parse() -> None:
    settings = Settings.from_env({"ADMIN_ALLOWED_CIDRS": "10.0.0.0/8, 192.168.1.7", "DATA_DIR": "/tmp/pr-cidr"},
                                 dotenv=None)
    assert [str(n) for n in settings.admin_allowed_cidrs] == ["10.0.0.0/8", "192.168.1.7/32"]


def test_every_setting_is_described() -> None:
    text = describe()
    for setting in SETTINGS:
        assert setting.name in text and setting.help


def test_database_password_with_any_characters_reaches_postgresql(tmp_path: Path) -> None:
    """DATABASE_PASSWORD is set into the URL escaped, so compose needs no hand-built URL (and the
    migrations' configparser escaping holds too)."""
    import asyncio

    import sqlalchemy as sa

    from gateway.db.engine import create_engine
    from gateway.db.migrate import upgrade
    from tests.support.private_services import private_postgres

    password = "p@ss/w:rd%?#&\"' \\x$1{}"
    with private_postgres(password=password) as server:
        settings = Settings.from_env({"DATABASE_URL": server.url, "DATABASE_PASSWORD": password,
                                      "JWT_SECRET": "j" * 40, "APP_SECRET_KEY": "k" * 40,
                                      "DATA_DIR": str(tmp_path)}, dotenv=None)
        upgrade(settings.database_url)

        async def count_users() -> int:
            engine = create_engine(settings.database_url)
            try:
                async with engine.connect() as connection:
                    return int((await connection.execute(sa.text("SELECT count(*) FROM users"))).scalar_one())
            finally:
                await engine.dispose()

        assert asyncio.run(count_users()) == 0
