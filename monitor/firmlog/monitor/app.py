"""The monitor's HTTP API (DESIGN.md sections 5 and 8).

``make_app`` builds the aiohttp application and does no I/O: the state
database, the HTTP session to the log, the watched log's state and the
follower task live in a cleanup context, opened when the app starts and
closed when it stops. Handlers parse, call, return.

=======================================  =========================================
``POST /add-checkpoint``                 c2sp.org/tlog-witness (firmlog.monitor.witness)
``POST /v1/gossip``                      a peer's signed checkpoint (firmlog.monitor.gossip)
``GET /<hex sha256(origin)>/checkpoint`` the latest cosigned checkpoint
``GET /v1/evidence``                     split-view evidence, JSON
``GET /v1/alerts``                       content alerts, JSON
``GET /healthz``                         liveness, and the follower's last error
``GET /metrics``                         Prometheus text
=======================================  =========================================
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web

from firmlog.client.cosignature import CosignatureSigner
from firmlog.monitor.config import MonitorConfig
from firmlog.monitor.fetch import LogFetcher
from firmlog.monitor.follower import Follower
from firmlog.monitor.gossip import Gossiper, GossipRefusal, receive
from firmlog.monitor.metrics import MonitorMetrics
from firmlog.monitor.state import Clock, WatchedLog
from firmlog.monitor.store import AsyncStore, MonitorStore
from firmlog.monitor.witness import AddCheckpoint, WitnessRefusal, add_checkpoint
from firmlog.service.http import (
    BodyIncomplete,
    BodyTimeout,
    BodyTooLarge,
    protocol_options,
    read_whole,
)
from firmlog.service.metrics import metrics_handler
from firmlog.service.request_ids import request_id_middleware

__all__ = ["Services", "make_app"]

log = structlog.get_logger("firmlog.monitor.http")

NO_STORE = "no-store"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"


@dataclass(slots=True)
class Services:
    """What the handlers use; created by the cleanup context at start-up."""

    watched: WatchedLog
    follower: Follower
    task: asyncio.Task[None]
    gossiper: Gossiper | None = None
    gossip_task: asyncio.Task[None] | None = None


CONFIG = web.AppKey("config", MonitorConfig)
SIGNER = web.AppKey("signer", CosignatureSigner)
METRICS = web.AppKey("metrics", MonitorMetrics)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
SERVICES = web.AppKey("services", Services)


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def count_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count every request once, and log the ones that fail or change state.

    The one log line of a request carries, if it failed, what failed (``kind``:
    the HTTP error raised, else the answer's reason phrase), and the request id
    and client address bound by
    :func:`firmlog.service.request_ids.request_id_middleware`."""
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _count(request, exc.status, started, type(exc).__name__)
        raise
    except Exception:
        log.exception("request failed", method=request.method, path=request.path[:200])
        response = web.json_response(
            {"error": "the monitor failed to handle this request", "kind": "InternalError"},
            status=500,
        )
        _count(request, response.status, started, "InternalError")
        return response
    _count(request, response.status, started, response.reason)
    return response


def _count(request: web.Request, status: int, started: float, kind: str) -> None:
    request.app[METRICS].requests.labels(_route_name(request), str(status)).inc()
    if status >= 400 or request.method != "GET":
        log.info(
            "request",
            method=request.method,
            path=request.path[:200],
            status=status,
            ms=round((time.perf_counter() - started) * 1000, 2),
            **({"kind": kind} if status >= 400 else {}),
        )


async def _body(request: web.Request) -> bytes:
    """The whole request body, within the size limit and the body deadline:
    413, 408 or 400 if it is too large, late or cut short."""
    config = request.app[CONFIG]
    limit = config.max_request_size
    try:
        return await read_whole(request, limit, config.http.body_timeout, what="the request body")
    except BodyTooLarge as exc:
        text = _error(exc, "BodyTooLarge")
        raise web.HTTPRequestEntityTooLarge(
            limit, limit + 1, text=text, content_type=JSON
        ) from None
    except BodyTimeout as exc:
        raise web.HTTPRequestTimeout(text=_error(exc, "BodyTimeout"), content_type=JSON) from None
    except BodyIncomplete as exc:
        raise web.HTTPBadRequest(text=_error(exc, "BodyIncomplete"), content_type=JSON) from None


def _error(exc: Exception, kind: str) -> str:
    """The body of an HTTP error raised by a handler: JSON saying what was wrong."""
    return json.dumps({"error": str(exc), "kind": kind})


async def post_add_checkpoint(request: web.Request) -> web.Response:
    watched = _services(request).watched
    try:
        body = await _body(request)
        result = await add_checkpoint(watched, AddCheckpoint.parse(body))
    except web.HTTPRequestEntityTooLarge:
        watched.metrics.witness_refusals.labels("413").inc()
        raise
    except WitnessRefusal as exc:
        watched.metrics.witness_refusals.labels(str(exc.status)).inc()
        text = exc.message if exc.message.endswith("\n") else exc.message + "\n"
        return web.Response(
            status=exc.status,
            body=text.encode("utf-8"),
            headers={"Content-Type": exc.content_type, "Cache-Control": NO_STORE},
        )
    return web.Response(body=result, headers={"Content-Type": TEXT, "Cache-Control": NO_STORE})


async def post_gossip(request: web.Request) -> web.Response:
    """A peer (or a device) pushes a checkpoint: 200 reconciled, 409 a split view recorded."""
    svc = _services(request)
    body = await _body(request)
    try:
        result = await receive(svc.watched, svc.follower, body, f"push {request.remote}")
    except GossipRefusal as exc:
        return web.json_response(
            {"error": exc.message, "status": exc.status},
            status=exc.status,
            headers={"Cache-Control": NO_STORE},
        )
    return web.json_response(
        result.to_json(), status=result.status, headers={"Cache-Control": NO_STORE}
    )


async def get_cosigned_checkpoint(request: web.Request) -> web.Response:
    watched = _services(request).watched
    want = hashlib.sha256(watched.origin.encode("utf-8")).hexdigest()
    if request.match_info["log"] != want:
        raise web.HTTPNotFound(text="unknown log\n")
    note = watched.cosigned_note
    if note is None:
        raise web.HTTPNotFound(text="no checkpoint of this log cosigned yet\n")
    return web.Response(body=note, headers={"Content-Type": TEXT, "Cache-Control": NO_STORE})


async def get_evidence(request: web.Request) -> web.Response:
    watched = _services(request).watched
    found = await watched.store.run(watched.store.store.evidence)
    return web.json_response([e.to_json() for e in found], headers={"Cache-Control": NO_STORE})


async def get_alerts(request: web.Request) -> web.Response:
    watched = _services(request).watched
    found = await watched.store.run(watched.store.store.alerts)
    return web.json_response([a.to_json() for a in found], headers={"Cache-Control": NO_STORE})


async def get_healthz(request: web.Request) -> web.Response:
    """The monitor is alive (200); ``status`` says whether it can follow the log."""
    svc = _services(request)
    watched = svc.watched
    if watched.split_view:
        status = "split-view"
    elif watched.last_error is not None:
        status = "degraded"
    else:
        status = "ok"
    return web.json_response(
        {
            "status": status,
            "origin": watched.origin,
            "tree_size": watched.tree_size,
            "checked_entries": watched.progress.next_index,
            "split_view": watched.split_view,
            "last_error": watched.last_error,
            "consecutive_failures": svc.follower.failures,
            "follower_running": not svc.task.done(),
        },
        headers={"Cache-Control": NO_STORE},
    )


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    config, signer, metrics = app[CONFIG], app[SIGNER], app[METRICS]
    raw = MonitorStore(config.database_path)
    store = AsyncStore(raw)
    meta = {
        "origin": config.origin,
        "log_key": config.log_key.vkey,
        "operator_keys": " ".join(sorted(k.vkey for k in config.operator_keys)),
        "witness_key": signer.verifier.vkey,
    }
    try:
        await store.run(raw.open, meta)
    except BaseException:
        await store.close()
        raise
    watched = WatchedLog(config.log_key, signer, store, metrics, app[CLOCK])
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=config.request_timeout),
        connector=aiohttp.TCPConnector(limit=config.fetch_concurrency * 2),
    )
    try:
        await watched.load(config.operator_keys)
        fetcher = LogFetcher(
            session,
            config.log_url,
            timeout=config.request_timeout,
            max_checkpoint_size=config.max_checkpoint_size,
            max_bundle_size=config.max_bundle_size,
        )
        follower = Follower(watched, fetcher, config)
        watched.command = follower.command  # split views run the same alert command
        if follower.command is not None:
            follower.command.wake()  # the alerts stored before a crash, not handed over yet
        task = asyncio.create_task(follower.run(), name="firmlog-monitor-follower")
        gossiper = Gossiper(watched, follower, session, config)
        gossip_task = asyncio.create_task(gossiper.run(), name="firmlog-monitor-gossip")
    except BaseException:
        await session.close()
        await store.close()
        raise
    app[SERVICES] = Services(watched, follower, task, gossiper, gossip_task)
    log.info(
        "monitor started",
        origin=config.origin,
        tree_size=watched.tree_size,
        checked_entries=watched.progress.next_index,
        split_view=watched.split_view,
    )
    try:
        yield
    finally:
        for running in (gossip_task, task):
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        await session.close()
        async with watched.lock:  # no add-checkpoint is half way through the store
            await store.close()
        log.info("monitor stopped", origin=config.origin)


def make_app(
    config: MonitorConfig, signer: CosignatureSigner, clock: Clock = time.time
) -> web.Application:
    """The monitor application. Does no I/O until it is started."""
    app = web.Application(
        middlewares=[request_id_middleware, count_middleware],
        client_max_size=config.max_request_size,
        handler_args=protocol_options(config.http),  # for a plain AppRunner too
    )
    app[CONFIG] = config
    app[SIGNER] = signer
    app[METRICS] = metrics = MonitorMetrics()
    app[CLOCK] = clock
    app.cleanup_ctx.append(_services_ctx)
    r = app.router
    r.add_post("/add-checkpoint", post_add_checkpoint)
    r.add_post("/v1/gossip", post_gossip)
    r.add_get("/v1/evidence", get_evidence)
    r.add_get("/v1/alerts", get_alerts)
    r.add_get("/healthz", get_healthz)
    r.add_get("/metrics", metrics_handler(metrics))
    r.add_get("/{log:[0-9a-f]{64}}/checkpoint", get_cosigned_checkpoint)
    return app
