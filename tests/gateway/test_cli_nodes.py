"""`privaterouter nodes` and `models check|pull|warm` against real emulators."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.cli import main
from gateway.settings import Settings
from providers.ollama.fake.info import VERSION as EMULATED_VERSION
from tests.support.nodes import closed_port_url, emulator_nodes


def test_nodes_json_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with emulator_nodes(tmp_path, 1) as found:
        httpx.post(f"{found.urls[0]}/api/chat", json={"model": "qwen3"}).raise_for_status()
        assert main(["nodes", "--json", "--models-file", str(found.models_file)]) == 0
        items = orjson.loads(capsys.readouterr().out)["items"]
        assert main(["nodes", "--models-file", str(found.models_file)]) == 0
        table = capsys.readouterr().out
    assert [(item["name"], item["up"], item["version"]) for item in items] == [("node0", True, EMULATED_VERSION)]
    assert [model["model"] for model in items[0]["resident_models"]] == ["qwen3:latest"]
    assert "node0" in table and "up" in table and "qwen3:latest" in table and EMULATED_VERSION in table


def test_nodes_exits_1_when_a_node_is_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with emulator_nodes(tmp_path, 1, dead=[closed_port_url()]) as found:
        assert main(["nodes", "--models-file", str(found.models_file)]) == 1
    assert "down" in capsys.readouterr().out


def test_check_pull_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with emulator_nodes(tmp_path, 2) as found:
        httpx.request("DELETE", f"{found.urls[1]}/api/delete", json={"model": "gemma4"}).raise_for_status()
        models = ["--models-file", str(found.models_file)]
        assert main(["models", "check", *models]) == 1
        err = capsys.readouterr().err
        assert err.strip() == "missing: privaterouter/fast (gemma4:latest) is not pulled on node node1"
        assert main(["models", "pull", "privaterouter/fast", "--node", "node1", *models]) == 0
        pulled = capsys.readouterr().out
        assert "node1 gemma4:latest: success" in pulled and "node0" not in pulled
        assert main(["models", "check", *models]) == 0


def test_pull_names_what_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with emulator_nodes(tmp_path, 1) as found:
        found.models_file.write_text(found.models_file.read_text().replace("tag: gemma4:latest", "tag: gemma9:latest"))
        models = ["--models-file", str(found.models_file)]
        assert main(["models", "pull", "privaterouter/fast", *models]) == 1
        err = capsys.readouterr().err
        assert "failed: gemma9:latest on node node0: pull model manifest: file does not exist" in err
        assert main(["models", "pull", "privaterouter/nope", *models]) == 1
        assert "Unknown model 'privaterouter/nope'" in capsys.readouterr().err


def test_warm_loads_into_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with emulator_nodes(tmp_path, 1) as found:
        assert main(["models", "warm", "privaterouter/embed", "--keep-alive", "-1",
                     "--models-file", str(found.models_file)]) == 0
        resident = httpx.get(f"{found.urls[0]}/api/ps").json()["models"]
    assert "loaded: privaterouter/embed on node node0" in capsys.readouterr().out
    assert [item["name"] for item in resident] == ["nomic-embed-text:latest"]


def test_nodes_from_a_running_gateway_shows_in_flight(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      gateway_settings: Callable[..., Settings]) -> None:
    import asyncio

    from gateway.app import create_app
    from tests.support.servers import serve_app

    with emulator_nodes(tmp_path, 1) as found:
        settings = gateway_settings(MODELS_FILE=str(found.models_file))
        token = asyncio.run(_admin_token(settings))
        with serve_app(create_app(settings)) as url:
            assert main(["nodes", "--url", url, "--admin-token", token]) == 0
            table = capsys.readouterr().out
            assert main(["nodes", "--url", url, "--admin-token", "not-a-token"]) == 1
            refused = capsys.readouterr().err
    assert "node0" in table and "0/8" in table  # in flight / max_concurrency, from the server's pool
    assert "answered HTTP 401" in refused


async def _admin_token(settings: Settings) -> str:
    from gateway.auth.sessions import issue_token
    from gateway.db.engine import create_engine, session_factory
    from gateway.db.models import User
    from gateway.tenants import create_tenant

    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            tenant = await create_tenant(session, secret=settings.app_secret_key, plan="free", credits_pico=0)
            user = await session.get(User, tenant.user_id)
            assert user is not None
            user.role = "admin"
            await session.commit()
    finally:
        await engine.dispose()
    return issue_token(tenant.user_id, secret=settings.jwt_secret, ttl_seconds=600)
