"""Everything the lifespan opens, reachable from a request as `context(request)`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from gateway.auth.attempts import AttemptThrottle, redeem_throttle, reset_throttle
from gateway.auth.keyresolver import KeyResolver
from gateway.auth.passwords import Passwords
from gateway.auth.throttle import LoginThrottle
from gateway.billing.bound import PromptBounds
from gateway.billing.leases import Lease
from gateway.metrics import Metrics
from gateway.ratelimit.base import Limiter
from gateway.registry import RegistryHolder
from gateway.settings import Settings
from gateway.usage import UsageWriter
from providers.pool import NodePool


@dataclass
class AppContext:
    settings: Settings
    registry: RegistryHolder
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    http: httpx.AsyncClient
    redis: Redis | None
    metrics: Metrics = field(default_factory=Metrics)
    passwords: Passwords = field(default_factory=Passwords)
    login_throttle: LoginThrottle = field(default_factory=lambda: LoginThrottle.create(None))
    redeem_throttle: AttemptThrottle = field(default_factory=lambda: redeem_throttle(None))
    reset_throttle: AttemptThrottle = field(default_factory=lambda: reset_throttle(None))
    key_resolver: KeyResolver = field(kw_only=True)
    pool: NodePool = field(kw_only=True)
    limiter: Limiter = field(kw_only=True)
    usage_writer: UsageWriter = field(kw_only=True)
    prompt_bounds: PromptBounds = field(default_factory=PromptBounds, kw_only=True)
    lease: Lease = field(kw_only=True)


def context(connection: HTTPConnection) -> AppContext:
    return cast(AppContext, connection.app.state.ctx)
