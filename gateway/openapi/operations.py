"""Every route's OpenAPI operation: one entry per (method, path), next to nothing else.

Adding a route means adding one entry here (a test fails until the document and the routing table
agree). `op()` fills in what all operations share: the security scheme and the error envelope as the
`default` response (every route answers errors in it, with the codes listed in the README).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from gateway.openapi.schemas import Schema, ref

Auth = Literal["none", "session", "admin", "api_key"]
_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    "none": [],
    "session": [{"session": []}, {"session_cookie": []}],
    "admin": [{"session": []}, {"session_cookie": []}],
    "api_key": [{"api_key": []}],
}


def query(name: str, schema: Schema, description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


PAGE = [query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
        query("offset", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1})]
PERIOD = [query("since", {"type": "string", "format": "date-time"}),
          query("until", {"type": "string", "format": "date-time"})]


def op(summary: str, tag: str, *, auth: Auth, response: str | None, request: str | None = None,
       params: Sequence[dict[str, Any]] = (), status: int = 200, streams: bool = False) -> dict[str, Any]:
    """One operation: `response`/`request` name component schemas; `streams` adds text/event-stream."""
    content: dict[str, Any] = {"application/json": {"schema": ref(response)}} if response else {}
    if streams:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    operation: dict[str, Any] = {
        "summary": summary, "tags": [tag], "security": _SECURITY[auth],
        "responses": {str(status): {"description": summary, "content": content},
                      "default": {"description": "An error in OpenAI's envelope.",
                                  "content": {"application/json": {"schema": ref("Error")}}}},
    }
    if params:
        operation["parameters"] = list(params)
    if request:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(request)}}}
    return operation


OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/health"): op("Liveness", "operations", auth="none", response="Health"),
    ("GET", "/health/readiness"): op("Readiness: database and registry (Redis only reported)", "operations",
                                     auth="none", response="Readiness"),
    ("POST", "/api/auth/signup"): op("Sign up (free plan, starter credits) and get a session", "auth", auth="none",
                                     request="Signup", response="Session", status=201),
    ("POST", "/api/auth/login"): op("Exchange email and password for a session", "auth", auth="none",
                                    request="Login", response="Session"),
    ("POST", "/api/auth/logout"): op("End every session of the caller", "auth", auth="none", response="LoggedOut"),
    ("GET", "/api/auth/me"): op("The signed-in user", "auth", auth="session", response="Me"),
    ("POST", "/api/auth/password"): op("Change the password; other sessions end", "auth", auth="session",
                                       request="PasswordChange", response="Session"),
    ("GET", "/api/billing/balance"): op("Balance, held and available credits", "billing", auth="session",
                                        response="Balance"),
    ("POST", "/api/billing/topup"): op("Mock top-up of 10, 25, 50, 100 or 500 USD", "billing", auth="session",
                                       request="Topup", response="Balance"),
    ("GET", "/api/billing/transactions"): op("The ledger, newest first", "billing", auth="session",
                                             response="TransactionPage", params=PAGE),
    ("POST", "/api/keys"): op("Create an API key (the raw key is returned once)", "keys", auth="session",
                              request="ApiKeyFields", response="ApiKeyCreated", status=201),
    ("GET", "/api/keys"): op("The caller's API keys", "keys", auth="session", response="ApiKeyList"),
    ("PATCH", "/api/keys/{key_id}"): op("Change a key", "keys", auth="session", request="ApiKeyFields",
                                        response="ApiKey", params=[path("key_id")]),
    ("DELETE", "/api/keys/{key_id}"): op("Delete a key", "keys", auth="session", response="ApiKey",
                                         params=[path("key_id")]),
    ("GET", "/api/usage"): op("Usage events, newest first", "usage", auth="session", response="UsagePage",
                              params=[*PAGE, *PERIOD, query("model", {"type": "string"}),
                                      query("status", {"enum": ["success", "error", "cancelled"]}),
                                      query("key_id", {"type": "string"})]),
    ("GET", "/api/usage/summary"): op("Totals by model or day", "usage", auth="session", response="UsageSummary",
                                      params=[*PERIOD, query("group_by", {"enum": ["model", "day"]})]),
    ("GET", "/api/plans"): op("Plans with prices and limits", "catalogue", auth="none", response="PlanList"),
    ("GET", "/api/models"): op("Models with prices", "catalogue", auth="none", response="CatalogModelList"),
    ("GET", "/api/admin/users"): op("Users with balance and 30-day usage", "admin", auth="admin",
                                    response="MemberPage", params=[*PAGE, query("email", {"type": "string"})]),
    ("GET", "/api/admin/users/{user_id}"): op("One user", "admin", auth="admin", response="Member",
                                              params=[path("user_id")]),
    ("POST", "/api/admin/users/{user_id}/credits"): op("Credit or debit an account", "admin", auth="admin",
                                                       request="CreditAdjustment", response="Member",
                                                       params=[path("user_id")]),
    ("POST", "/api/admin/users/{user_id}/plan"): op("Change a user's plan", "admin", auth="admin",
                                                    request="PlanChange", response="Member",
                                                    params=[path("user_id")]),
    ("POST", "/api/admin/users/{user_id}/disable"): op("Disable a user", "admin", auth="admin", response="Member",
                                                       params=[path("user_id")]),
    ("POST", "/api/admin/users/{user_id}/enable"): op("Enable a user", "admin", auth="admin", response="Member",
                                                      params=[path("user_id")]),
    ("GET", "/api/admin/stats"): op("Totals over a period", "admin", auth="admin", response="Stats", params=PERIOD),
    ("GET", "/api/admin/nodes"): op("The node pool's view of each GPU node", "admin", auth="admin",
                                    response="NodeList"),
    ("POST", "/api/admin/reload"): op("Reload models.yaml", "admin", auth="admin", response="Reloaded"),
    ("POST", "/v1/chat/completions"): op("Chat completion (streaming with `stream: true`)", "v1", auth="api_key",
                                         request="ChatCompletionRequest", response="ChatCompletion", streams=True),
    ("POST", "/v1/completions"): op("Legacy text completion", "v1", auth="api_key", request="CompletionRequest",
                                    response="Completion", streams=True),
    ("POST", "/v1/embeddings"): op("Embeddings", "v1", auth="api_key", request="EmbeddingRequest",
                                   response="EmbeddingList"),
    ("POST", "/v1/responses"): op("Responses API (text profile)", "v1", auth="api_key", request="ResponseRequest",
                                  response="Response", streams=True),
    ("GET", "/v1/models"): op("Models this key may call", "v1", auth="api_key", response="ModelList"),
    ("GET", "/v1/models/{model_id}"): op("One model", "v1", auth="api_key", response="Model",
                                         params=[path("model_id")]),
}
