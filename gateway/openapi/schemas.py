"""JSON Schemas (2020-12, as OpenAPI 3.1 uses) of the bodies the gateway reads and writes.

Response schemas list what every answer carries (`required`) and leave room for fields added later
(no `additionalProperties: false`), so the document stays true as the API grows.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None, **extra: Any) -> Schema:
    """An object with these required and optional properties."""
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})}, **extra}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
USD: Schema = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2,12}$", "description": "USD as a decimal string"}
TIME: Schema = {"type": "string", "format": "date-time"}
STRINGS: Schema = {"type": "array", "items": STRING}
AMOUNT: Schema = {"anyOf": [STRING, INTEGER], "description": "USD: an integer or a decimal string"}
PRICE: Schema = {"type": "string", "pattern": r"^[0-9]+\.[0-9]{6}$", "description": "USD per million tokens"}


def page_of(item: str) -> Schema:
    return obj({"items": {"type": "array", "items": ref(item)}, "total": INTEGER, "limit": INTEGER,
                "offset": INTEGER})


COMPONENTS: dict[str, Schema] = {
    "ServerSentEvent": obj({"data": STRING}, {"event": STRING, "id": STRING},
                           description="One event of a stream; /v1 streams end with `data: [DONE]`."),
    "Error": obj({"error": obj({"message": STRING, "type": STRING, "code": nullable(STRING),
                                "param": nullable(STRING)})},
                 description="OpenAI's error envelope, on every route."),
    "User": obj({"id": STRING, "email": STRING, "name": STRING, "role": {"enum": ["user", "admin"]},
                 "status": {"enum": ["active", "disabled", "deleted"]}, "email_verified": BOOLEAN,
                 "created_at": TIME}),
    "Me": {"allOf": [ref("User"), obj({"plan_name": STRING})]},
    "Session": obj({"access_token": STRING, "token_type": {"const": "bearer"}, "expires_in": INTEGER,
                    "user": ref("User")}),
    "Signup": obj({"email": STRING, "password": STRING},
                  {"name": STRING,
                   "invite": {"type": "string", "description": "an admin's invite (SIGNUP_MODE=invite)"}}),
    "Login": obj({"email": STRING, "password": STRING}),
    "PasswordChange": obj({"current_password": STRING, "new_password": STRING}),
    "LoggedOut": obj({"status": {"const": "logged_out"}}),
    "PasswordReset": obj({"email": STRING}),
    "PasswordResetAccepted": obj({"status": {"const": "accepted"}, "message": STRING}),
    "PasswordResetConfirm": obj({"token": STRING, "password": STRING}),
    "PasswordChanged": obj({"status": {"const": "password_changed"}}),
    "EmailToken": obj({"token": STRING}),
    "VerificationStatus": obj({"status": {"enum": ["sent", "already_verified"]}}),
    "Balance": obj({"balance_usd": USD, "held_usd": USD, "available_usd": USD, "paid_usd": USD, "trial_usd": USD,
                    "trial_expires_at": nullable(TIME), "plan_name": STRING,
                    "monthly_quota_tokens": nullable(INTEGER)},
                   description="`balance_usd` = `paid_usd` + `trial_usd` (trial credit is spent first)."),
    "Offer": obj({}, {"amount_usd": AMOUNT, "pack": STRING},
                 description="One of `amount_usd` (an allowed amount) or `pack` (a pack's name); see "
                             "/api/billing/options."),
    "Pack": obj({"name": STRING, "price_usd": USD, "credits_usd": USD, "bonus_usd": USD}),
    "PaymentOptions": obj({"providers": {"type": "array", "items": {"enum": ["mock", "stripe", "btcpay"]}},
                           "currency": STRING, "topup_amounts_usd": {"type": "array", "items": USD},
                           "packs": {"type": "array", "items": ref("Pack")},
                           "trial": nullable(obj({"credits_usd": USD, "days": INTEGER}))}),
    "Checkout": obj({"payment_id": STRING, "session_id": STRING, "checkout_url": STRING}),
    "Subscribe": obj({"plan": STRING}),
    "SubscriptionCheckout": obj({"session_id": STRING, "checkout_url": STRING}),
    "Invoice": obj({"payment_id": STRING, "invoice_id": STRING, "checkout_url": STRING}),
    "Redeem": obj({"code": {"type": "string", "description": "a redemption code, PR-..."}}),
    "ProviderEvent": {"type": "object", "description": "The provider's signed event, passed on byte for byte; "
                                                       "a missing or wrong signature is 400 and nothing is applied."},
    "WebhookReceipt": obj({"received": {"const": True}, "outcome": STRING}),
    "Transaction": obj({"id": INTEGER, "kind": STRING, "amount_usd": USD, "balance_after_usd": USD,
                        "note": nullable(STRING), "request_id": nullable(STRING), "created_at": TIME}),
    "TransactionPage": page_of("Transaction"),
    "ApiKey": obj({"id": STRING, "name": STRING, "key_prefix": STRING, "status": STRING,
                   "monthly_limit_usd": nullable(USD), "month_spend_usd": USD,
                   "allowed_models": nullable({"type": "array", "items": STRING}), "rpm": nullable(INTEGER),
                   "expires_at": nullable(TIME), "last_used_at": nullable(TIME), "created_at": TIME}),
    "ApiKeyFields": obj({}, {"name": STRING, "status": {"enum": ["active", "disabled"], "description": "PATCH only"},
                             "monthly_limit_usd": nullable({"anyOf": [STRING, INTEGER]}),
                             "allowed_models": nullable({"type": "array", "items": STRING}),
                             "rpm": nullable(INTEGER), "expires_at": nullable(TIME)}),
    "ApiKeyCreated": obj({"key": {"type": "string", "description": "the raw key, shown only here"},
                          "api_key": ref("ApiKey")}),
    "ApiKeyList": obj({"items": {"type": "array", "items": ref("ApiKey")}}),
    "UsageEvent": obj({"id": INTEGER, "request_id": STRING, "model_public_name": STRING, "endpoint": STRING,
                       "input_tokens": INTEGER, "output_tokens": INTEGER, "tokens_estimated": BOOLEAN,
                       "cost_usd": USD, "latency_ms": nullable(INTEGER), "ttft_ms": nullable(INTEGER),
                       "status": STRING, "error_code": nullable(STRING), "key_id": nullable(STRING),
                       "created_at": TIME}),
    "UsagePage": page_of("UsageEvent"),
    "UsageSummary": obj({"group_by": {"enum": ["model", "day"]}, "since": nullable(TIME), "until": nullable(TIME),
                         "items": {"type": "array", "items": {"type": "object"}},
                         "totals": obj({"requests": INTEGER, "input_tokens": INTEGER, "output_tokens": INTEGER,
                                        "cost_usd": USD})}),
    "Plan": obj({"name": STRING, "monthly_usd": USD, "included_credits_usd": USD,
                 "models": {"anyOf": [{"const": "all"}, {"type": "array", "items": STRING}]}, "rpm": INTEGER,
                 "rpd": nullable(INTEGER), "tpd": nullable(INTEGER)}),
    "PlanList": obj({"items": {"type": "array", "items": ref("Plan")}}),
    "CatalogModel": obj({"name": STRING, "kind": {"enum": ["chat", "embedding"]}, "family": STRING,
                         "context": INTEGER, "capabilities": nullable(STRINGS), "input_price": PRICE,
                         "output_price": PRICE,
                         "dimensions": nullable(INTEGER), "plans": {"type": "array", "items": STRING}}),
    "CatalogModelList": obj({"items": {"type": "array", "items": ref("CatalogModel")}, "price_unit": STRING}),
    "Member": {"allOf": [ref("User"), ref("Balance"),
                         obj({"account_id": STRING, "usage_30d": obj({"requests": INTEGER, "cost_usd": USD})})]},
    "MemberPage": page_of("Member"),
    "CreditAdjustment": obj({"amount_usd": AMOUNT}, {"reason": STRING, "note": nullable(STRING)},
                            description="A required `reason` (the older `note` counts as one)."),
    "PlanChange": obj({"plan": STRING}, {"grant_included_credits": BOOLEAN,
                                         "reason": {"type": "string", "description": "required with a grant"}}),
    "UserCreate": obj({"email": STRING, "password": STRING}, {"name": STRING, "role": {"enum": ["user", "admin"]}}),
    "TrialGrant": obj({"amount_usd": AMOUNT, "days": INTEGER, "reason": STRING}),
    "Invite": obj({"id": STRING, "email": nullable(STRING), "expires_at": TIME, "used_at": nullable(TIME),
                   "used_by": nullable(STRING), "created_at": TIME}),
    "InvitePage": page_of("Invite"),
    "InviteRequest": obj({}, {"email": nullable(STRING), "days": INTEGER}),
    "InviteCreated": {"allOf": [ref("Invite"), obj({"token": {"type": "string", "description": "shown only here"},
                                                    "emailed": BOOLEAN, "signup_url": nullable(STRING)})]},
    "RedemptionCode": obj({"id": STRING, "batch_id": STRING, "amount_usd": USD, "expires_at": nullable(TIME),
                           "reason": nullable(STRING), "redeemed_at": nullable(TIME), "redeemed_by": nullable(STRING),
                           "created_at": TIME}),
    "RedemptionCodePage": page_of("RedemptionCode"),
    "RedemptionBatchRequest": obj({"count": INTEGER, "amount_usd": AMOUNT, "reason": STRING},
                                  {"expires_at": nullable(TIME), "format": {"enum": ["json", "csv"]}}),
    "RedemptionBatch": obj({"batch_id": STRING, "amount_usd": USD, "expires_at": nullable(TIME),
                            "codes": {"type": "array", "items": STRING, "description": "shown only here"}}),
    "WebhookEvent": obj({"id": INTEGER, "provider": STRING, "event_id": STRING, "type": STRING, "outcome": STRING,
                         "detail": nullable(STRING), "account_id": nullable(STRING), "received_at": TIME}),
    "WebhookEventPage": page_of("WebhookEvent"),
    "Stats": obj({"since": TIME, "until": TIME, "users": INTEGER, "new_users": INTEGER, "active_users": INTEGER,
                  "requests": INTEGER, "errors": INTEGER, "input_tokens": INTEGER, "output_tokens": INTEGER,
                  "revenue_usd": USD, "topups_usd": USD}),
    "Node": obj({"name": STRING, "host": STRING, "up": BOOLEAN, "latency_ms": nullable({"type": "number"}),
                 "version": nullable(STRING), "error": nullable(STRING), "in_flight": nullable(INTEGER),
                 "max_concurrency": INTEGER, "routable": nullable(BOOLEAN),
                 "resident_models": {"type": "array", "items": obj({
                     "model": STRING, "size": INTEGER, "size_vram": INTEGER, "expires_at": nullable(STRING),
                     "context_length": nullable(INTEGER)})}}),
    "NodeList": obj({"items": {"type": "array", "items": ref("Node")}}),
    "ModelPresence": obj({"model": STRING, "tag": STRING, "node": STRING, "node_up": BOOLEAN, "present": BOOLEAN,
                          "digest": nullable(STRING)}),
    "ModelsCheck": obj({"ok": BOOLEAN, "missing": {"type": "array", "items": ref("ModelPresence")},
                        "items": {"type": "array", "items": ref("ModelPresence")}}),
    "ModelChoice": obj({}, {"model": {"type": "string", "description": "a public model name; default all"},
                            "node": {"type": "string", "description": "a node name; default each serving node"}}),
    "ModelWarm": {"allOf": [ref("ModelChoice"), obj({}, {"keep_alive": {
        "anyOf": [STRING, INTEGER], "description": "an Ollama duration (\"30m\") or seconds"}})]},
    "Warmed": obj({"ok": BOOLEAN, "items": {"type": "array", "items": obj({
        "model": STRING, "node": STRING, "ok": BOOLEAN, "error": nullable(STRING)})}}),
    "PullProgress": obj({"node": STRING, "tag": STRING, "attempt": INTEGER},
                        {"status": STRING, "digest": STRING, "total": INTEGER, "completed": INTEGER,
                         "error": STRING}),
    "PullDone": obj({"ok": BOOLEAN, "failed": {"type": "array", "items": obj({"node": STRING, "tag": STRING})}}),
    "PullEvent": obj({"event": {"enum": ["progress", "error", "done"]},
                      "data": {"type": "string", "contentMediaType": "application/json",
                               "contentSchema": {"anyOf": [ref("PullProgress"), ref("PullDone")]}}},
                     description="`progress` (Ollama's line plus node, tag, attempt), `error` (a target that "
                                 "failed for good), then one `done`."),
    "Reloaded": obj({"status": {"const": "reloaded"}, "diff": {},
                     "warnings": {"type": "array", "items": STRING,
                                  "description": "where models.yaml claims what its nodes lack"}}),
    "Health": obj({"status": STRING}),
    "Readiness": obj({"status": STRING, "checks": {"type": "object", "additionalProperties": STRING}}),
    # /v1: OpenAI's shapes, as far as the gateway guarantees them (see providers/openai/PARAMETERS.md).
    "ChatCompletionRequest": obj({"model": STRING, "messages": {"type": "array", "items": {"type": "object"}}},
                                 {"stream": BOOLEAN, "max_tokens": nullable(INTEGER),
                                  "max_completion_tokens": nullable(INTEGER),
                                  "temperature": nullable({"type": "number"}), "top_p": nullable({"type": "number"}),
                                  "tools": {"type": "array"},
                                  "response_format": {"type": "object"}}),
    "ChatCompletion": obj({"id": STRING, "object": {"const": "chat.completion"}, "created": INTEGER, "model": STRING,
                           "choices": {"type": "array", "items": {"type": "object"}}, "usage": ref("Usage")}),
    "CompletionRequest": obj({"model": STRING, "prompt": {"anyOf": [STRING, {"type": "array"}]}},
                             {"stream": BOOLEAN, "max_tokens": nullable(INTEGER)}),
    "Completion": obj({"id": STRING, "object": {"const": "text_completion"}, "created": INTEGER, "model": STRING,
                       "choices": {"type": "array", "items": {"type": "object"}}, "usage": ref("Usage")}),
    "EmbeddingRequest": obj({"model": STRING, "input": {"anyOf": [STRING, {"type": "array"}]}},
                            {"encoding_format": {"enum": ["float", "base64"]}, "dimensions": INTEGER}),
    "EmbeddingList": obj({"object": {"const": "list"}, "data": {"type": "array", "items": {"type": "object"}},
                          "model": STRING, "usage": {"type": "object"}}),
    "ResponseRequest": obj({"model": STRING, "input": {"anyOf": [STRING, {"type": "array"}]}},
                           {"instructions": nullable(STRING), "stream": BOOLEAN,
                            "max_output_tokens": nullable(INTEGER)}),
    "Response": obj({"id": STRING, "object": {"const": "response"}, "model": STRING, "output": {"type": "array"}}),
    "Usage": obj({"prompt_tokens": INTEGER, "completion_tokens": INTEGER, "total_tokens": INTEGER}),
    "Model": obj({"id": STRING, "object": {"const": "model"}, "created": INTEGER, "owned_by": STRING,
                  "context_length": INTEGER, "kind": {"enum": ["chat", "embedding"]}},
                 {"dimensions": INTEGER,
                  "capabilities": {**STRINGS, "description": "as the nodes report them (absent until they have)"}}),
    "ModelList": obj({"object": {"const": "list"}, "data": {"type": "array", "items": ref("Model")}}),
}
