from __future__ import annotations

import httpx


async def test_models_are_the_seed_table_with_decimal_string_prices(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/models")
    assert response.status_code == 200
    models = {item["name"]: item for item in response.json()["items"]}
    assert list(models) == ["privaterouter/fast", "privaterouter/qwen-fast", "privaterouter/qwen-pro",
                            "privaterouter/deepseek-code", "privaterouter/deepseek-reason", "privaterouter/embed"]
    fast = models["privaterouter/fast"]
    # No Ollama tag (internal); capabilities null here: no node has been asked in this app-only test.
    assert fast == {"name": "privaterouter/fast", "kind": "chat", "family": "gemma", "capabilities": None,
                    "context": 8192, "input_price": "0.100000", "output_price": "0.300000", "dimensions": None,
                    "plans": ["free", "starter", "pro", "developer", "team"]}
    embed = models["privaterouter/embed"]
    assert (embed["kind"], embed["dimensions"], embed["input_price"], embed["output_price"]) == (
        "embedding", 768, "0.050000", "0.000000")
    assert models["privaterouter/qwen-pro"]["plans"] == ["pro", "developer", "team"]
    assert response.json()["price_unit"] == "USD per million tokens"


async def test_plans_are_the_seed_table(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/plans")
    assert response.status_code == 200
    rows = [(p["name"], p["monthly_usd"], p["included_credits_usd"], p["rpm"]) for p in response.json()["items"]]
    assert rows == [("free", "0.00", "1.00", 20), ("starter", "10.00", "12.00", 60), ("pro", "20.00", "25.00", 120),
                    ("developer", "49.00", "65.00", 300), ("team", "199.00", "275.00", 1000)]
    plans = {p["name"]: p for p in response.json()["items"]}
    assert plans["free"]["models"] == ["privaterouter/fast", "privaterouter/embed"]
    assert plans["team"]["models"] == "all"
