"""The OpenAPI document is valid 3.1, agrees with the routing table, and is served with its viewer."""

from __future__ import annotations

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from gateway.app import ROUTES
from gateway.openapi.document import document
from gateway.openapi.operations import OPERATIONS
from gateway.routes.docs import VIEWER

DOCUMENTED_PREFIXES = ("/v1/", "/api/", "/health")
# No credential: the catalogue, signing in, links from mails, payment providers' webhooks, the probes.
PUBLIC = {"/api/plans", "/api/models", "/api/billing/options", "/api/auth/signup", "/api/auth/login",
          "/api/auth/logout", "/api/auth/password-reset", "/api/auth/password-reset/confirm",
          "/api/auth/verify-email", "/api/billing/stripe/webhook", "/api/billing/btcpay/webhook", "/health",
          "/health/readiness"}


def _routing_table() -> set[tuple[str, str]]:
    table = set()
    for route in ROUTES:
        if isinstance(route, Route) and route.path.startswith(DOCUMENTED_PREFIXES):
            path = route.path.replace("{model_id:path}", "{model_id}")
            table |= {(method, path) for method in route.methods or () if method != "HEAD"}
    return table


def test_the_document_is_valid_openapi_3_1() -> None:
    spec = document()
    assert spec["openapi"] == "3.1.0"
    validate(spec)


def test_the_document_and_the_routing_table_agree() -> None:
    table = _routing_table()
    documented = set(OPERATIONS)
    assert table - documented == set(), "routes without an OpenAPI operation"
    assert documented - table == set(), "operations without a route"


def test_every_operation_documents_its_errors_and_security() -> None:
    for (method, path), operation in OPERATIONS.items():
        assert operation["responses"]["default"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}, (method, path)
        if path.startswith("/v1/"):
            assert operation["security"] == [{"api_key": []}], path
        elif path in PUBLIC:
            assert operation["security"] == [], path
        else:
            assert {"session": []} in operation["security"], path


async def test_openapi_json_and_docs_are_served(client: httpx.AsyncClient) -> None:
    spec = await client.get("/openapi.json")
    assert spec.status_code == 200 and spec.json() == document()
    page = await client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f'src="/docs/{VIEWER}"' in page.text and "http" not in page.text.split("<body>")[1]  # no CDN
    script = await client.get(f"/docs/{VIEWER}")
    assert script.status_code == 200 and script.headers["content-type"].startswith("application/javascript")
    assert len(script.content) > 500_000


@pytest.mark.parametrize(("path", "signature"), [("/api/billing/stripe/webhook", "Stripe-Signature"),
                                                 ("/api/billing/btcpay/webhook", "BTCPay-Sig")])
def test_webhooks_are_documented_as_signed_provider_calls(path: str, signature: str) -> None:
    operation = OPERATIONS[("POST", path)]
    assert operation["security"] == []
    assert [(param["in"], param["name"]) for param in operation["parameters"]] == [("header", signature)]
    assert "invalid_signature" in operation["description"]
