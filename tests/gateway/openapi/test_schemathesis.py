"""schemathesis against the live gateway (real uvicorn, the Ollama emulator, each backend): for every
documented operation, generated valid and invalid requests must never get a server error and every
answer must match the document (status, content type, body schema)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.auth.sessions import issue_token
from gateway.openapi.document import document
from gateway.settings import Settings
from tests.support import fake_btcpay, fake_stripe
from tests.support.servers import serve_app
from tests.support.smtp import smtp_server
from tests.support.stack import registry_text, run_stack

EXAMPLES_PER_OPERATION = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass(frozen=True)
class Live:
    base_url: str
    api_key: str
    user_token: str
    admin_token: str

    def headers_for(self, path: str) -> dict[str, str]:
        """The credential an operation needs; none for /api/auth/* (logout would end the shared session)."""
        if path == "/api/auth/verify-email/resend":
            return {"Authorization": f"Bearer {self.user_token}"}
        if path.startswith("/v1/"):
            return {"Authorization": f"Bearer {self.api_key}"}
        if path.startswith("/api/admin/"):
            return {"Authorization": f"Bearer {self.admin_token}"}
        if path.startswith("/api/auth/") and path != "/api/auth/me":
            return {}
        return {"Authorization": f"Bearer {self.user_token}"}


def _payments_and_mail(stripe_url: str, btcpay_url: str, smtp_port: int) -> dict[str, str]:
    """Every payment provider (against the loopback fakes) and email on, so that each operation can answer
    its success as well as its errors (not only `payments_disabled` or `email_disabled`)."""
    return {"PAYMENT_PROVIDERS": "mock,stripe,btcpay", "PUBLIC_BASE_URL": "https://router.example.com",
            "STRIPE_SECRET_KEY": fake_stripe.SECRET_KEY, "STRIPE_WEBHOOK_SECRET": fake_stripe.WEBHOOK_SECRET,
            "STRIPE_API_BASE": stripe_url, "BTCPAY_URL": btcpay_url, "BTCPAY_STORE_ID": fake_btcpay.STORE_ID,
            "BTCPAY_API_KEY": fake_btcpay.API_KEY, "BTCPAY_WEBHOOK_SECRET": fake_btcpay.WEBHOOK_SECRET,
            "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port), "SMTP_SECURITY": "none",
            "SMTP_FROM": "PrivateRouter <noreply@router.example.com>"}


@pytest.fixture
def live(make_settings: Callable[..., Settings], database_url: str, tmp_path: Path) -> Iterator[Live]:
    with (serve_app(fake_stripe.FakeStripe().app()) as stripe_url,
          serve_app(fake_btcpay.FakeBTCPay().app()) as btcpay_url, smtp_server() as inbox,
          run_stack(make_settings, database_url, tmp_path, SIGNUPS_PER_ADDRESS="1000000",
                    **_payments_and_mail(stripe_url, btcpay_url, inbox.port)) as stack):
        async def prepare() -> Live:
            try:
                tenant = await stack.tenant(credits_usd="100", plan="team")
                admin = await stack.admin_token()
            finally:
                await stack.engine.dispose()
            user = issue_token(tenant.user_id, secret=stack.settings.jwt_secret, ttl_seconds=3600)
            return Live(stack.base_url, tenant.api_key, user, admin)

        found = asyncio.run(prepare())
        # The emulator's never-answering model would hold every "warm all models" call for its 300 s load
        # timeout; the other operations never name it (schemathesis does not know the model names).
        stack.models_file.write_text(registry_text(stack.ollama_urls, without=("privaterouter/test-hang",)))
        reload = requests.post(f"{found.base_url}/api/admin/reload", timeout=30,
                               headers={"Authorization": f"Bearer {found.admin_token}"})
        assert reload.status_code == 200, reload.text
        yield found


def _runner(operation: Any, mode: GenerationMode, live: Live, session: requests.Session,
            statuses: list[int]) -> Callable[[], None]:
    """A hypothesis test sending generated requests for one operation and checking every answer."""
    headers = live.headers_for(operation.path)

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=live.base_url, session=session, headers=headers, timeout=30)
        statuses.append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    return run  # type: ignore[no-any-return]


def test_no_server_error_and_no_answer_that_breaks_the_document(live: Live) -> None:
    schema = schemathesis.openapi.from_dict(document())
    failures: list[str] = []
    statuses: list[int] = []
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _runner(operation, mode, live, session, statuses)()
            except Unsatisfiable:  # an operation with no inputs has no invalid request to generate
                assert mode is GenerationMode.NEGATIVE
            except Exception as exc:  # collect every operation's failure, then report them together
                failures.append(f"{operation.method.upper()} {operation.path} ({mode}): {exc}"[:2000])
    assert not failures, "\n\n".join(failures)
    # The run reached the handlers, not only the validation in front of them.
    assert len(statuses) > 300 and sum(200 <= status < 300 for status in statuses) > 50, sorted(set(statuses))
