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
PRICE: Schema = {"type": "string", "pattern": r"^[0-9]+\.[0-9]{6}$", "description": "USD per million tokens"}


def page_of(item: str) -> Schema:
    return obj({"items": {"type": "array", "items": ref(item)}, "total": INTEGER, "limit": INTEGER,
                "offset": INTEGER})


COMPONENTS: dict[str, Schema] = {
    "Error": obj({"error": obj({"message": STRING, "type": STRING, "code": nullable(STRING),
                                "param": nullable(STRING)})},
                 description="OpenAI's error envelope, on every route."),
    "User": obj({"id": STRING, "email": STRING, "name": STRING, "role": {"enum": ["user", "admin"]},
                 "status": {"enum": ["active", "disabled"]}, "created_at": TIME}),
    "Me": {"allOf": [ref("User"), obj({"plan_name": STRING})]},
    "Session": obj({"access_token": STRING, "token_type": {"const": "bearer"}, "expires_in": INTEGER,
                    "user": ref("User")}),
    "Signup": obj({"email": STRING, "password": STRING}, {"name": STRING}),
    "Login": obj({"email": STRING, "password": STRING}),
    "PasswordChange": obj({"current_password": STRING, "new_password": STRING}),
    "LoggedOut": obj({"status": {"const": "logged_out"}}),
    "Balance": obj({"balance_usd": USD, "held_usd": USD, "available_usd": USD, "plan_name": STRING,
                    "monthly_quota_tokens": nullable(INTEGER)}),
    "Topup": obj({"amount_usd": {"anyOf": [{"enum": [10, 25, 50, 100, 500]}, STRING]}}),
    "Transaction": obj({"id": INTEGER, "kind": STRING, "amount_usd": USD, "balance_after_usd": USD,
                        "note": nullable(STRING), "request_id": nullable(STRING), "created_at": TIME}),
    "TransactionPage": page_of("Transaction"),
    "ApiKey": obj({"id": STRING, "name": STRING, "key_prefix": STRING, "status": STRING,
                   "monthly_limit_usd": nullable(USD), "month_spend_usd": USD,
                   "allowed_models": nullable({"type": "array", "items": STRING}), "rpm": nullable(INTEGER),
                   "expires_at": nullable(TIME), "last_used_at": nullable(TIME), "created_at": TIME}),
    "ApiKeyFields": obj({}, {"name": STRING, "monthly_limit_usd": nullable({"anyOf": [STRING, INTEGER]}),
                             "allowed_models": nullable({"type": "array", "items": STRING}),
                             "rpm": nullable(INTEGER), "expires_at": nullable(TIME)}),
    "ApiKeyCreated": obj({"key": {"type": "string", "description": "the raw key, shown only here"},
                          "api_key": ref("ApiKey")}),
    "ApiKeyList": obj({"items": {"type": "array", "items": ref("ApiKey")}}),
    "UsageEvent": obj({"request_id": STRING, "model_public_name": STRING, "endpoint": STRING, "input_tokens": INTEGER,
                       "output_tokens": INTEGER, "cost_usd": USD, "status": STRING, "created_at": TIME}),
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
                         "context": INTEGER, "input_price": PRICE, "output_price": PRICE,
                         "dimensions": nullable(INTEGER), "plans": {"type": "array", "items": STRING}}),
    "CatalogModelList": obj({"items": {"type": "array", "items": ref("CatalogModel")}, "price_unit": STRING}),
    "Member": {"allOf": [ref("User"), ref("Balance"),
                         obj({"account_id": STRING, "usage_30d": obj({"requests": INTEGER, "cost_usd": USD})})]},
    "MemberPage": page_of("Member"),
    "CreditAdjustment": obj({"amount_usd": {"anyOf": [STRING, INTEGER]}}, {"note": nullable(STRING)}),
    "PlanChange": obj({"plan": STRING}, {"grant_included_credits": BOOLEAN}),
    "Stats": obj({"since": TIME, "until": TIME, "users": INTEGER, "new_users": INTEGER, "active_users": INTEGER,
                  "requests": INTEGER, "errors": INTEGER, "input_tokens": INTEGER, "output_tokens": INTEGER,
                  "revenue_usd": USD, "topups_usd": USD}),
    "NodeList": obj({"items": {"type": "array", "items": {"type": "object"}}}),
    "Reloaded": obj({"status": {"const": "reloaded"}, "diff": {}}),
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
                 {"dimensions": INTEGER}),
    "ModelList": obj({"object": {"const": "list"}, "data": {"type": "array", "items": ref("Model")}}),
}
