"""The ASGI application: routes, middleware, error handlers and the lifespan that owns connections."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from gateway import recovery, web
from gateway.auth.attempts import redeem_throttle, reset_throttle
from gateway.auth.keyresolver import KeyResolver, stop_flusher
from gateway.auth.throttle import LoginThrottle
from gateway.billing.holds import release_stale_holds
from gateway.billing.leases import Lease
from gateway.billing.policy import warn_if_unsafe
from gateway.billing.settlement import Settlement
from gateway.billing.trials import expire_trials
from gateway.capabilities import ClaimLog
from gateway.context import AppContext
from gateway.db.engine import create_engine, session_factory
from gateway.errors import GatewayError, error_response, from_provider
from gateway.metrics import Metrics, forget_dead_workers
from gateway.middleware.edge import EdgeMiddleware, Endpoint
from gateway.middleware.root_path import check_root_path
from gateway.model_overheads import learn_overheads
from gateway.ratelimit.base import Limiter
from gateway.ratelimit.memory import MemoryLimiter
from gateway.ratelimit.redis import RedisLimiter, create_client
from gateway.registry import Registry, RegistryError, RegistryHolder
from gateway.routes import (
    admin,
    admin_export,
    admin_nodes,
    auth,
    billing,
    catalog,
    docs,
    health,
    keys,
    metrics,
    usage,
    v1,
    ws,
)
from gateway.routes.metrics import MetricsServer
from gateway.settings import Settings
from gateway.usage import UsageWriter
from providers.errors import ProviderError
from providers.ollama.transport import FastTransport
from providers.ollama.upstream_transport import UpstreamTransport, origin_of
from providers.pool import NodeConfig, NodePool

log = logging.getLogger("pr.app")

ROUTES: list[BaseRoute] = [
    *health.routes,
    *metrics.routes,
    *auth.routes,
    *billing.routes,
    *keys.routes,
    *usage.routes,
    *catalog.routes,
    *admin_nodes.routes,
    *admin_export.routes,
    *admin.routes,
    *v1.routes,
    *ws.routes,
    *web.routes,
    *docs.routes,
]


class GatewayApp(Starlette):
    """Starlette whose middleware stack is `EdgeMiddleware` around the exception middleware and router.

    Starlette's own outermost ServerErrorMiddleware is left out: `EdgeMiddleware` already turns every
    unhandled exception into a 500 in the envelope, and each layer would wrap `send` once more.
    """

    def __init__(self, *, edge: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.edge = edge

    def build_middleware_stack(self) -> ASGIApp:
        inner: ASGIApp = ExceptionMiddleware(self.router, handlers=self.exception_handlers)
        for cls, args, kwargs in reversed(self.user_middleware):  # none today; honoured if one is added
            inner = cls(inner, *args, **kwargs)
        return EdgeMiddleware(inner, exception_handlers=self.exception_handlers, **self.edge)


def direct_routes(routes: Sequence[BaseRoute]) -> dict[str, Endpoint]:
    """The POST-only routes without path parameters (the /v1 inference endpoints), by path."""
    return {route.path: route.endpoint for route in routes
            if isinstance(route, Route) and route.methods == {"POST"} and "{" not in route.path}


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        if request.url.path.startswith("/v1/"):
            error = GatewayError(404, "endpoint_not_supported",
                                 f"Unknown endpoint: {request.method} {request.url.path}.")
        else:
            error = GatewayError(404, "not_found", f"Nothing at {request.url.path}.")
    elif exc.status_code == 405:
        error = GatewayError(405, "method_not_allowed", f"Method {request.method} is not allowed on this path.",
                             headers=exc.headers)
    else:
        error = GatewayError(exc.status_code, "http_error", str(exc.detail), headers=exc.headers)
    return error_response(error)


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def _provider_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProviderError)
    return error_response(from_provider(exc))


def create_app(settings: Settings, *, registry: Registry | None = None,
               http_transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    """Build the gateway. Nothing connects until the lifespan starts."""
    check_root_path(settings.root_path, (getattr(route, "path", "") for route in ROUTES))
    app_metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        holder = RegistryHolder(settings.models_file, registry)
        engine = create_engine(settings.database_url, connect_timeout=settings.db_connect_timeout,
                               statement_timeout=settings.db_statement_timeout, pool_timeout=settings.db_pool_timeout)
        timeout = httpx.Timeout(connect=settings.upstream_connect_timeout, read=None, write=30.0, pool=None)
        transport = http_transport or UpstreamTransport(FastTransport())
        http = httpx.AsyncClient(timeout=timeout, transport=transport, trust_env=False,
                                 limits=httpx.Limits(max_connections=None, max_keepalive_connections=512))
        redis = create_client(settings.redis_url) if settings.redis_url else None
        sessions = session_factory(engine)
        pool = NodePool(http, first_byte_timeout=settings.upstream_first_byte_timeout,
                        idle_timeout=settings.upstream_idle_timeout, acquire_timeout=settings.upstream_acquire_timeout,
                        health_interval=settings.health_check_interval,
                        direct=transport.direct_for if isinstance(transport, UpstreamTransport) else None)
        _configure_nodes(pool, transport, holder.current)
        holder.on_swap(lambda new: _configure_nodes(pool, transport, new))
        lease = Lease(sessions, settings.instance_lease_seconds)
        usage_writer = UsageWriter(sessions,
                                   on_written=lambda batch, charges: _count_usage(app_metrics, batch, charges),
                                   on_failure=lambda exc: app_metrics.usage_flush_failed(),
                                   journal=recovery.open_journal(settings, lease.instance_id))
        ctx = AppContext(settings=settings, registry=holder, engine=engine, sessions=sessions,
                         http=http, redis=redis, metrics=app_metrics,
                         key_resolver=KeyResolver(sessions, settings.app_secret_key),
                         login_throttle=LoginThrottle.create(redis, signups_per_address=settings.signups_per_address),
                         pool=pool,
                         limiter=create_limiter(redis, app_metrics), usage_writer=usage_writer,
                         lease=lease)
        ctx.redeem_throttle, ctx.reset_throttle = redeem_throttle(redis), reset_throttle(redis)
        app.state.ctx = ctx
        warn_if_unsafe(settings)
        await pool.start()
        await _release_stale_holds(ctx)
        await recovery.start(ctx)
        usage_writer.start()
        background = [asyncio.create_task(_housekeeping(ctx)), asyncio.create_task(recovery.keep(ctx)),
                      asyncio.create_task(learn_overheads(ctx))]
        holder.on_swap(lambda new: background.append(asyncio.create_task(learn_overheads(ctx))))
        last_used_flusher = asyncio.create_task(ctx.key_resolver.run_flusher())
        app_metrics.set_registry_version(holder.current.version)
        holder.on_swap(lambda new: app_metrics.registry_reload("ok", new.version))
        holder.on_refuse(lambda error: app_metrics.registry_reload("invalid", holder.current.version))
        metrics_server: MetricsServer | None = None
        _install_sighup(holder)
        try:
            metrics_server = await _start_metrics_server(settings, app_metrics)
            yield
        finally:
            _remove_sighup()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await pool.aclose()
            await recovery.stop(ctx)  # flushes the usage writer; what the database refuses stays journaled
            await ctx.limiter.aclose()
            if metrics_server is not None:
                await metrics_server.stop()
            app_metrics.forget_process()
            await stop_flusher(last_used_flusher, ctx.key_resolver)
            await http.aclose()
            if redis is not None:
                await redis.aclose()
            await engine.dispose()

    edge = {"metrics": app_metrics, "root_path": settings.root_path, "trusted_proxies": settings.trusted_proxies,
            "ip_rpm": settings.ip_rpm, "max_bytes": settings.max_body_bytes, "body_timeout": settings.body_timeout,
            "direct": direct_routes(v1.routes)}
    return GatewayApp(
        edge=edge,
        routes=ROUTES,
        exception_handlers={
            HTTPException: _http_exception,
            GatewayError: _gateway_error,
            ProviderError: _provider_error,
        },
        lifespan=lifespan,
    )


def node_configs(registry: Registry) -> list[NodeConfig]:
    return [NodeConfig(name=node.name, url=node.url, max_concurrency=node.max_concurrency, weight=node.weight,
                       headers=node.headers, ca_file=node.ca_file)
            for node in registry.nodes.values()]


def _configure_nodes(pool: NodePool, transport: httpx.AsyncBaseTransport, registry: Registry) -> None:
    """The pool's node set; for https nodes with a `ca_file`, the transport's CA per origin; and the
    model tags whose capabilities the health checks keep read."""
    if isinstance(transport, UpstreamTransport):
        transport.set_ca_files({origin_of(node.url): node.ca_file for node in registry.nodes.values()
                                if node.ca_file is not None})
    pool.configure(node_configs(registry))
    pool.watch(model.tag for model in registry.models.values())


def create_limiter(redis: Redis | None, app_metrics: Metrics) -> Limiter:
    if redis is None:
        return MemoryLimiter()
    return RedisLimiter(redis, on_error=lambda exc: app_metrics.rate_limiter_error())


def _count_usage(app_metrics: Metrics, batch: list[Settlement], charges: list[int | None]) -> None:
    written = [(item, charge) for item, charge in zip(batch, charges, strict=True) if charge is not None]
    app_metrics.usage_events_written(len(written))
    for item, charge in written:
        if charge:
            app_metrics.credit_transaction("usage")
        if charge < item.cost_pico:
            app_metrics.usage_cost_capped(item.model_public_name, item.cost_pico - charge)


STALE_HOLD_AGE = timedelta(hours=2)
HOUSEKEEPING_INTERVAL = 1.0


def _host(url: str) -> str:
    """host:port of a node URL, never its credentials (metric labels are public)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


async def _release_stale_holds(ctx: AppContext) -> None:
    try:
        async with ctx.sessions() as session:
            await release_stale_holds(session, older_than=STALE_HOLD_AGE)
    except Exception:
        log.exception("releasing stale holds failed")


async def _expire_trials(ctx: AppContext) -> None:
    try:
        async with ctx.sessions() as session:
            await expire_trials(session)
    except Exception:
        log.exception("expiring trials failed")


async def _housekeeping(ctx: AppContext) -> None:
    """Node gauges and the usage queue depth every second; stale holds (from a crash) and expired trials
    every minute."""
    ticks = 0
    claims = ClaimLog()
    while True:
        claims.check(ctx.registry.current, ctx.pool)  # logs where models.yaml claims what the nodes lack
        ctx.metrics.set_nodes((node.name, _host(node.url), node.up, node.utilization) for node in ctx.pool.snapshot())
        ctx.metrics.set_usage_queue_depth(ctx.usage_writer.depth)
        ticks += 1
        if ticks % 60 == 0:
            await _release_stale_holds(ctx)
            await _expire_trials(ctx)
        await asyncio.sleep(HOUSEKEEPING_INTERVAL)


async def _start_metrics_server(settings: Settings, app_metrics: Metrics) -> MetricsServer | None:
    """With METRICS_PORT set, serve /metrics there (every worker binds it with SO_REUSEPORT)."""
    if app_metrics.multiprocess_dir is not None:
        forget_dead_workers(app_metrics.multiprocess_dir)
    elif settings.workers > 1:
        log.warning("WORKERS > 1 without PROMETHEUS_MULTIPROC_DIR: each worker exports only its own metrics "
                    "(start with `privaterouter serve`, which sets it)")
    if settings.metrics_port is None:
        return None
    server = MetricsServer(app_metrics, settings.host, settings.metrics_port,
                           reuse_port=settings.workers > 1 or app_metrics.multiprocess_dir is not None)
    await server.start()
    return server


def _install_sighup(holder: RegistryHolder) -> None:
    """SIGHUP reloads the registry (only possible in the main thread of a process)."""

    def reload() -> None:
        with contextlib.suppress(RegistryError):  # logged and counted; the running registry stays
            holder.reload()

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


def _remove_sighup() -> None:
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)


def app_from_env() -> Starlette:
    """uvicorn factory (`gateway.app:app_from_env`): settings from the environment."""
    from gateway import serving
    from gateway.logs import configure_logging

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    serving.header_timeout = settings.header_timeout  # this worker's protocol instances read it
    app = create_app(settings)
    # What is loaded by now (modules, classes, the app: ~135k objects) lives as long as the process:
    # moved out of the collector's generations, a full collection no longer walks it. Measured under
    # chat c=16: full collections of 90-260 ms, with the event loop stopped, were the gateway's
    # remaining stalls (bench/sqlite_stalls.py with a loop-lag probe).
    gc.collect()
    gc.freeze()
    return app
