"""/dashboard and /models."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from starlette.applications import Starlette

from tests.support.control_plane import Login, record_usage
from tests.support.web import text_of, web_signup

App = tuple[Starlette, httpx.AsyncClient]


async def test_dashboard_shows_balance_month_chart_and_quick_start(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    empty = await client.get("/dashboard")
    assert "No spend in this period yet." in empty.text
    login = Login(user_id=user.user_id, email=user.email, token="")
    await record_usage(app, login, model="privaterouter/fast", cost_pico=250_000_000, created_at=datetime.now(UTC))
    await record_usage(app, login, model="privaterouter/embed", cost_pico=50_000_000, created_at=datetime.now(UTC))
    page = await client.get("/dashboard")
    text = text_of(page)
    assert "Balance $0.9997" in text and "Spent this month $0.0003" in text and "Requests this month 2" in text
    assert page.text.count("<rect ") == 2 and "privaterouter/fast: $0.00025" in page.text
    assert "http://testserver/v1" in text and "sk-pr-YOUR-KEY" in text
    assert 'model="privaterouter/fast"' in page.text  # the example uses a model the plan allows
    assert "ChatOpenAI(" in text and "curl http://testserver/v1/chat/completions" in text


async def test_models_lists_the_catalogue_and_marks_the_plan(web: App) -> None:
    app, client = web
    await web_signup(client, app)
    text = text_of(await client.get("/models"))
    assert "privaterouter/fast chat (gemma) 8,192 $0.10 $0.30 available" in text
    assert "privaterouter/qwen-pro chat (qwen) 32,768 $0.50 $1.50 upgrade" in text
    # The context the node serves (nomic-embed-text: 2,048), not models.yaml's larger claim (since #12).
    assert "privaterouter/embed embedding · 768 dims (embedding) 2,048 $0.05 $0.00 available" in text
