"""The log server's HTTP API (DESIGN.md sections 4 and 8).

``make_app`` builds the aiohttp application and does no I/O: the storage
pool, the sequencer task and the reader live in a cleanup context, opened
when the app starts and closed when it stops. Handlers parse, call, return;
one middleware answers errors with a JSON body saying what was wrong, with
the status of their row in the one table of answers
(:data:`firmlog.server.errors.ANSWERS`), and writes one log line per request.

Requests are read whole or not at all: an entry is read to the end of its
body, however many segments it comes in, and refused if it does not fit the
limit (413) or does not arrive within ``http.body_timeout`` (408). Request
bodies are never decompressed: any Content-Encoding is refused with 415. What
happens below the app (connection timeouts, malformed requests) is in
:mod:`firmlog.service.http`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import ClientSession, hdrs, web
from prometheus_client import Counter, Histogram

from firmlog.client.entries import entry_json, parse_entry
from firmlog.client.errors import TilePathError
from firmlog.client.keys import Ed25519Signer, Ed25519Verifier
from firmlog.client.tiles import ENTRY_LEVEL, parse_tile_path
from firmlog.server import page
from firmlog.server.acceptance import Acceptance
from firmlog.server.config import ServerConfig
from firmlog.server.datadir import CHECKPOINT_FILE
from firmlog.server.errors import (
    BadRequest,
    BodyIncomplete,
    BodyTimeout,
    EntryTooLarge,
    ImageRejected,
    ImageTooLarge,
    NotFound,
    StorageUnavailable,
    answer,
)
from firmlog.server.escrow import ImageStore
from firmlog.server.gate import LedgerGate, VendorKeyCache
from firmlog.server.metrics import ServerMetrics, WorkerMetrics
from firmlog.server.publish import StaticPublisher
from firmlog.server.reader import (
    LatestCheckpoint,
    LogReader,
    checkpoint_of,
    summarize_stored_tiles,
)
from firmlog.server.sequencer import Sequencer
from firmlog.server.storage import KeySetRow, ReleaseQuery, Storage, open_storage
from firmlog.server.witnessing import WitnessCollector, load_witness_policy
from firmlog.server.workers import WorkerHost
from firmlog.service import http as service_http
from firmlog.service.http import HTTPConfig, protocol_options
from firmlog.service.logs import info_enabled
from firmlog.service.metrics import metrics_handler
from firmlog.service.request_ids import request_id_middleware

log = structlog.get_logger("firmlog.http")

IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=1"
NO_STORE = "no-store"
TEXT = "text/plain; charset=utf-8"
MAX_UINT63 = (1 << 63) - 1
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class LogKeys:
    log: Ed25519Signer
    operators: tuple[Ed25519Verifier, ...]  # who may admit vendors; never their signer keys


@dataclass(slots=True)
class Services:
    """What the handlers use; created by the cleanup context at start-up."""

    config: ServerConfig
    storage: Storage
    reader: LogReader
    sequencer: Sequencer
    acceptance: Acceptance
    metrics: ServerMetrics
    images: ImageStore


SERVICES = web.AppKey("services", Services)
CONFIG = web.AppKey("config", ServerConfig)
KEYS = web.AppKey("keys", LogKeys)
METRICS = web.AppKey("metrics", ServerMetrics)
LOG_INFO: web.AppKey[dict[str, object]] = web.AppKey("log_info")  # GET /v1/log, read at start
PUBLISHER = web.AppKey("publisher", StaticPublisher)  # only with publish_dir
HOST = web.AppKey("host", WorkerHost)  # only in a worker of serve --workers N
WORKER_METRICS = web.AppKey("worker_metrics", WorkerMetrics)  # only with HOST


_LOGGED_PATH = 200  # characters of a request path that go into the log


def _shown(value: str, limit: int = 64) -> str:
    """A request value quoted for an error message, cut short: never echo much."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} chars)"


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


def _json_error(status: int, message: str, kind: str, **headers: str) -> web.Response:
    return web.json_response({"error": message, "kind": kind}, status=status, headers=headers)


class _RequestMetrics:
    """``firmlog_http_requests_total{route,status}`` and ``firmlog_http_request_seconds{route}``,
    with each label set's child made once: prometheus_client's ``labels()`` builds and
    looks up its key under a lock on every call. Keyed by the matched resource (None for
    no route: ``unmatched``), of which an app has a fixed set."""

    __slots__ = ("_counts", "_metrics", "_seconds")

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics
        self._counts: dict[tuple[web.AbstractResource | None, int], Counter] = {}
        self._seconds: dict[web.AbstractResource | None, Histogram] = {}

    def observe(self, request: web.Request, status: int, elapsed: float) -> None:
        resource = request.match_info.route.resource
        key = (resource, status)
        count = self._counts.get(key)
        if count is None:
            route = resource.canonical if resource is not None else "unmatched"
            count = self._counts[key] = self._metrics.requests.labels(route, str(status))
        count.inc()
        seconds = self._seconds.get(resource)
        if seconds is None:
            route = resource.canonical if resource is not None else "unmatched"
            seconds = self._seconds[resource] = self._metrics.request_seconds.labels(route)
        seconds.observe(elapsed)


REQUEST_METRICS = web.AppKey("request_metrics", _RequestMetrics)


def _codings(request: web.Request, header: str) -> list[str]:
    values = request.headers.getall(header, ())
    return [c.strip().lower() for h in values for c in h.split(",") if c.strip()]


def _refused_codings(request: web.Request) -> tuple[web.Response, str] | None:
    """415 for a compressed body, 501 for a transfer coding other than chunked; and its kind."""
    headers = request.headers
    if hdrs.CONTENT_ENCODING not in headers and hdrs.TRANSFER_ENCODING not in headers:
        return None  # most requests: nothing to look at
    if any(c != "identity" for c in _codings(request, "Content-Encoding")):
        found = _shown(", ".join(request.headers.getall("Content-Encoding")))
        kind = "UnsupportedContentEncoding"
        message = (
            f"request bodies must not be compressed: expected no Content-Encoding, got {found}"
        )
        return _json_error(415, message, kind), kind
    if any(c != "chunked" for c in _codings(request, "Transfer-Encoding")):
        found = _shown(", ".join(request.headers.getall("Transfer-Encoding")))
        kind = "UnsupportedTransferEncoding"
        message = f"the only transfer coding understood is chunked, got {found}"
        return _json_error(501, message, kind), kind
    return None


def _error_response(request: web.Request, exc: Exception) -> tuple[web.Response, str]:
    """The answer to ``exc`` from the one table of answers (firmlog.server.errors), and
    its kind."""
    row = answer(exc)
    if row.traceback:
        log.exception("request failed", method=request.method, path=request.path[:_LOGGED_PATH])
    elif row.warn is not None:
        log.warning(
            row.warn, method=request.method, path=request.path[:_LOGGED_PATH], error=str(exc)
        )
    kind = row.kind_of(exc)
    response = _json_error(row.status, row.message_of(exc), kind, **row.headers_of(exc))
    if row.close:
        response.force_close()
    return response, kind


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Map errors to status codes, and log and count every request once.

    The one log line of a request that fails or changes state carries the kind
    of error it was answered with (its ``kind``), and the request id and client
    address bound by :func:`firmlog.service.request_ids.request_id_middleware`."""
    started = time.perf_counter()
    kind: str | None = None
    response: web.StreamResponse
    try:
        refused = _refused_codings(request)
        if refused is not None:
            response, kind = refused
        else:
            response = await handler(request)
    except web.HTTPException as exc:
        response = exc
        if exc.status >= 400:
            kind = type(exc).__name__
            if exc.content_type != "application/json":
                response = _json_error(exc.status, exc.reason, kind)
    except Exception as exc:
        response, kind = _error_response(request, exc)
    elapsed = time.perf_counter() - started
    status = response.status
    counters = request.app.get(REQUEST_METRICS)
    if counters is None:  # an app not made by make_app: its metrics, nothing kept
        counters = _RequestMetrics(request.app[METRICS])
    counters.observe(request, status, elapsed)
    if (status >= 400 or request.method != "GET") and info_enabled():
        log.info(
            "request",
            method=request.method,
            path=request.path[:_LOGGED_PATH],
            status=status,
            ms=round(elapsed * 1000, 2),
            **({"kind": kind} if kind is not None else {}),
        )
    return response


def _int_param(request: web.Request, name: str, *, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise BadRequest(f"missing query parameter {name!r}")
        return default
    if not _DECIMAL.fullmatch(raw) or int(raw) > MAX_UINT63:
        raise BadRequest(
            f"query parameter {name!r} must be a decimal integer 0..{MAX_UINT63}, got {_shown(raw)}"
        )
    return int(raw)


async def _latest(request: web.Request, at_least: int = 0) -> LatestCheckpoint:
    latest = await _services(request).reader.latest(at_least)
    if latest is None:
        raise NotFound("the log is empty: no checkpoint has been published yet")
    return latest


def _size_within(latest: LatestCheckpoint, name: str, size: int) -> None:
    if size > latest.tree_size:
        raise NotFound(
            f"{name}={size} is beyond the latest checkpoint (tree size {latest.tree_size})"
        )


# -- write path -------------------------------------------------------------


async def _read_whole(request: web.Request, limit: int, timeout: float) -> bytes:
    """The whole request body: EntryTooLarge, BodyTimeout or BodyIncomplete if it
    is too large, late or cut short (:func:`firmlog.service.http.read_whole`)."""
    try:
        return await service_http.read_whole(request, limit, timeout, what="entry")
    except service_http.BodyTooLarge as exc:
        raise EntryTooLarge(str(exc)) from None
    except service_http.BodyTimeout as exc:
        raise BodyTimeout(str(exc)) from None
    except service_http.BodyIncomplete as exc:
        raise BodyIncomplete(str(exc)) from exc.__cause__


class _BodyChunks:
    """A request body as it arrives. BodyTimeout if it pauses longer than
    ``http.body_timeout``, or has not all arrived ``http.body_timeout`` seconds
    after it would have at ``http.min_upload_rate``."""

    def __init__(self, request: web.Request, http: HTTPConfig, max_size: int) -> None:
        self._content = request.content
        self._pause = http.body_timeout
        self._budget = http.body_timeout + max_size / http.min_upload_rate
        self._deadline = asyncio.get_running_loop().time() + self._budget
        self._size = 0

    def __aiter__(self) -> _BodyChunks:
        return self

    async def __anext__(self) -> bytes:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(min(loop.time() + self._pause, self._deadline)):
                chunk = await self._content.read(1 << 20)
        except TimeoutError:
            if loop.time() >= self._deadline:
                raise BodyTimeout(
                    f"the upload did not arrive within {self._budget:.1f} s: {self._size} "
                    "bytes came"
                ) from None
            raise BodyTimeout(
                f"the upload paused for more than {self._pause} s after {self._size} bytes"
            ) from None
        except (ConnectionResetError, web.RequestPayloadError) as exc:
            raise BodyIncomplete(
                f"the upload ended early after {self._size} bytes ({type(exc).__name__})"
            ) from exc
        if not chunk:
            raise StopAsyncIteration
        self._size += len(chunk)
        return chunk


async def post_entry(request: web.Request) -> web.Response:
    svc = _services(request)
    limit = svc.acceptance.max_entry_size
    try:
        raw = await _read_whole(request, limit, svc.config.http.body_timeout)
        candidate = await svc.acceptance.check(raw)
    except Exception as exc:
        row = answer(exc)
        if row.status < 500:  # refused before the pool: counted here, by its kind
            svc.metrics.submitted("rejected", row.kind_of(exc))
        raise
    entry = candidate.entry
    result = await svc.sequencer.submit(entry.raw, entry.leaf_hash, candidate)
    return web.Response(
        body=result.bundle,
        content_type="text/plain",
        charset="utf-8",
        headers={
            "Cache-Control": NO_STORE,
            "Firmlog-Leaf-Index": str(result.leaf_index),
            "Firmlog-Tree-Size": str(result.tree_size),
        },
    )


# -- tlog-tiles -------------------------------------------------------------


async def get_checkpoint(request: web.Request) -> web.Response:
    latest = await _latest(request)
    return web.Response(
        body=latest.note,
        content_type="text/plain",
        charset="utf-8",
        headers={"Cache-Control": SHORT},
    )


async def get_tile(request: web.Request) -> web.Response:
    reader = _services(request).reader
    try:
        tile = parse_tile_path(request.path)
    except TilePathError as exc:
        message = str(exc)
        if len(message) > 200:
            message = f"{message[:200]}... ({len(message)} chars)"
        raise NotFound(f"not a tile path: {message}") from exc
    if tile.level == ENTRY_LEVEL:
        data = await reader.entry_bundle(tile.index, tile.width)
    else:
        data = await reader.hash_tile(tile.level, tile.index, tile.width)
    # A tile path's content never changes, partial (.p/W) or full.
    return web.Response(
        body=data, content_type="application/octet-stream", headers={"Cache-Control": IMMUTABLE}
    )


# -- JSON API ---------------------------------------------------------------


async def _entry_index(storage: Storage, ref: str) -> int:
    """The log index ``ref`` names: a decimal index, or an entry's id or leaf hash."""
    if _HEX64.fullmatch(ref):
        return await _find_entry(storage, ref)
    if _DECIMAL.fullmatch(ref) and int(ref) <= MAX_UINT63:
        return int(ref)
    raise BadRequest(
        "expected a decimal entry index, or an entry's id or leaf hash (64 lowercase hex "
        f"digits), got {_shown(ref)}"
    )


async def get_bundle(request: web.Request) -> web.Response:
    svc = _services(request)
    index = await _entry_index(svc.storage, request.match_info["ref"])
    pinned = "tree_size" in request.query
    if pinned:
        size = _int_param(request, "tree_size")
        note = await svc.storage.checkpoint_at(size)
        if note is None or not svc.reader.servable(note):
            raise NotFound(f"the log published no checkpoint for tree size {size}")
        checkpoint = checkpoint_of(note)
    else:
        checkpoint = await _latest(request, index + 1)
    body = await svc.reader.bundle(index, checkpoint)
    return web.Response(
        body=body,
        content_type="text/plain",
        charset="utf-8",
        headers={"Cache-Control": IMMUTABLE if pinned else SHORT},
    )


async def _find_entry(storage: Storage, ref: str) -> int:
    """The index of the entry whose identity or leaf hash is ``ref`` (64 hex digits).

    Both are SHA-256 outputs over different inputs (the signed text; 0x00 and
    the whole note), so one value cannot name two entries."""
    digest = bytes.fromhex(ref)
    index = await storage.find_identity(digest)
    if index is None:
        index = await storage.find_leaf(digest)
    if index is None:
        raise NotFound(f"no entry with id or leaf hash {ref} is in the log")
    return index


def _b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode("ascii") for h in hashes]


async def get_inclusion_proof(request: web.Request) -> web.Response:
    index = _int_param(request, "index")
    size = _int_param(request, "tree_size")
    if index >= size:
        raise BadRequest(f"index {index} is not below tree_size {size}")
    latest = await _latest(request, size)
    _size_within(latest, "tree_size", size)
    hashes = await _services(request).reader.inclusion_proof(index, size)
    return web.json_response(
        {"leaf_index": index, "tree_size": size, "hashes": _b64(hashes)},
        headers={"Cache-Control": IMMUTABLE},
    )


async def get_consistency_proof(request: web.Request) -> web.Response:
    old = _int_param(request, "old")
    new = _int_param(request, "new")
    if old > new:
        raise BadRequest(f"old size {old} is larger than new size {new}")
    if old == 0:
        raise BadRequest(
            "old size must be at least 1: every tree is consistent with the empty tree, "
            "and RFC 9162 defines no proof for it"
        )
    latest = await _latest(request, new)
    _size_within(latest, "new", new)
    hashes = await _services(request).reader.consistency_proof(old, new)
    return web.json_response(
        {"old_size": old, "new_size": new, "hashes": _b64(hashes)},
        headers={"Cache-Control": IMMUTABLE},
    )


async def get_entries(request: web.Request) -> web.Response:
    svc = _services(request)
    start = _int_param(request, "start")
    limit = svc.config.limits.max_entries_per_request
    end = _int_param(request, "end", default=start + limit)
    if end < start:
        raise BadRequest(f"end {end} is before start {start}")
    latest = await _latest(request)
    end = min(end, start + limit, latest.tree_size)
    entries = await svc.storage.read_entries(start, end) if end > start else []
    return web.json_response(
        {
            "start": start,
            "tree_size": latest.tree_size,
            "entries": [
                {"index": start + i, "entry": base64.b64encode(e).decode("ascii")}
                for i, e in enumerate(entries)
            ],
        },
        headers={"Cache-Control": SHORT},
    )


# -- the firmware ledger: search, vendors, escrow ------------------------------

_CVE = re.compile(r"CVE-[0-9]{4}-[0-9]{4,19}")
_MAX_FILTER = 253


def _text(what: str, value: str, pattern: re.Pattern[str] | None = None) -> str:
    """A name from the request: printable (no control characters, no lone
    surrogates), at most _MAX_FILTER characters, and matching ``pattern``."""
    if (
        len(value) > _MAX_FILTER
        or not value.isprintable()
        or (pattern is not None and not pattern.fullmatch(value))
    ):
        shape = f" matching {pattern.pattern}" if pattern is not None else ""
        raise BadRequest(
            f"{what} must be 1..{_MAX_FILTER} printable characters{shape}, got {_shown(value)}"
        )
    return value


def _filter(request: web.Request, name: str, pattern: re.Pattern[str] | None = None) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    return _text(f"query parameter {name!r}", value, pattern)


def _page(request: web.Request, newest_first: bool = False) -> tuple[int, int]:
    """The cursor (exclusive start index) and the page size of a listing."""
    limit_max = _services(request).config.limits.max_entries_per_request
    limit = _int_param(request, "limit", default=min(100, limit_max))
    if not 1 <= limit <= limit_max:
        raise BadRequest(f"limit must be 1..{limit_max}, got {limit}")
    cursor = request.query.get("cursor")
    if cursor is None or cursor == "":
        return (MAX_UINT63 if newest_first else -1), limit
    if not _DECIMAL.fullmatch(cursor) or int(cursor) > MAX_UINT63:
        raise BadRequest(f"cursor must be a value returned as next_cursor, got {_shown(cursor)}")
    return int(cursor), limit


def _next_cursor(indexes: list[int], limit: int) -> str | None:
    return str(indexes[-1]) if len(indexes) == limit else None


async def get_releases(request: web.Request) -> web.Response:
    svc = _services(request)
    query = ReleaseQuery(
        vendor=_filter(request, "vendor"),
        product=_filter(request, "product"),
        version=_filter(request, "version"),
        image_sha256=_filter(request, "image_sha256", _HEX64),
        cve=_filter(request, "cve", _CVE),
    )
    order = request.query.get("order", "asc")
    if order not in ("asc", "desc"):
        raise BadRequest(
            f"order must be asc (oldest first) or desc (newest first), got {_shown(order)}"
        )
    cursor, limit = _page(request, newest_first=order == "desc")
    found = await svc.storage.search_releases(query, cursor, limit, newest_first=order == "desc")
    revoked = await svc.storage.revocations_of([index for index, _ in found])
    releases = []
    for index, raw in found:
        entry = parse_entry(raw, max_size=1 << 16)
        releases.append(
            {
                "index": index,
                "id": entry.identity.hex(),
                "leaf_hash": entry.leaf_hash.hex(),
                "revoked_by": revoked.get(index, []),
                "release": entry_json(entry.body),
            }
        )
    return web.json_response(
        {"releases": releases, "next_cursor": _next_cursor([i for i, _ in found], limit)},
        headers={"Cache-Control": SHORT},
    )


async def get_revocations(request: web.Request) -> web.Response:
    """The revocations of one release, named by its id (or leaf hash), with their entries."""
    storage = _services(request).storage
    ref = request.match_info["release"]
    if not _HEX64.fullmatch(ref):
        raise BadRequest(
            f"expected a release's id or leaf hash (64 lowercase hex digits), got {_shown(ref)}"
        )
    index = await _find_entry(storage, ref)
    revocations = (await storage.revocations_of([index])).get(index, [])
    entries = [(i, (await storage.read_entries(i, i + 1))[0]) for i in revocations]
    return web.json_response(
        {
            "release_index": index,
            "revocations": [
                {"index": i, "entry": base64.b64encode(e).decode("ascii")} for i, e in entries
            ],
        },
        headers={"Cache-Control": SHORT},
    )


def _key_set_json(row: KeySetRow) -> dict[str, object]:
    return {
        "vendor": row.vendor,
        "index": row.index,
        "serial": row.serial,
        "keys": list(row.keys),
        "threshold": row.threshold,
    }


async def get_vendors(request: web.Request) -> web.Response:
    """Every vendor key set the log holds (admissions and rotations), in log order."""
    after, limit = _page(request)
    rows = await _services(request).storage.key_history(None, after, limit)
    return web.json_response(
        {
            "key_sets": [_key_set_json(r) for r in rows],
            "next_cursor": _next_cursor([r.index for r in rows], limit),
        },
        headers={"Cache-Control": SHORT},
    )


async def get_vendor(request: web.Request) -> web.Response:
    """One vendor: its current key set and the whole history of its key sets."""
    vendor = _text("the vendor name", request.match_info["vendor"])
    storage = _services(request).storage
    history: list[KeySetRow] = []
    while True:
        page = await storage.key_history(vendor, history[-1].index if history else -1, 1000)
        history += page
        if len(page) < 1000:
            break
    if not history:
        raise NotFound(f"vendor {vendor!r} is not admitted to this log")
    current = history[-1]
    return web.json_response(
        {
            "vendor": vendor,
            "keys": list(current.keys),
            "threshold": current.threshold,
            "serial": current.serial,
            "since_index": current.index,
            "history": [_key_set_json(r) for r in history],
        },
        headers={"Cache-Control": SHORT},
    )


def _image_digest(request: web.Request) -> str:
    digest = request.match_info["digest"]
    if not _HEX64.fullmatch(digest):
        raise BadRequest(f"expected a 64-digit lowercase hex SHA-256 digest, got {_shown(digest)}")
    return digest


async def put_image(request: web.Request) -> web.Response:
    svc = _services(request)
    digest = _image_digest(request)
    sizes = await svc.storage.image_sizes(digest)
    cap = svc.config.limits.max_image_size
    if sizes and min(sizes) > cap:
        raise ImageTooLarge(f"image is {min(sizes)} bytes: escrow holds at most {cap}")
    sizes = {s for s in sizes if s <= cap}  # a release naming a larger size lifts no limit
    if request.content_length is not None and sizes and request.content_length not in sizes:
        want = " or ".join(str(s) for s in sorted(sizes))
        raise ImageRejected(
            f"image sha256:{digest} is {want} bytes in its release, "
            f"the upload is {request.content_length}"
        )
    body = _BodyChunks(request, svc.config.http, max(sizes, default=0))
    created = await svc.images.put(digest, sizes, body)
    return web.json_response({"sha256": digest, "stored": True}, status=201 if created else 200)


async def get_image(request: web.Request) -> web.StreamResponse:
    digest = _image_digest(request)
    try:
        path = await _services(request).images.verified_path(digest)
    except FileNotFoundError as exc:
        raise NotFound(str(exc)) from exc
    checksum = base64.b64encode(bytes.fromhex(digest)).decode("ascii")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/octet-stream",
            "Cache-Control": IMMUTABLE,
            "Repr-Digest": f"sha-256=:{checksum}:",
        },
    )


async def get_log(request: web.Request) -> web.Response:
    """Who this log is: its origin, its verifier key, the operator keys it trusts to
    admit vendors, and its witness policy text (null when it collects no cosignatures)."""
    return web.json_response(request.app[LOG_INFO], headers={"Cache-Control": SHORT})


# -- the pages for people (firmlog.server.page) --------------------------------

RECENT_RELEASES = 25
PageHandler = Callable[[web.Request, page.Site], Awaitable[web.Response]]
Handler = Callable[[web.Request], Awaitable[web.Response]]


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        headers={"Cache-Control": SHORT, **page.HEADERS},
    )


def _html_page(
    handler: PageHandler, depth: int = 0
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``handler`` for a page ``depth`` levels below the root; bad input and
    missing things are answered with an HTML page (their status as in the JSON API)."""

    async def handle(request: web.Request) -> web.Response:
        site = page.Site(request.app[KEYS].log.name, "../" * depth)
        try:
            return await handler(request, site)
        except (BadRequest, NotFound) as exc:
            row = answer(exc)
            return _html(page.render_error(site, row.status, row.message_of(exc)), row.status)

    return handle


async def get_page(request: web.Request, site: page.Site) -> web.Response:
    svc = _services(request)
    latest = await svc.reader.latest()
    releases = await page.list_releases(
        svc.storage, ReleaseQuery(), MAX_UINT63, RECENT_RELEASES, newest_first=True
    )
    key_sets = await svc.storage.key_history(None, -1, 1000)
    return _html(
        page.render_home(
            site,
            latest.note if latest else None,
            latest.tree_size if latest else 0,
            releases,
            key_sets,
        )
    )


async def get_search_page(request: web.Request, site: page.Site) -> web.Response:
    form = page.SearchForm.of(request.query)
    try:
        query = ReleaseQuery(
            vendor=_text("the vendor", form.vendor) if form.vendor else None,
            product=_text("the product", form.product) if form.product else None,
            version=_text("the version", form.version) if form.version else None,
            image_sha256=(
                _text("the image SHA-256", form.image_sha256, _HEX64) if form.image_sha256 else None
            ),
            cve=_text("the CVE id", form.cve, _CVE) if form.cve else None,
        )
        if form.order not in ("asc", "desc"):
            raise BadRequest(f"order must be asc or desc, got {_shown(form.order)}")
        cursor, limit = _page(request, newest_first=form.order == "desc")
    except BadRequest as exc:
        return _html(page.render_search(site, form, None, None, str(exc)), 400)
    found = await page.list_releases(
        _services(request).storage, query, cursor, limit, newest_first=form.order == "desc"
    )
    next_cursor = found[-1].index if len(found) == limit else None
    return _html(page.render_search(site, form, found, next_cursor))


async def _published_entry(request: web.Request) -> page.LoggedEntry:
    """The entry ``{ref}`` names (index, id or leaf hash), if a published checkpoint has it."""
    svc = _services(request)
    index = await _entry_index(svc.storage, request.match_info["ref"])
    latest = await svc.reader.latest()
    size = latest.tree_size if latest else 0
    logged = await page.read_entry(svc.storage, index) if index < size else None
    if logged is None:
        raise NotFound(f"no entry {index} in the log: its latest checkpoint has {size} entries")
    return logged


async def get_entry_page(request: web.Request, site: page.Site) -> web.Response:
    return _html(page.render_entry(site, await _published_entry(request)))


async def get_entry_note(request: web.Request, site: page.Site) -> web.Response:
    """The entry's signed note, to save as a file."""
    logged = await _published_entry(request)
    return web.Response(
        body=logged.entry.raw,
        content_type="text/plain",
        charset="utf-8",
        headers={
            "Cache-Control": IMMUTABLE,
            "Content-Disposition": f'attachment; filename="firmlog-entry-{logged.index}.note"',
            **page.HEADERS,
        },
    )


async def get_vendor_page(request: web.Request, site: page.Site) -> web.Response:
    vendor = _text("the vendor name", request.match_info["vendor"])
    storage = _services(request).storage
    history = await page.key_history(storage, vendor)
    if not history:
        raise NotFound(f"vendor {vendor!r} is not admitted to this log")
    releases = await page.list_releases(
        storage, ReleaseQuery(vendor=vendor), MAX_UINT63, RECENT_RELEASES, newest_first=True
    )
    return _html(page.render_vendor(site, vendor, history, releases))


async def get_keys_page(request: web.Request, site: page.Site) -> web.Response:
    latest = await _services(request).reader.latest()
    info: dict[str, object] = request.app[LOG_INFO]
    return _html(page.render_keys(site, info, latest.note if latest else None))


async def get_check_page(request: web.Request, site: page.Site) -> web.Response:
    return _html(page.render_check(site))


async def get_static(request: web.Request) -> web.Response:
    """The pages' script and style (package data)."""
    asset = page.static_assets().get(request.match_info["name"])
    if asset is None:
        raise NotFound(f"no static file {_shown(request.match_info['name'])}")
    body, content_type = asset
    return web.Response(
        body=body,
        headers={
            "Content-Type": f"{content_type}; charset=utf-8",
            "Cache-Control": "public, max-age=300",
            "X-Content-Type-Options": "nosniff",
        },
    )


# -- operations -------------------------------------------------------------


async def get_healthz(request: web.Request) -> web.Response:
    """Ok only if the database answers and could take a write now; 503 naming the problem.
    ``pid`` is the server process that answered (with ``--workers``, one of several)."""
    svc = _services(request)
    try:
        await svc.storage.check_writable()
    except StorageUnavailable as exc:
        log.warning("health check failed", error=str(exc))
        return web.json_response(
            {
                "status": "unavailable",
                "error": str(exc),
                "kind": "StorageUnavailable",
                "pid": os.getpid(),
            },
            status=503,
            headers={"Retry-After": "5", "Cache-Control": NO_STORE},
        )
    latest = await svc.reader.latest()
    return web.json_response(
        {"status": "ok", "tree_size": latest.tree_size if latest else 0, "pid": os.getpid()},
        headers={"Cache-Control": NO_STORE},
    )


# -- the application --------------------------------------------------------


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    config, keys, metrics = app[CONFIG], app[KEYS], app[METRICS]
    host = app.get(HOST)  # in a worker of serve --workers N
    storage = open_storage(config.database_url)
    await storage.open()
    images = ImageStore(config.escrow_path)
    images.open()
    witnesses: WitnessCollector | None = None
    witness_session: ClientSession | None = None
    if config.witness_policy:
        witness_session = ClientSession()

        async def consistency(old: int, new: int) -> list[bytes]:
            return await reader.consistency_proof(old, new)  # the reader below

        witnesses = WitnessCollector(
            load_witness_policy(Path(config.witness_policy)),
            keys.log.verifier,
            witness_session,
            consistency,
            timeout=config.witness_timeout,
            metrics=metrics,
            host=host,
        )
    reader = LogReader(
        storage,
        cache_tiles=config.limits.tile_cache_tiles,
        accept=witnesses.cosigned if witnesses is not None else None,
        host=host.board if host is not None else None,
    )
    operators = list(keys.operators)
    vendor_keys = VendorKeyCache()
    static: StaticPublisher | None = None
    if config.publish_dir:
        static = StaticPublisher(Path(config.publish_dir), storage, reader.latest, metrics)
        app[PUBLISHER] = static
    sequencer = Sequencer(
        storage,
        reader,
        keys.log,
        config.sequencer,
        metrics,
        ledger=LedgerGate(operators, vendor_keys),
        checkpoint_file=config.data_dir / CHECKPOINT_FILE,
        witnesses=witnesses,
        on_public=static.offer if static is not None else None,
    )
    try:
        await sequencer.initialize()  # refuses a database that holds another log
    except BaseException:
        if witness_session is not None:
            await witness_session.close()
        await storage.close()
        raise
    latest = await reader.latest()
    metrics.tree_size.set(latest.tree_size if latest else 0)
    metrics.checkpoint_age.function = reader.checkpoint_age
    task = asyncio.create_task(sequencer.run(), name="firmlog-sequencer")
    # Catches the directory up with the published checkpoint while the log serves.
    publishing = asyncio.create_task(static.run(), name="firmlog-publish-dir") if static else None
    # One process per host fills in the tile summaries a log upgraded in place lacks.
    summarizing = (
        asyncio.create_task(summarize_stored_tiles(storage), name="firmlog-summarize-tiles")
        if host is None or host.cosigner
        else None
    )
    app[SERVICES] = Services(
        config=config,
        storage=storage,
        reader=reader,
        sequencer=sequencer,
        acceptance=Acceptance(storage, operators, vendor_keys, config.limits.max_entry_size),
        metrics=metrics,
        images=images,
    )
    log.info("log started", origin=keys.log.name, tree_size=latest.tree_size if latest else 0)
    try:
        yield
    finally:
        if summarizing is not None:
            summarizing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await summarizing
        await sequencer.stop()
        try:
            await asyncio.wait_for(task, timeout=30)
        finally:
            if static is not None and publishing is not None:
                static.stop()  # the last checkpoint too, if it can be written in time
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(publishing, timeout=30)
            if witness_session is not None:
                await witness_session.close()
            await storage.close()
            log.info("log stopped")


async def _worker_metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Listens for the other workers, which ask for this one's metrics."""
    worker_metrics = app[WORKER_METRICS]
    await worker_metrics.start()
    try:
        yield
    finally:
        await worker_metrics.stop()


async def _log_info_ctx(app: web.Application) -> AsyncIterator[None]:
    """Reads the witness policy file once, for GET /v1/log."""
    config, keys = app[CONFIG], app[KEYS]
    policy = None
    if config.witness_policy:
        policy = Path(config.witness_policy).read_bytes().decode("utf-8", "replace")
    info: dict[str, object] = {
        "origin": keys.log.name,
        "log_key": keys.log.verifier.vkey,
        "operator_keys": [k.vkey for k in keys.operators],
        "witness_policy": policy,
    }
    app[LOG_INFO] = info
    yield


def make_app(
    config: ServerConfig,
    log_key: Ed25519Signer,
    operator_keys: Sequence[Ed25519Verifier],
    *,
    host: WorkerHost | None = None,
) -> web.Application:
    """The log server application. Does no I/O until it is started.

    ``operator_keys`` are the operator's verifier keys: the server never needs
    the operator's signer key. ``host``: in a worker of ``serve --workers N``,
    what the workers of this host share (firmlog.server.reader)."""
    if not operator_keys:
        raise ValueError("no operator key: a log needs at least one to admit vendors")
    if log_key.name != config.origin:
        raise ValueError(
            f"the log key is named {log_key.name!r} but the origin is {config.origin!r}"
        )
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware],
        client_max_size=config.limits.max_entry_size + 1,
        handler_args=protocol_options(config.http),  # for a plain AppRunner too
    )
    app[CONFIG] = config
    app[KEYS] = LogKeys(log=log_key, operators=tuple(operator_keys))
    app[METRICS] = metrics = ServerMetrics()
    app[REQUEST_METRICS] = _RequestMetrics(metrics)
    exposition = None
    if host is not None:
        app[HOST] = host
        app[WORKER_METRICS] = worker_metrics = WorkerMetrics(metrics, host)
        app.cleanup_ctx.append(_worker_metrics_ctx)
        exposition = worker_metrics.exposition
    app.cleanup_ctx.append(_services_ctx)
    app.cleanup_ctx.append(_log_info_ctx)
    r = app.router
    r.add_post("/v1/entries", post_entry)
    r.add_get("/checkpoint", get_checkpoint)
    r.add_get("/tile/{path:.+}", get_tile)
    r.add_get("/v1/bundle/{ref}", get_bundle)
    r.add_get("/v1/proof/inclusion", get_inclusion_proof)
    r.add_get("/v1/proof/consistency", get_consistency_proof)
    r.add_get("/v1/entries", get_entries)
    r.add_get("/v1/log", get_log)
    r.add_get("/v1/releases", get_releases)
    r.add_get("/v1/revocations/{release}", get_revocations)
    r.add_get("/v1/vendors", get_vendors)
    r.add_get("/v1/vendors/{vendor}", get_vendor)
    r.add_put("/v1/images/sha256/{digest}", put_image)
    r.add_get("/v1/images/sha256/{digest}", get_image)
    r.add_get("/", _html_page(get_page))
    r.add_get("/search", _html_page(get_search_page))
    r.add_get("/check", _html_page(get_check_page))
    r.add_get("/keys", _html_page(get_keys_page))
    r.add_get("/entry/{ref}", _html_page(get_entry_page, depth=1))
    r.add_get("/entry/{ref}/note", _html_page(get_entry_note, depth=2))
    r.add_get("/vendor/{vendor}", _html_page(get_vendor_page, depth=1))
    r.add_get("/static/{name}", get_static)
    r.add_get("/healthz", get_healthz)
    r.add_get("/metrics", metrics_handler(metrics, exposition))
    return app
