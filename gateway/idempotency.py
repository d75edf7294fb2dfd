"""`Idempotency-Key` on /v1 POSTs: a retried request is answered once and charged once.

A client (or an SDK retrying after its timeout) sends the same key with the same body:

- first time: the key is claimed for this account (`idempotency_keys`, state `running`) before the
  hold, and the request runs. A non-streaming request with a key is *not* cancelled when the
  client leaves — the client said it will come back for the answer (gateway/completion.py).
- while it runs: 409 `idempotency_request_in_progress` with `Retry-After: 1` (SDKs retry 409).
- once it answered 200: the stored answer is replayed (`Idempotent-Replayed: true`), with no new
  hold, usage event or charge, for IDEMPOTENCY_TTL (24 h) after the first request.
- a streamed answer cannot be replayed: 422 `idempotency_key_reused`; so is any reuse with a
  different body (compared by SHA-256 of the raw bytes).
- a request that ends without an answer (upstream error, refused hold, crash) frees its key, so
  the retry runs again (it was not charged for an answer either). A `running` claim whose request
  already has a usage event was left by a crashed process and is taken over.

Keys are 1-255 printable ASCII characters; anything else is a 400 `invalid_idempotency_key`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import Response

from gateway.db.models import IdempotencyKey, UsageEvent, utcnow
from gateway.errors import GatewayError
from gateway.http import JSONResponse

log = logging.getLogger("pr.idempotency")
HEADER = "idempotency-key"
IDEMPOTENCY_TTL = timedelta(hours=24)
_keys = IdempotencyKey.__table__  # type: ignore[attr-defined]
_events = UsageEvent.__table__  # type: ignore[attr-defined]


class Replayed(Exception):
    """The key's request already answered: `response` is that answer, replayed."""

    def __init__(self, response: Response) -> None:
        super().__init__("replayed")
        self.response = response


@dataclass
class Claim:
    """This request owns the key until `store()` (an answer) or `release()` (none)."""

    sessions: async_sessionmaker[AsyncSession]
    account_id: str
    key: str

    async def store(self, answer: dict[str, Any]) -> None:
        """Keep the 200 answer for replays."""
        await self._update(state="done", response_body=orjson.dumps(answer).decode())

    async def streamed(self) -> None:
        """The answer went out as a stream: the key is spent, not replayable."""
        await self._update(state="streamed")

    async def release(self) -> None:
        """No answer: a retry with this key runs again. Never raises: a claim it cannot free is taken
        over by the retry once the request's usage event exists (see `_abandoned`)."""
        try:
            async with self.sessions() as session:
                await session.execute(sa.delete(_keys).where(*self._row()))
                await session.commit()
        except Exception as exc:
            log.error("freeing an Idempotency-Key failed: %s", exc)

    def _row(self) -> tuple[sa.ColumnElement[bool], ...]:
        return _keys.c.account_id == self.account_id, _keys.c.key == self.key

    async def _update(self, **values: Any) -> None:
        async with self.sessions() as session:
            await session.execute(sa.update(_keys).where(*self._row()).values(**values))
            await session.commit()


def _key(request: Request) -> str | None:
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if not 1 <= len(raw) <= 255 or not raw.isascii() or not raw.isprintable():
        raise GatewayError(400, "invalid_idempotency_key",
                           "The Idempotency-Key header must be 1 to 255 printable ASCII characters.")
    return raw


async def claim(sessions: async_sessionmaker[AsyncSession], request: Request, account_id: str,
                request_id: str) -> Claim | None:
    """Claim the request's Idempotency-Key for this account; None when it sent none.

    Raises Replayed (a stored answer), or GatewayError: 400 invalid key, 409 still running,
    422 reused with another body or for a streamed answer.
    """
    key = _key(request)
    if key is None:
        return None
    digest = hashlib.sha256(await request.body()).hexdigest()
    for _ in range(3):
        async with sessions() as session:
            session.add(IdempotencyKey(account_id=account_id, key=key, body_sha256=digest, request_id=request_id,
                                       state="running"))
            try:
                await session.commit()
                return Claim(sessions, account_id, key)
            except IntegrityError:
                await session.rollback()
            existing = await session.get(IdempotencyKey, (account_id, key))
            if existing is None:
                continue  # freed meanwhile: claim again
            if await _abandoned(session, existing):
                await session.delete(existing)
                await session.commit()
                continue
            _answer_for(existing, digest)
    raise GatewayError(409, "idempotency_request_in_progress",
                       "A request with this Idempotency-Key is changing state; retry.", headers={"Retry-After": "1"})


async def purge_expired(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Delete keys older than IDEMPOTENCY_TTL; returns how many."""
    async with sessions() as session:
        gone = await session.execute(sa.delete(_keys).where(_keys.c.created_at < utcnow() - IDEMPOTENCY_TTL)
                                     .returning(_keys.c.key))
        count = len(gone.all())
        await session.commit()
    return count


async def _abandoned(session: AsyncSession, row: IdempotencyKey) -> bool:
    """Expired, or `running` although its request was settled (its process died mid-way)."""
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=utcnow().tzinfo)
    if utcnow() - created > IDEMPOTENCY_TTL:
        return True
    if row.state != "running":
        return False
    settled = await session.execute(sa.select(_events.c.id).where(_events.c.request_id == row.request_id))
    return settled.first() is not None


def _answer_for(row: IdempotencyKey, digest: str) -> None:
    """Raise what a repeat of `row`'s key gets."""
    if row.body_sha256 != digest:
        raise GatewayError(422, "idempotency_key_reused",
                           "This Idempotency-Key was already used with a different request body; use a new key.")
    if row.state == "running":
        raise GatewayError(409, "idempotency_request_in_progress",
                           "The request with this Idempotency-Key is still running; retry shortly.",
                           headers={"Retry-After": "1"})
    if row.state == "streamed" or row.response_body is None:
        raise GatewayError(422, "idempotency_key_reused",
                           "This Idempotency-Key was used for a streamed answer, which cannot be replayed.")
    raise Replayed(JSONResponse(orjson.loads(row.response_body), headers={"Idempotent-Replayed": "true"}))
