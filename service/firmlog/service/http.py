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

:func:`serve` runs on uvloop where it is installed (a dependency of the
server and the monitor on CPython, Linux and macOS) and on asyncio's own
loop elsewhere or when asked (``event_loop``; the programs' ``--event-loop``).
Nothing here depends on the order in which a loop delivers a connection's
events: the tests of these connections run on both.
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
    "EVENT_LOOPS",
    "BodyIncomplete",
    "BodyTimeout",
    "BodyTooLarge",
    "EventLoopUnavailable",
    "HTTPConfig",
    "ServiceProtocol",
    "ServiceRunner",
    "default_event_loop",
    "event_loop_factory",
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
    content = request.content
    if content.is_eof():  # it came whole with the head: nothing to wait for, no deadline
        try:
            whole = content.read_nowait()
        except (ConnectionResetError, web.RequestPayloadError) as exc:
            raise BodyIncomplete(
                f"the request body ended early after 0 bytes ({type(exc).__name__})"
            ) from exc
        if len(whole) > limit:
            raise BodyTooLarge(f"{what} is more than {limit} bytes: the limit is {limit}")
        return whole
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while chunk := await content.read(limit + 1 - len(body)):
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

    The head deadline follows the connection's own events, so it is the same
    under any event loop (asyncio's or uvloop, whichever order they deliver
    ``connection_made``, the first bytes and the request task in). A
    connection is *between requests* while every head it sent has been
    answered (heads parsed == responses finished) and the last body is
    complete: bytes that arrive then are a request head. If the segment that
    brings its first byte does not complete it, the deadline is armed at that
    moment plus ``header_timeout``; it is cancelled as soon as the parser
    completes a head (so a head that comes in one segment costs no timer).
    Bytes that arrive after a body while its request is still being answered
    are a pipelined head: its deadline starts when that response is finished.
    The first bytes of a head that come in the same segment as the end of the
    request before it cannot be told apart from that request (the parser keeps
    them): the head's next segment starts its clock, or, if none comes, the
    idle timeout closes the connection.

    It relies on two aiohttp internals: ``_request_count`` (heads parsed on
    this connection, incremented as the parser completes each) and
    ``_messages`` (the parsed requests not yet handled, newest last).
    """

    def __init__(
        self, manager: web.Server, *, header_timeout: float, name: str, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._name = name
        self._head_timer: asyncio.TimerHandle | None = None
        self._answered = 0  # responses finished on this connection
        self._body: Any = None  # the payload (StreamReader) of the last head parsed
        self._pipelined = False  # bytes of a head came while a request was answered

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count
        body = self._body
        body_done = body is None or body.is_eof()
        super().data_received(data)
        if self._request_count != parsed:  # the parser completed a head (or more)
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            self._pipelined = False
            if self._messages:
                self._body = self._messages[-1][1]
            return
        if not data or not body_done:  # a body's bytes (after it, maybe a head's first ones)
            return
        if self._answered != parsed:  # a request is being answered: its response comes first
            self._pipelined = True
        elif self._head_timer is None and self.transport is not None:
            self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        if self._force_close or self._close:  # closing: nothing more is read
            return
        self._head_timer = self._loop.call_at(
            self._loop.time() + self._header_timeout, self._head_timed_out
        )

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._body = None
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or self._answered != self._request_count:
            return  # gone, or the head came meanwhile (its request is being answered)
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
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered += 1
            if self._pipelined and self._answered == self._request_count:
                self._pipelined = False
                if self._head_timer is None and self.transport is not None:
                    self._arm_head_deadline()  # the pipelined head's clock starts now

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


EVENT_LOOPS = ("uvloop", "asyncio")
"""The event loops :func:`serve` runs on: uvloop (libuv, where it is installed) or
asyncio's own."""


class EventLoopUnavailable(ValueError):
    """The event loop asked for is unknown, or not installed here; the message says
    what to do."""


def default_event_loop() -> str:
    """uvloop where it is installed (CPython on Linux and macOS), else asyncio's."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def event_loop_factory(event_loop: str | None = None) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes the event loop named ``event_loop`` (one of :data:`EVENT_LOOPS`;
    None: :func:`default_event_loop`). EventLoopUnavailable, saying what to do, for an
    unknown name or uvloop where it is not installed."""
    name = default_event_loop() if event_loop is None else event_loop
    if name == "asyncio":
        return asyncio.new_event_loop
    if name == "uvloop":
        try:
            import uvloop
        except ImportError as exc:
            raise EventLoopUnavailable(
                "the uvloop event loop is not installed here (it has wheels for CPython on "
                "Linux and macOS); install uvloop, or use the asyncio event loop"
            ) from exc
        return uvloop.new_event_loop
    raise EventLoopUnavailable(
        f"unknown event loop {name!r}: expected one of {', '.join(EVENT_LOOPS)}"
    )


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
    event_loop: str | None = None,
) -> None:
    """``web.run_app`` with :class:`ServiceRunner`: serve ``app`` on ``host:port``, or on
    the bound sockets ``sock``, until SIGINT or SIGTERM, then stop it gracefully.
    ``name`` is the service ("the log server"), as answers to a crash name it.

    ``on_listening`` is called (with a line naming the addresses) once the app
    has started and every socket listens. ``event_loop`` names the loop it runs
    on (:data:`EVENT_LOOPS`; None: uvloop where it is installed, else asyncio's):
    EventLoopUnavailable if it cannot be had, before anything starts.
    """
    factory = event_loop_factory(event_loop)
    # asyncio's loop as asyncio.run makes it (also the thread's current loop); uvloop's
    # through its factory.
    default = factory is asyncio.new_event_loop
    with asyncio.Runner(loop_factory=None if default else factory) as runner:
        runner.run(_serve(app, http, host, port, sock, on_listening, shutdown_timeout, name))
