"""Request ids: every request to a service has one, in its answer and its log lines.

A client (or a proxy in front) may name its request with ``X-Request-Id``;
the id is kept if it is 1 to 128 visible ASCII characters (no spaces, no
control characters: it goes into log lines), else the service makes one up.
:func:`request_id_middleware`, the outermost middleware of both services,
echoes it in the answer's ``X-Request-Id`` and binds it, with the client's
address, into structlog's context variables while the request is handled, so
every line logged for the request carries ``request_id`` and ``client``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from aiohttp import web
from structlog.contextvars import bind_contextvars, reset_contextvars

__all__ = ["REQUEST_ID_HEADER", "request_id", "request_id_middleware"]

REQUEST_ID_HEADER = "X-Request-Id"
MAX_REQUEST_ID = 128
_VALID = re.compile(rf"[!-~]{{1,{MAX_REQUEST_ID}}}")


def _structlog_vars() -> tuple[ContextVar[Any], ContextVar[Any]]:
    """The context variables structlog's ``bind_contextvars(request_id=..., client=...)``
    sets (a token's ``var``): set directly, per request, with no lookup by name."""
    tokens = bind_contextvars(request_id=None, client=None)
    reset_contextvars(**tokens)
    return tokens["request_id"].var, tokens["client"].var


_REQUEST_ID_VAR, _CLIENT_VAR = _structlog_vars()
_random_bits = random.getrandbits  # reseeded in every forked worker (random's own fork hook)


def request_id(request: web.BaseRequest) -> str:
    """The request's ``X-Request-Id`` if it is a valid one, else a new random id
    (32 hex digits: 128 random bits, unique, not secret: it only names a request)."""
    given = request.headers.get(REQUEST_ID_HEADER)
    if given is not None and _VALID.fullmatch(given):
        return given
    return f"{_random_bits(128):032x}"


@web.middleware
async def request_id_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Give the request its id: in the answer's header, and in what is logged meanwhile."""
    rid = request_id(request)
    rid_token = _REQUEST_ID_VAR.set(rid)
    client_token = _CLIENT_VAR.set(request.remote)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[REQUEST_ID_HEADER] = rid
        raise
    finally:
        _CLIENT_VAR.reset(client_token)
        _REQUEST_ID_VAR.reset(rid_token)
    if not response.prepared:  # a handler that streams sent its headers already
        response.headers[REQUEST_ID_HEADER] = rid
    return response
