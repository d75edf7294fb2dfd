"""The web face in a real headless Chromium against a real uvicorn gateway and the Ollama emulator.

The seed-000 quickstart in a browser (sign up, key, first request with the openai SDK, usage,
top-up), the playground's streamed turn and its exact cost, the operator fixing a balance and
reloading the registry, and key creation with JavaScript off.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import openai
import pytest
import sqlalchemy as sa
from playwright.async_api import Browser, Page, async_playwright, expect
from sqlmodel import col

from gateway.accounts import create_admin
from gateway.db.engine import session_factory
from gateway.db.models import Account, User
from gateway.settings import Settings
from tests.e2e.browser import chromium_path, screenshot_dir
from tests.e2e.conftest import production_env
from tests.support.control_plane import PASSWORD
from tests.support.stack import Stack, run_stack

expect.set_options(timeout=15_000)


@pytest.fixture
async def stack(make_settings: Callable[..., Settings], database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """tests/e2e's stack with mock top-ups on: PAYMENT_PROVIDERS defaults to none with PostgreSQL, and these
    journeys press the billing page's top-up buttons."""
    with run_stack(make_settings, database_url, tmp_path, **production_env(database_url),
                   PAYMENT_PROVIDERS="mock") as running:
        yield running
        await running.engine.dispose()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    path = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path, headless=True,
                                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield launched
        await launched.close()


async def _account(stack: Stack, email: str) -> Account:
    async with session_factory(stack.engine)() as session:
        user = (await session.execute(sa.select(User).where(col(User.email) == email))).scalar_one()
        return (await session.execute(sa.select(Account).where(col(Account.user_id) == user.id))).scalar_one()


def console_errors(page: Page) -> list[str]:
    """Errors the page logs from now on: a CSP violation (an inline script or style) would show here.
    A 400 answer to a form with a deliberately bad field is expected and left out."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" and "status of 400" not in message.text else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


async def _sign_up(page: Page, stack: Stack, email: str) -> None:
    await page.goto(f"{stack.base_url}/signup")
    await page.get_by_label("Name").fill("Ada Lovelace")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign up").click()
    await expect(page).to_have_url(re.compile(r"/dashboard$"))


async def test_quickstart_in_a_browser(stack: Stack, browser: Browser, tmp_path: Path) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors = console_errors(page)
    email = "ada@example.com"
    await _sign_up(page, stack, email)
    await expect(page.locator("#balance")).to_have_text("$1.00")

    await page.get_by_role("link", name="API keys").first.click()
    await expect(page).to_have_url(re.compile(r"/keys$"))
    await page.get_by_label("Name").fill("laptop")
    await page.get_by_label("Monthly limit (USD)").fill("lots")
    await page.get_by_role("button", name="Create key").click()  # htmx swaps the 400 page in: the error shows
    await expect(page.locator("#e-monthly_limit_usd")).to_contain_text("monthly_limit_usd must be a decimal")
    await page.get_by_label("Monthly limit (USD)").fill("")
    await page.get_by_role("button", name="Create key").click()
    secret = (await page.locator("#secret").text_content() or "").strip()
    assert secret.startswith("sk-pr-")
    await expect(page.get_by_text("This is the only time it is shown", exact=False)).to_be_visible()
    await page.screenshot(path=str(tmp_path / "keys-created.png"), full_page=True)
    await page.reload()
    await expect(page.get_by_role("cell", name="laptop", exact=True)).to_be_visible()
    assert secret not in await page.content()

    async with openai.AsyncOpenAI(base_url=stack.v1, api_key=secret, max_retries=0) as client:
        reply = await client.chat.completions.create(model="privaterouter/fast",
                                                     messages=[{"role": "user", "content": "Hello!"}])
    assert reply.choices[0].message.content
    account = await _account(stack, email)
    events = await stack.settled(account.id, 1)
    await page.get_by_role("link", name="Usage").click()
    row = page.locator(f'tr[data-request-id="{events[0].request_id}"]')
    await expect(row).to_contain_text("privaterouter/fast")
    await expect(row).to_contain_text("laptop")
    await page.screenshot(path=str(tmp_path / "usage.png"), full_page=True)

    await page.get_by_role("link", name="Billing").click()
    await page.get_by_role("button", name="Add $10", exact=True).click()
    expected = Decimal(1) - Decimal(events[0].cost_pico) / 10**12 + 10
    await expect(page.locator("#balance")).to_have_text(f"${expected.normalize():f}")
    await expect(page.get_by_text("Added $10.00 to your balance.")).to_be_visible()

    await page.get_by_role("link", name="Dashboard").click()
    await expect(page.locator("figure.chart rect")).to_have_count(1)
    assert errors == []
    shots = screenshot_dir(tmp_path)
    await page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot(path=str(tmp_path / "dashboard-narrow.png"), full_page=True)


async def test_playground_streams_and_the_balance_drops_by_the_turn_cost(stack: Stack, browser: Browser,
                                                                          tmp_path: Path) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors = console_errors(page)
    email = "player@example.com"
    await _sign_up(page, stack, email)
    await page.get_by_role("link", name="Playground").click()
    await expect(page.locator("#pg-balance")).to_have_text("$1.00")
    await page.get_by_label("System prompt").fill("You are terse.")
    await page.get_by_label("Message").fill("What is the capital of Australia?")
    await page.get_by_role("button", name="Send").click()
    meta = page.locator(".msg.assistant .meta[data-cost]")
    await expect(meta).to_have_count(1)
    cost = Decimal(await meta.get_attribute("data-cost") or "x")
    answer = await page.locator(".msg.assistant .answer").text_content()
    assert answer and cost > 0
    await expect(meta).to_contain_text(f"${cost:f}")
    balance = Decimal(1) - cost
    await expect(page.locator("#pg-balance")).to_have_text(f"${balance.normalize():f}")
    account = await _account(stack, email)
    assert Decimal(account.balance_pico) / 10**12 == balance and account.held_pico == 0
    await page.get_by_label("Message").fill("And of Canada?")
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator(".msg.assistant .meta[data-cost]")).to_have_count(2)
    assert errors == []
    shots = screenshot_dir(tmp_path)
    await page.screenshot(path=str(shots / "playground.png"), full_page=True)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot(path=str(tmp_path / "playground-narrow.png"), full_page=True)


async def test_an_admin_fixes_a_balance_and_reloads_the_registry(stack: Stack, browser: Browser,
                                                                 tmp_path: Path) -> None:
    user_page = await browser.new_page()
    await _sign_up(user_page, stack, "customer@example.com")
    await create_admin(session_factory(stack.engine), _registry(stack),
                       email="root@example.com", password=PASSWORD)
    admin = await (await browser.new_context()).new_page()
    await admin.goto(f"{stack.base_url}/admin/users")
    await expect(admin).to_have_url(re.compile(r"/login\?next=/admin/users$"))
    await admin.get_by_label("Email").fill("root@example.com")
    await admin.get_by_label("Password").fill(PASSWORD)
    await admin.get_by_role("button", name="Log in").click()
    await expect(admin).to_have_url(re.compile(r"/admin/users$"))
    await admin.get_by_label("Email contains").fill("customer")
    await admin.get_by_role("button", name="Search").click()
    await admin.get_by_role("link", name="customer@example.com").click()
    await admin.get_by_label("Amount (USD)").fill("+5.00")
    await admin.get_by_label("Reason", exact=True).fill("support ticket 42")
    await admin.get_by_role("button", name="Apply").click()
    await expect(admin.get_by_text("Credits adjusted.")).to_be_visible()
    await expect(admin.locator("#user-balance")).to_have_text("$6.00")
    await expect(admin.get_by_role("cell", name="support ticket 42")).to_be_visible()
    await admin.screenshot(path=str(tmp_path / "admin-user.png"), full_page=True)
    assert (await _account(stack, "customer@example.com")).balance_pico == 6 * 10**12

    stack.models_file.write_text(stack.models_file.read_text().replace('output_price: "0.300000"',
                                                                       'output_price: "0.350000"', 1))
    await admin.get_by_role("link", name="Registry").click()
    await admin.get_by_role("button", name="Reload models.yaml").click()
    await expect(admin.locator("#reload-result")).to_contain_text("models ~privaterouter/fast")
    stack.models_file.write_text(stack.models_file.read_text().replace("context: 8192", "context: big", 1))
    await admin.get_by_role("button", name="Reload models.yaml").click()
    await expect(admin.locator("#reload-result")).to_contain_text(f"{stack.models_file}:")
    await user_page.goto(f"{stack.base_url}/admin")
    await expect(user_page.get_by_role("heading", name="Page not found")).to_be_visible()


def _registry(stack: Stack):  # type: ignore[no-untyped-def]
    from gateway.registry import load

    return load(stack.models_file)


async def test_without_javascript_a_key_is_still_created(stack: Stack, browser: Browser) -> None:
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await _sign_up(page, stack, "nojs@example.com")
    await page.goto(f"{stack.base_url}/keys")
    await page.get_by_label("Name").fill("server")
    await page.get_by_label("Monthly limit (USD)").fill("2.50")
    await page.get_by_role("button", name="Create key").click()
    secret = (await page.locator("#secret").text_content() or "").strip()
    assert secret.startswith("sk-pr-")
    await page.goto(f"{stack.base_url}/keys")
    await expect(page.get_by_role("cell", name="server", exact=True)).to_be_visible()
    await expect(page.get_by_role("cell", name="$0.00 / $2.50")).to_be_visible()
    assert secret not in await page.content()
    await page.goto(f"{stack.base_url}/billing")
    await page.get_by_role("button", name="Add $25", exact=True).click()
    await expect(page.locator("#balance")).to_have_text("$26.00")
    await context.close()


async def test_reasoning_is_folded_and_login_works_from_the_keyboard(stack: Stack, browser: Browser) -> None:
    page = await browser.new_page()
    await _sign_up(page, stack, "thinker@example.com")
    async with session_factory(stack.engine)() as session:
        account = await session.get(Account, (await _account(stack, "thinker@example.com")).id)
        assert account is not None
        account.plan_name = "developer"  # a plan with a reasoning model
        await session.commit()
    await page.context.clear_cookies()
    await page.goto(f"{stack.base_url}/login?next=/playground")
    for _ in range(30):  # Tab from the top of the page until the Email field has the focus
        if await page.evaluate("document.activeElement && document.activeElement.id === 'f-email'"):
            break
        await page.keyboard.press("Tab")
    else:
        raise AssertionError("the Email field is not reachable with Tab")
    await page.keyboard.type("thinker@example.com")
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(r"/playground$"))
    await page.get_by_label("Model").select_option("privaterouter/deepseek-reason")
    await page.get_by_label("Message").fill("Why is the sky blue?")
    await page.keyboard.press("Control+Enter")
    await expect(page.locator(".msg.assistant .meta[data-cost]")).to_have_count(1)
    reasoning = page.locator(".msg.assistant details")
    await expect(reasoning).to_be_visible()
    assert await reasoning.get_attribute("open") is None  # folded until the user opens it
    await reasoning.locator("summary").click()
    assert (await reasoning.text_content() or "").strip() != "Reasoning"
    assert (await page.locator(".msg.assistant .answer").text_content() or "").strip()
