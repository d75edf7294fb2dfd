"""Errors raised by `providers/`, translated once at the boundary where they happen.

    ProviderError
    ├── InvalidRequest            the OpenAI request cannot be honoured (400; names `param`)
    └── UpstreamError             anything that went wrong talking to an Ollama node
        ├── UpstreamUnavailable   cannot connect, no healthy node, every slot busy   (503)
        │   ├── NodeConnectError  connecting to one node failed (marks it suspect)
        │   └── UpstreamUnconfigured  no configured node may serve the model         (503)
        ├── UpstreamTimeout       no first byte within the first-byte timeout        (504)
        ├── UpstreamIdleTimeout   a started stream went silent past the idle timeout (502)
        ├── UpstreamStatusError   Ollama answered with an error status               (502)
        ├── UpstreamProtocolError the answer is not valid JSON / NDJSON              (502)
        └── UpstreamStreamError   an `{"error": ...}` line arrived mid-stream        (502)

Each class carries the OpenAI-envelope `code` the gateway answers with, so the gateway maps
errors by attribute and never by message text.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every error raised by `providers/`."""

    status: int = 500
    type: str = "api_error"
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ProviderError):
    """The client's request is invalid or asks for something we cannot honour."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_body"

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        if code is not None:
            self.code = code


class UpstreamError(ProviderError):
    """Talking to an Ollama node failed. `node` names the node when one was chosen."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class UpstreamUnavailable(UpstreamError):
    status = 503
    code = "upstream_unavailable"


class NodeConnectError(UpstreamUnavailable):
    """Connecting to one node failed; the pool may fail over to another."""


class UpstreamUnconfigured(UpstreamUnavailable):
    """No node in the current configuration may serve the model (none listed, or none configured)."""

    code = "upstream_unconfigured"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamIdleTimeout(UpstreamError):
    """A stream that had started stopped sending for longer than the idle timeout."""


class UpstreamStatusError(UpstreamError):
    """Ollama answered with a non-2xx status; `upstream_status` and its `error` text are kept."""

    def __init__(self, message: str, upstream_status: int, node: str | None = None) -> None:
        super().__init__(message, node)
        self.upstream_status = upstream_status


class UpstreamProtocolError(UpstreamError):
    """The answer could not be parsed (garbage, truncated JSON, wrong shape)."""


class UpstreamStreamError(UpstreamError):
    """Ollama sent an `{"error": ...}` line in the middle of a stream."""
