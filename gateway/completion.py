"""Non-streaming answers: streamed from Ollama, assembled here, and raced against the client leaving.

- Ollama is asked for a stream and the lines are assembled into its non-streaming answer
  (providers/ollama/assemble.py): the first-byte timeout then covers only the prompt's evaluation
  and the per-line idle timeout the generation, so a long answer completes instead of a 504.
  Embeddings have no stream and stay one plain request.
- The upstream call runs in the request's task, and a watcher task waits for `http.disconnect`. A
  client that gives up (a timeout, a closed connection) cancels the call: closing the upstream
  stream makes Ollama stop generating, and the call settles `cancelled` / `client_disconnected`,
  charged for what Ollama had generated (counted from the streamed lines, `tokens_estimated: true`)
  and the estimated prompt.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError
from gateway.http import JSONResponse
from gateway.inference import Call, upstream_error
from providers.base import Usage, render_response
from providers.errors import ProviderError
from providers.ollama.assemble import StreamAssembler


async def complete(call: Call) -> Response:
    """Answer one non-streaming request and settle it exactly once (also when the client leaves).

    The upstream call runs in the request's own task; a watcher task (none with an Idempotency-Key:
    that client comes back for the answer, so leaving does not cancel it) cancels it when the client
    disconnects.

    Raises GatewayError: the mapped upstream error, or 499 `client_disconnected` (never seen by the
    client, which is gone; it names the outcome in the access log and the metrics).
    """
    assembler = StreamAssembler()
    status: str = "error"
    code: str | None = "internal_error"
    usage: Usage | None = None
    watcher: _Watcher | None = None
    if call.idempotency is None:
        watcher = _Watcher(call.request)
    try:
        try:
            rendered, usage = await _answer(call, assembler)
        except asyncio.CancelledError:
            status, code, usage = "cancelled", "client_disconnected", _generated(call, assembler)
            if watcher is not None and watcher.client_left():
                raise GatewayError(499, "client_disconnected", "The client closed the connection before the answer.",
                                   headers=call.headers) from None
            raise  # the server is stopping this request
        except ProviderError as error:
            code, usage = error.code, None
            raise upstream_error(call, error) from None
        finally:
            if watcher is not None:
                watcher.stop()
        call.first_byte_at = time.perf_counter()
        if call.idempotency is not None:
            await call.idempotency.store(rendered)  # before the usage event: see idempotency._abandoned
        status, code = "success", None
        return JSONResponse(rendered, headers=call.headers)
    finally:
        if call.idempotency is not None and status != "success":
            await call.idempotency.release()
        call.finish(usage, status, code)


class _Watcher:
    """A task that cancels the request's task when its client disconnects (the body has been read, so
    the next message is the disconnect)."""

    def __init__(self, request: Request) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.left = False
        self.watch = asyncio.get_running_loop().create_task(self._wait(request))

    async def _wait(self, request: Request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        self.left = True
        self.task.cancel()

    def client_left(self) -> bool:
        """True when this watcher's cancellation is the one the task is handling (then it is withdrawn);
        False when something else (the server stopping) cancelled the task as well or instead."""
        return self.left and self.task.uncancel() == 0

    def stop(self) -> None:
        self.watch.cancel()


async def _answer(call: Call, assembler: StreamAssembler) -> tuple[dict[str, Any], Usage]:
    prepared, pool = call.prepared, call.ctx.pool
    before = time.perf_counter()
    if prepared.endpoint == "embeddings":
        answer, call.node = await pool.request(prepared.ollama_path, prepared.body, model_tag=call.model.tag,
                                               nodes=call.model.nodes)
    else:
        body = {**prepared.body, "stream": True}
        async with pool.open_stream(prepared.ollama_path, body, model_tag=call.model.tag,
                                    nodes=call.model.nodes) as stream:
            call.node = stream.node
            async for chunk in stream:
                assembler.feed(chunk)
        answer = assembler.merged()
    call.upstream_seconds = time.perf_counter() - before
    return render_response(prepared, call.target, answer, response_id=call.response_id, created=call.created)


def _generated(call: Call, assembler: StreamAssembler) -> Usage | None:
    """What a stopped call is charged for: the estimated prompt and what Ollama had generated (closing the
    upstream stream, on the way out of `_answer`, made it stop). An abandoned embedding is not charged."""
    if call.prepared.endpoint == "embeddings":
        return None
    return Usage(call.prepared.prompt_tokens_estimate, assembler.output_tokens_estimate(), estimated=True)
