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


def header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"},
            "description": description}


def op(summary: str, tag: str, *, auth: Auth, response: str | None, request: str | None = None,
       params: Sequence[dict[str, Any]] = (), status: int = 200, streams: bool | str = False,
       files: Sequence[str] = (), also: dict[int, str] | None = None, optional_body: bool = False,
       description: str = "") -> dict[str, Any]:
    """One operation: `response`/`request` name component schemas; `streams` adds text/event-stream (each
    event a `ServerSentEvent`, or the component `streams` names);
    `files` adds text media types the success answer may take instead (e.g. text/csv); `also` maps
    further success statuses to their schemas; `optional_body` marks a request body that may be empty."""
    content: dict[str, Any] = {"application/json": {"schema": ref(response)}} if response else {}
    if streams:
        content["text/event-stream"] = {"schema": ref(streams if isinstance(streams, str) else "ServerSentEvent")}
    for media_type in files:
        content[media_type] = {"schema": {"type": "string"}}
    responses: dict[str, Any] = {str(status): {"description": summary, "content": content}}
    for other, schema in (also or {}).items():
        responses[str(other)] = {"description": summary, "content": {"application/json": {"schema": ref(schema)}}}
    responses["default"] = {"description": "An error in OpenAI's envelope.",
                            "content": {"application/json": {"schema": ref("Error")}}}
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "security": _SECURITY[auth],
                                 "responses": responses}
    if description:
        operation["description"] = description
    if params:
        operation["parameters"] = list(params)
    if request:
        operation["requestBody"] = {"required": not optional_body,
                                    "content": {"application/json": {"schema": ref(request)}}}
    return operation


WEBHOOK = ("Called by the payment provider, not by users: the body is checked against the signature header "
           "before anything is read (400 `invalid_signature` otherwise; nothing applied) and each event is "
           "applied once. 403 `payments_disabled` unless PAYMENT_PROVIDERS enables the provider.")


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
    ("POST", "/api/auth/password-reset"): op("Mail a one-hour reset link (the same 202 whether or not the address "
                                             "has an account)", "auth", auth="none", request="PasswordReset",
                                             response="PasswordResetAccepted", status=202),
    ("POST", "/api/auth/password-reset/confirm"): op("Set a new password with a reset link's token; every session "
                                                     "ends", "auth", auth="none", request="PasswordResetConfirm",
                                                     response="PasswordChanged"),
    ("POST", "/api/auth/verify-email"): op("Verify the email address with the mailed token", "auth", auth="none",
                                           request="EmailToken", response="User"),
    ("POST", "/api/auth/verify-email/resend"): op("Mail a new verification link (202), or say the address is "
                                                  "verified (200)", "auth", auth="session",
                                                  response="VerificationStatus", status=202,
                                                  also={200: "VerificationStatus"}),
    ("POST", "/api/auth/password"): op("Change the password; other sessions end", "auth", auth="session",
                                       request="PasswordChange", response="Session"),
    ("GET", "/api/billing/balance"): op("Balance, held and available credits", "billing", auth="session",
                                        response="Balance"),
    ("POST", "/api/billing/topup"): op("Mock top-up of an allowed amount or pack (PAYMENT_PROVIDERS has mock)",
                                       "billing", auth="session", request="Offer", response="Balance"),
    ("GET", "/api/billing/options"): op("Enabled payment providers, top-up amounts, packs and trial", "billing",
                                        auth="none", response="PaymentOptions"),
    ("POST", "/api/billing/checkout"): op("Start a Stripe Checkout for an amount or pack", "billing", auth="session",
                                          request="Offer", response="Checkout"),
    ("POST", "/api/billing/subscribe"): op("Buy a paid plan through a Stripe subscription", "billing",
                                           auth="session", request="Subscribe", response="SubscriptionCheckout"),
    ("POST", "/api/billing/redeem"): op("Redeem a code (429 after repeated failures)", "billing", auth="session",
                                        request="Redeem", response="Balance"),
    ("POST", "/api/billing/btcpay/invoice"): op("Pay an amount or pack with BTCPay", "billing", auth="session",
                                                request="Offer", response="Invoice"),
    ("POST", "/api/billing/stripe/webhook"): op("Stripe's event deliveries", "billing", auth="none",
                                                request="ProviderEvent", response="WebhookReceipt",
                                                params=[header("Stripe-Signature", "t=<unix>,v1=<hex HMAC-SHA256>")],
                                                description=WEBHOOK),
    ("POST", "/api/billing/btcpay/webhook"): op("BTCPay's event deliveries", "billing", auth="none",
                                                request="ProviderEvent", response="WebhookReceipt",
                                                params=[header("BTCPay-Sig", "sha256=<hex HMAC-SHA256>")],
                                                description=WEBHOOK),
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
    ("POST", "/api/admin/users"): op("Create a user (whatever SIGNUP_MODE says; email counts as verified)", "admin",
                                     auth="admin", request="UserCreate", response="Member", status=201),
    ("DELETE", "/api/admin/users/{user_id}"): op("Soft-delete a user: keys revoked, email freed, ledger kept",
                                                 "admin", auth="admin", response="Member", params=[path("user_id")]),
    ("POST", "/api/admin/users/{user_id}/trial"): op("Grant trial credit for some days", "admin", auth="admin",
                                                     request="TrialGrant", response="Member",
                                                     params=[path("user_id")]),
    ("GET", "/api/admin/invites"): op("Sign-up invites, newest first (never their tokens)", "admin", auth="admin",
                                      response="InvitePage", params=PAGE),
    ("POST", "/api/admin/invites"): op("Create a single-use sign-up invite (its token is shown only now)", "admin",
                                       auth="admin", request="InviteRequest", response="InviteCreated", status=201),
    ("GET", "/api/admin/redemption-codes"): op("Redemption codes (never their text) and their state", "admin",
                                               auth="admin", response="RedemptionCodePage",
                                               params=[*PAGE, query("batch_id", {"type": "string"})]),
    ("POST", "/api/admin/redemption-codes"): op("Create a batch of single-use codes (shown only now; CSV with "
                                                "`format: csv`)", "admin", auth="admin",
                                                request="RedemptionBatchRequest", response="RedemptionBatch",
                                                status=201, files=["text/csv"]),
    ("GET", "/api/admin/webhook-events"): op("Payment webhook deliveries as applied, newest first", "admin",
                                             auth="admin", response="WebhookEventPage",
                                             params=[*PAGE, query("provider", {"enum": ["stripe", "btcpay"]})]),
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
    ("GET", "/api/admin/models/check"): op("Is every model pulled on each node that serves it", "admin",
                                           auth="admin", response="ModelsCheck"),
    ("POST", "/api/admin/models/pull"): op("Pull models on their nodes: SSE events progress, error, done", "admin",
                                           auth="admin", request="ModelChoice", response=None, streams="PullEvent",
                                           optional_body=True),
    ("POST", "/api/admin/models/warm"): op("Load models into memory on their nodes", "admin", auth="admin",
                                           request="ModelWarm", response="Warmed", optional_body=True),
    ("GET", "/api/admin/usage/export"): op("Usage events as a streamed CSV or JSON Lines file", "admin", auth="admin",
                                           response=None, files=["text/csv", "application/x-ndjson"],
                                           params=[{**query("from", {"type": "string", "format": "date-time"}),
                                                    "required": True},
                                                   {**query("to", {"type": "string", "format": "date-time"},
                                                            "exclusive"), "required": True},
                                                   query("user", {"type": "string"}, "an email"),
                                                   query("format", {"enum": ["csv", "jsonl"]})]),
    ("POST", "/api/admin/reload"): op("Reload models.yaml", "admin", auth="admin", response="Reloaded"),
    ("POST", "/v1/chat/completions"): op("Chat completion (streaming with `stream: true`)", "v1", auth="api_key",
                                         request="ChatCompletionRequest", response="ChatCompletion", streams=True),
    ("POST", "/v1/completions"): op("Legacy text completion", "v1", auth="api_key", request="CompletionRequest",
                                    response="Completion", streams=True),
    ("POST", "/v1/embeddings"): op("Embeddings", "v1", auth="api_key", request="EmbeddingRequest",
                                   response="EmbeddingList"),
    ("POST", "/v1/responses"): op("Responses API: text, function tools, reasoning", "v1", auth="api_key",
                                  request="ResponseRequest", response="Response", streams=True),
    ("GET", "/v1/models"): op("Models this key may call", "v1", auth="api_key", response="ModelList"),
    ("GET", "/v1/models/{model_id}"): op("One model", "v1", auth="api_key", response="Model",
                                         params=[path("model_id")]),
}
