"""Non-streaming answers: streamed from Ollama, assembled here, and raced against the client leaving.

- Ollama is asked for a stream and the lines are assembled into its non-streaming answer
  (providers/ollama/assemble.py): the first-byte timeout then covers only the prompt's evaluation
  and the per-line idle timeout the generation, so a long answer completes instead of a 504.
  Embeddings have no stream and stay one plain request.
- The upstream call runs as a task raced against `http.disconnect`. A client that gives up (a
  timeout, a closed connection) cancels it: closing the upstream stream makes Ollama stop
  generating, and the call settles `cancelled` / `client_disconnected`, charged for what Ollama had
  generated (counted from the streamed lines, `tokens_estimated: true`) and the estimated prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
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

    Raises GatewayError: the mapped upstream error, or 499 `client_disconnected` (never seen by the
    client, which is gone; it names the outcome in the access log).
    """
    assembler = StreamAssembler()
    status: str = "error"
    code: str | None = "internal_error"
    usage: Usage | None = None
    loop = asyncio.get_running_loop()
    work = loop.create_task(_answer(call, assembler))
    # With an Idempotency-Key the client comes back for the answer: a disconnect does not cancel it.
    watcher = loop.create_task(_client_left(call.request) if call.idempotency is None else _never())
    try:
        await asyncio.wait((work, watcher), return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            status, code, usage = "cancelled", "client_disconnected", await _stop(work, call, assembler)
            raise GatewayError(499, "client_disconnected", "The client closed the connection before the answer.",
                               headers=call.headers)
        try:
            rendered, usage = work.result()
        except ProviderError as error:
            code, usage = error.code, None
            raise upstream_error(call, error) from None
        call.first_byte_at = time.perf_counter()
        if call.idempotency is not None:
            await call.idempotency.store(rendered)  # before the usage event: see idempotency._abandoned
        status, code = "success", None
        return JSONResponse(rendered, headers=call.headers)
    except asyncio.CancelledError:  # the server is stopping this request
        status, code, usage = "cancelled", "client_disconnected", await _stop(work, call, assembler)
        raise
    finally:
        watcher.cancel()
        if call.idempotency is not None and status != "success":
            await call.idempotency.release()
        call.finish(usage, status, code)


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


async def _never() -> None:
    await asyncio.Event().wait()


async def _client_left(request: Request) -> None:
    """Return when the client disconnects (the body has been read: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _stop(work: asyncio.Task[Any], call: Call, assembler: StreamAssembler) -> Usage | None:
    """Cancel the upstream call (closing the stream stops Ollama) and price what it generated."""
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await work
    if call.prepared.endpoint == "embeddings":
        return None  # nothing is generated; an abandoned embedding is not charged
    return Usage(call.prepared.prompt_tokens_estimate, assembler.output_tokens_estimate(), estimated=True)
