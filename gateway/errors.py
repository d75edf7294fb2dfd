"""Errors answered in OpenAI's envelope: {"error": {"message", "type", "code", "param"}}."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import orjson
from starlette.responses import Response

from providers.errors import ProviderError, UpstreamError, UpstreamStatusError
from providers.openai.upstream_errors import refusal, stable_message

upstream_log = logging.getLogger("gateway.upstream")


class GatewayError(Exception):
    """An error with its HTTP status, OpenAI error type and code; rendered by `error_response`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type
        self.param = param
        self.headers = dict(headers or {})


def invalid_body(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, "invalid_body", message, param=param)


def not_found(message: str = "Not found.", code: str = "not_found") -> GatewayError:
    return GatewayError(404, code, message)


def error_body(status_type: str, code: str, message: str, param: str | None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": status_type, "code": code, "param": param}})


def error_response(error: GatewayError) -> Response:
    return Response(
        error_body(error.type, error.code, error.message, error.param),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )


def from_provider(error: ProviderError, model: str | None = None, input_param: str = "input") -> GatewayError:
    """Map a provider error by its attributes; upstream errors get stable texts naming only `model`.

    An upstream error's own message (Ollama's text, node names, Ollama tags) is for the logs only.
    """
    if isinstance(error, UpstreamError):
        log_upstream(error, model)
    if isinstance(error, UpstreamStatusError) and error.upstream_status == 400:
        # Ollama refused the request itself (e.g. a capability the model lacks): the client's to fix.
        mapped = refusal(error.message, model or "requested", input_param=input_param)
        return GatewayError(400, mapped.code, mapped.message, param=mapped.param)
    if isinstance(error, UpstreamError):
        return GatewayError(error.status, error.code, stable_message(error.code, model), type=error.type)
    param = getattr(error, "param", None)
    return GatewayError(error.status, error.code, error.message, type=error.type, param=param)


def log_upstream(error: UpstreamError, model: str | None) -> None:
    """The upstream's own words, for operators (the client gets a stable message instead)."""
    upstream_log.warning("upstream %s for %s on node %s: %s", error.code, model or "?", error.node or "?",
                         error.message[:500])
