"""A small fake of Stripe's API on loopback (real HTTP) for what the gateway calls, plus webhook signing.

It answers `POST /v1/checkout/sessions` the way Stripe does (form-encoded parameters with bracketed
keys, a `checkout.session` object back), checks the secret key, keeps every request for the test
to inspect, and can be told to fail. `signed()` builds a delivery with Stripe's documented
`Stripe-Signature` scheme: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<payload>")>` (the same
computation as `stripe.WebhookSignature` in the SDK).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SECRET_KEY = "sk_test_fake_0123456789"
WEBHOOK_SECRET = "whsec_test_fake_0123456789"


@dataclass
class FakeStripe:
    requests: list[dict[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_with: int | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/checkout/sessions", self._create_session, methods=["POST"])])

    async def _create_session(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {SECRET_KEY}":
            return JSONResponse({"error": {"type": "invalid_request_error", "message": "Invalid API Key"}}, 401)
        if self.fail_with is not None:
            return JSONResponse({"error": {"type": "api_error", "message": "boom"}}, self.fail_with)
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        self.requests.append(form)
        self.headers.append(dict(request.headers))
        session_id = f"cs_test_{next(self._ids):04d}"
        obj = {
            "id": session_id, "object": "checkout.session", "mode": form["mode"],
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
            "client_reference_id": form.get("client_reference_id"),
            "amount_total": int(form.get("line_items[0][price_data][unit_amount]", "0")),
            "currency": form.get("line_items[0][price_data][currency]"),
            "metadata": {key[9:-1]: value for key, value in form.items() if key.startswith("metadata[")},
            "payment_status": "unpaid", "status": "open", "payment_intent": None, "subscription": None,
        }
        if form["mode"] == "subscription":
            obj["price"] = form.get("line_items[0][price]")
            prefix = "subscription_data[metadata]["
            obj["subscription_metadata"] = {key[len(prefix):-1]: value for key, value in form.items()
                                            if key.startswith(prefix)}
        self.sessions[session_id] = obj
        return JSONResponse(obj)

    def completed(self, session_id: str, *, event_id: str, payment_intent: str = "pi_1",
                  amount_total: int | None = None, currency: str | None = None, payment_status: str = "paid",
                  type: str = "checkout.session.completed") -> dict[str, Any]:
        """The event Stripe sends when the buyer has paid (amount and currency as asked unless overridden)."""
        obj = {**self.sessions[session_id], "status": "complete", "payment_status": payment_status,
               "payment_intent": payment_intent}
        if amount_total is not None:
            obj["amount_total"] = amount_total
        if currency is not None:
            obj["currency"] = currency
        return event(event_id, type, obj)


def event(event_id: str, type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": type, "api_version": "2024-06-20", "created": int(time.time()),
            "livemode": False, "data": {"object": obj}}


def signature(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    stamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def signed(body: dict[str, Any], secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> tuple[bytes, str]:
    payload = orjson.dumps(body)
    return payload, signature(payload, secret, timestamp)


def invoice_paid(event_id: str, *, invoice_id: str, subscription: str, metadata: dict[str, str],
                 amount_paid: int = 2000, currency: str = "usd") -> dict[str, Any]:
    """`invoice.paid` in the current API shape (subscription under parent.subscription_details)."""
    return event(event_id, "invoice.paid", {
        "id": invoice_id, "object": "invoice", "status": "paid", "amount_paid": amount_paid, "currency": currency,
        "billing_reason": "subscription_cycle",
        "parent": {"type": "subscription_details",
                   "subscription_details": {"subscription": subscription, "metadata": metadata}}})


def subscription_event(event_id: str, type: str, subscription: str, status: str) -> dict[str, Any]:
    return event(event_id, type, {"id": subscription, "object": "subscription", "status": status})
