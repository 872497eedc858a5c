"""HTTP/1.1 for firmlog's services: what happens before a handler runs, and serving.

The log server and the monitor run their aiohttp applications with
:class:`ServiceRunner` (or :func:`serve`), whose connections are
:class:`ServiceProtocol`:

- request bodies are never decompressed (``auto_decompress=False``): nothing
  is inflated on the event loop, not even while the rest of a refused body is
  drained;
- a request line and headers must arrive within ``http.header_timeout`` of
  their first byte, or the client gets 408 and the connection is closed
  (slowloris); a connection waiting for a request is closed after
  ``http.idle_timeout`` (aiohttp's keep-alive timer);
- a malformed request (request line, oversized line or header, chunked
  framing) is answered in JSON like every other error, without echoing the
  request, and logged in one line without a traceback.

Body timeouts belong to the handlers, which know how large a body may be:
:func:`read_whole` reads a body whole within a deadline. The same connection
options reach a plain ``web.AppRunner`` through the app's ``handler_args``
(:func:`protocol_options`), so even that never inflates a body.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
)

from firmlog.service.request_ids import REQUEST_ID_HEADER

__all__ = [
    "BodyIncomplete",
    "BodyTimeout",
    "BodyTooLarge",
    "HTTPConfig",
    "ServiceProtocol",
    "ServiceRunner",
    "json_error_bytes",
    "protocol_options",
    "read_whole",
    "serve",
]

log = structlog.get_logger("firmlog.http")

MAX_LINE_SIZE = 8190  # request line, bytes
MAX_FIELD_SIZE = 8190  # one header line, bytes
MAX_HEADERS = 100
LINGER_S = 2.0  # how long the rest of a refused body is read (and dropped) before closing

_MALFORMED: tuple[tuple[type[Exception], str], ...] = (
    (LineTooLong, f"a request line or header is longer than {MAX_LINE_SIZE} bytes"),
    (BadHttpMethod, "not an HTTP/1.1 request: expected a method such as GET"),
    (BadStatusLine, "malformed request line: expected METHOD SP target SP HTTP/1.1"),
    (InvalidURLError, "malformed request target"),
    (InvalidHeader, "malformed header line: expected NAME: value"),
    (PayloadEncodingError, "malformed body framing (Transfer-Encoding or Content-Length)"),
)


@dataclass(frozen=True, slots=True)
class HTTPConfig:
    """How long a client may take, in seconds (slowloris and slow bodies).

    A request's line and headers must arrive within ``header_timeout`` of
    their first byte, or the service answers 408 and closes the connection; a
    body must arrive whole within ``body_timeout``; an upload streamed by a
    handler may not pause longer than that, and must arrive whole within
    ``body_timeout`` plus its size at ``min_upload_rate`` bytes per second
    (408); a connection with no request under way is closed after
    ``idle_timeout``.
    """

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 75.0
    min_upload_rate: int = 65536


class BodyTooLarge(ValueError):
    """A request body larger than its handler's limit."""


class BodyTimeout(TimeoutError):
    """A request body that did not arrive within its deadline."""


class BodyIncomplete(ConnectionError):
    """A request body that ended before its end (the client went away, or broken framing)."""


async def read_whole(request: web.BaseRequest, limit: int, timeout: float, what: str) -> bytes:
    """The whole request body, however many segments it arrives in.

    BodyTooLarge past ``limit`` bytes (Content-Length or counted), BodyTimeout
    if it has not all arrived within ``timeout`` seconds, BodyIncomplete if it
    ends early. ``what`` names the body in the messages ("entry").
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"{what} is {declared} bytes: the limit is {limit}")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.read(limit + 1 - len(body)):
                body += chunk
                if len(body) > limit:
                    raise BodyTooLarge(f"{what} is more than {limit} bytes: the limit is {limit}")
    except TimeoutError:
        raise BodyTimeout(
            f"the request body did not arrive within {timeout} s ({len(body)} bytes came)"
        ) from None
    except (ConnectionResetError, web.RequestPayloadError) as exc:
        raise BodyIncomplete(
            f"the request body ended early after {len(body)} bytes ({type(exc).__name__})"
        ) from exc
    return bytes(body)


def protocol_options(http: HTTPConfig) -> dict[str, Any]:
    """Arguments of aiohttp's request handler (the app's ``handler_args``)."""
    return {
        "auto_decompress": False,
        "keepalive_timeout": http.idle_timeout,
        "lingering_time": min(LINGER_S, http.body_timeout),
        "max_line_size": MAX_LINE_SIZE,
        "max_field_size": MAX_FIELD_SIZE,
        "max_headers": MAX_HEADERS,
    }


def json_error_bytes(status: int, reason: str, message: str, kind: str) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection, for writing raw."""
    body = json.dumps({"error": message, "kind": kind}).encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class ServiceProtocol(web.RequestHandler):
    """aiohttp's HTTP/1.1 connection with a deadline for request heads and JSON errors.

    It relies on one aiohttp internal, the one aiohttp's own keep-alive timer
    tests: ``_waiter`` is pending exactly while the connection waits for a
    complete request head.
    """

    def __init__(
        self, manager: web.Server, *, header_timeout: float, name: str, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._name = name
        self._head_timer: asyncio.TimerHandle | None = None

    def _awaiting_head(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def data_received(self, data: bytes) -> None:
        if data and self._head_timer is None and self._awaiting_head():
            self._head_timer = asyncio.get_running_loop().call_later(
                self._header_timeout, self._head_timed_out
            )
        super().data_received(data)
        if self._head_timer is not None and not self._awaiting_head():
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or not self._awaiting_head():
            return
        log.info(
            "request",
            status=408,
            kind="HeaderTimeout",
            peer=str(transport.get_extra_info("peername")),
        )
        transport.write(
            json_error_bytes(
                408,
                "Request Timeout",
                f"the request line and headers did not arrive within {self._header_timeout} s",
                "HeaderTimeout",
            )
        )
        self.force_close()

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        # aiohttp answers some errors before the app's middleware sees the request
        # (an Expect it does not know: 417 echoing the header): JSON for those too.
        # Those are HTTPExceptions in plain text; an app's own answers in text (a
        # tlog-witness 409 in text/x.tlog.size) are left as they are.
        if (
            isinstance(resp, web.HTTPException)
            and resp.status >= 400
            and not resp.prepared
            and resp.content_type != "application/json"
        ):
            kind = type(resp).__name__ if isinstance(resp, web.HTTPException) else "HTTPError"
            answer = web.json_response({"error": resp.reason, "kind": kind}, status=resp.status)
            if REQUEST_ID_HEADER in resp.headers:  # set by the app's middleware
                answer.headers[REQUEST_ID_HEADER] = resp.headers[REQUEST_ID_HEADER]
            if resp.keep_alive is False:
                answer.force_close()
            resp = answer
        return await super().finish_response(request, resp, start_time)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request the app never saw: a malformed one, or a crash
        outside the app's error middleware. Never echoes the request."""
        if request.writer.output_size > 0:
            raise ConnectionError("a response was under way: no error response can follow")
        if status >= 500:
            log.error("request failed outside the app", status=status, exc_info=exc)
            text, kind = f"the {self._name} failed to handle this request", "InternalError"
        else:
            kind = type(exc).__name__ if exc is not None else "BadRequest"
            text = next(
                (t for cls, t in _MALFORMED if isinstance(exc, cls)), "malformed HTTP request"
            )
            log.info("request", status=status, kind=kind, peer=request.remote)
        response = web.json_response({"error": text, "kind": kind}, status=status)
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's connection factory, making :class:`ServiceProtocol` connections."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        request_factory: Any,
        handler_cancellation: bool,
        loop: asyncio.AbstractEventLoop,
        header_timeout: float,
        name: str,
        options: dict[str, Any],
    ) -> None:
        super().__init__(
            handler,
            request_factory=request_factory,
            handler_cancellation=handler_cancellation,
            loop=loop,
            **options,
        )
        self._protocol_loop = loop
        self._protocol_options = options
        self._header_timeout = header_timeout
        self._name = name

    def __call__(self) -> ServiceProtocol:
        return ServiceProtocol(
            self,
            loop=self._protocol_loop,
            header_timeout=self._header_timeout,
            name=self._name,
            **self._protocol_options,
        )


class ServiceRunner(web.AppRunner):
    """A ``web.AppRunner`` whose connections are :class:`ServiceProtocol`.

    ``name`` says who failed in the answer to a request that crashed outside
    the app ("the log server failed to handle this request").
    """

    def __init__(self, app: web.Application, http: HTTPConfig, *, name: str, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._http = http
        self._name = name

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # starts the application
        return _Server(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            header_timeout=self._http.header_timeout,
            name=self._name,
            options={**protocol_options(self._http), "access_log": None},
        )


async def _serve(
    app: web.Application,
    http: HTTPConfig,
    host: str | None,
    port: int | None,
    sock: Sequence[socket.socket],
    on_listening: Callable[[str], None] | None,
    shutdown_timeout: float,
    name: str,
) -> None:
    runner = ServiceRunner(app, http, name=name, shutdown_timeout=shutdown_timeout)
    await runner.setup()  # starts the app: its errors propagate from here
    try:
        sites: list[web.BaseSite] = [web.SockSite(runner, s) for s in sock]
        if not sites:
            sites.append(web.TCPSite(runner, host, port))
        for site in sites:
            await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if on_listening is not None:
            on_listening("listening on " + ", ".join(site.name for site in sites))
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(
    app: web.Application,
    http: HTTPConfig,
    *,
    name: str,
    host: str | None = None,
    port: int | None = None,
    sock: Sequence[socket.socket] = (),
    on_listening: Callable[[str], None] | None = None,
    shutdown_timeout: float = 30.0,
) -> None:
    """``web.run_app`` with :class:`ServiceRunner`: serve ``app`` on ``host:port``, or on
    the bound sockets ``sock``, until SIGINT or SIGTERM, then stop it gracefully.
    ``name`` is the service ("the log server"), as answers to a crash name it.

    ``on_listening`` is called (with a line naming the addresses) once the app
    has started and every socket listens.
    """
    asyncio.run(_serve(app, http, host, port, sock, on_listening, shutdown_timeout, name))
