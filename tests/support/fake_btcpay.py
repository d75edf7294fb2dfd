"""A small fake BTCPay Server (Greenfield API) on loopback, and `BTCPay-Sig` signing for webhooks."""

from __future__ import annotations

import hashlib
import hmac
import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

STORE_ID = "Store9Xy"
API_KEY = "btcpay-api-key-0123456789"
WEBHOOK_SECRET = "btcpay-webhook-secret-0123456789"


@dataclass
class FakeBTCPay:
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_with: int | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> Starlette:
        base = "/api/v1/stores/{store}/invoices"
        return Starlette(routes=[Route(base, self._create, methods=["POST"]),
                                 Route(base + "/{invoice}", self._get, methods=["GET"])])

    def _refuse(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"token {API_KEY}" or request.path_params["store"] != STORE_ID:
            return JSONResponse({"code": "unauthenticated", "message": "Authentication is required"}, 401)
        if self.fail_with is not None:
            return JSONResponse({"code": "boom", "message": "boom"}, self.fail_with)
        return None

    async def _create(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        body = orjson.loads(await request.body())
        self.requests.append(body)
        invoice_id = f"Inv{next(self._ids):04d}"
        self.invoices[invoice_id] = {
            "id": invoice_id, "storeId": STORE_ID, "amount": body["amount"], "currency": body["currency"],
            "status": "New", "metadata": body.get("metadata", {}),
            "checkoutLink": f"https://btcpay.example.com/i/{invoice_id}"}
        return JSONResponse(self.invoices[invoice_id])

    async def _get(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        invoice = self.invoices.get(request.path_params["invoice"])
        if invoice is None:
            return JSONResponse({"code": "invoice-not-found", "message": "not found"}, 404)
        return JSONResponse(invoice)


def settled_event(invoice_id: str, delivery: str, *, original: str | None = None,
                  store: str = STORE_ID, type: str = "InvoiceSettled") -> dict[str, Any]:
    return {"deliveryId": delivery, "webhookId": "Wh1", "originalDeliveryId": original or delivery,
            "isRedelivery": original is not None, "type": type, "timestamp": 1_700_000_000, "storeId": store,
            "invoiceId": invoice_id, "metadata": {}, "manuallyMarked": False, "overPaid": False}


def sign(payload: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
