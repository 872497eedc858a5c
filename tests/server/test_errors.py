"""The server's errors (firmlog.server.errors): every class in the table of answers is
answered over real HTTP as its tree documents, and anything else is a 500 that tells
the client nothing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from aiohttp import ClientSession, web

from firmlog.client import errors as client_errors
from firmlog.client.errors import (
    EntryFormatError,
    EntryPolicyError,
    FirmlogError,
    FormatError,
    SignatureError,
    SignatureLineError,
    VerificationError,
)
from firmlog.server import errors
from firmlog.server.app import METRICS, error_middleware
from firmlog.server.errors import (
    ANSWERS,
    BadRequest,
    BodyIncomplete,
    BodyTimeout,
    EntryTooLarge,
    ImageCorrupt,
    ImageNotLogged,
    ImageRejected,
    ImageTooLarge,
    LogServerError,
    NotFound,
    PoolFull,
    ProofUnavailable,
    SequencerStopped,
    SigningRefused,
    StartupError,
    StorageUnavailable,
    Unavailable,
    answer,
)
from firmlog.server.metrics import ServerMetrics

DETAIL = "detail-7f3a"  # in every error's message: shown to the client, or not


@dataclass(frozen=True)
class Wire:
    """What a client receives: the API's contract, as the README documents it."""

    status: int
    kind: str
    retry_after: str | None = None
    shown: bool = True  # the error's own message is the body's "error"
    closes: bool = False


WIRE: list[tuple[Exception, Wire]] = [
    (EntryTooLarge(DETAIL), Wire(413, "EntryTooLarge")),
    (BadRequest(DETAIL), Wire(400, "BadRequest")),
    (BodyIncomplete(DETAIL), Wire(400, "BodyIncomplete")),
    (EntryFormatError(DETAIL), Wire(400, "EntryFormatError")),
    (SignatureLineError(DETAIL), Wire(400, "SignatureLineError")),
    (FormatError(DETAIL), Wire(400, "FormatError")),
    (SignatureError(DETAIL), Wire(403, "SignatureError")),
    (EntryPolicyError(DETAIL), Wire(403, "EntryPolicyError")),
    (NotFound(DETAIL), Wire(404, "NotFound")),
    (ImageNotLogged(DETAIL), Wire(404, "NotFound")),
    (ImageRejected(DETAIL), Wire(400, "ImageRejected")),
    (ImageTooLarge(DETAIL), Wire(413, "ImageTooLarge")),
    (ImageCorrupt(DETAIL), Wire(500, "ImageCorrupt")),
    (BodyTimeout(DETAIL), Wire(408, "BodyTimeout", closes=True)),
    (SigningRefused(DETAIL, b"r", b"s", ()), Wire(500, "SigningRefused", shown=False)),
    (PoolFull(7.9), Wire(503, "PoolFull", "7")),
    (ProofUnavailable(3, bytes(32)), Wire(503, "ProofUnavailable", "1")),
    (SequencerStopped(DETAIL), Wire(503, "ShuttingDown", "5")),
    (StorageUnavailable(DETAIL), Wire(503, "StorageUnavailable", "5", shown=False)),
    (Unavailable(DETAIL), Wire(503, "Unavailable", "5")),
    (VerificationError(DETAIL), Wire(422, "VerificationError")),
    (FirmlogError(DETAIL), Wire(422, "FirmlogError")),
    (LogServerError(DETAIL), Wire(500, "InternalError", shown=False)),
    (KeyError(DETAIL), Wire(500, "InternalError", shown=False)),
]


@pytest.fixture
async def raising() -> AsyncIterator[Callable[[Exception], str]]:
    """A URL on a loopback server, behind the log's error middleware, whose handler
    raises the given error."""
    to_raise: dict[str, Exception] = {}

    async def handler(request: web.Request) -> web.Response:
        raise to_raise["error"]

    app = web.Application(middlewares=[error_middleware])
    app[METRICS] = ServerMetrics()
    app.router.add_get("/raise", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    def url(exc: Exception) -> str:
        to_raise["error"] = exc
        return f"http://127.0.0.1:{port}/raise"

    try:
        yield url
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("exc", "wire"), WIRE, ids=[type(e).__name__ for e, _ in WIRE])
async def test_each_error_is_answered_as_the_api_documents(
    raising: Callable[[Exception], str], exc: Exception, wire: Wire
) -> None:
    async with ClientSession() as session, session.get(raising(exc)) as resp:
        raw = await resp.read()
        assert resp.status == wire.status, raw
        assert resp.content_type == "application/json"
        assert resp.headers.get("Retry-After") == wire.retry_after
        assert (resp.headers.get("Connection", "").lower() == "close") == wire.closes
        body = await resp.json()
    assert set(body) == {"error", "kind"}
    assert body["kind"] == wire.kind
    assert body["error"] == (str(exc) if wire.shown else answer(exc).message)
    if not wire.shown:
        assert DETAIL.encode() not in raw
    assert b"Traceback" not in raw


async def test_an_unknown_error_is_500_with_no_traceback_in_the_body(
    raising: Callable[[Exception], str],
) -> None:
    async with ClientSession() as session, session.get(raising(RuntimeError(DETAIL))) as resp:
        raw = await resp.read()
        assert resp.status == 500
        assert "Retry-After" not in resp.headers
    assert b"Traceback" not in raw
    assert b"RuntimeError" not in raw
    assert DETAIL.encode() not in raw
    assert (await resp.json()) == {
        "error": "the log server failed to handle this request",
        "kind": "InternalError",
    }


# The tree drawn in firmlog.server.errors' docstring: "├── Name   status  what to do".
_DRAWN = re.compile(r"(?:^ {4}|[├└]── )(\w+)(?: +([1-5][0-9][0-9]))? ", re.MULTILINE)


def _drawn() -> dict[str, int | None]:
    assert errors.__doc__ is not None
    return {m[1]: int(m[2]) if m[2] else None for m in _DRAWN.finditer(errors.__doc__)}


def _example(cls: type[Exception]) -> Exception:
    if cls is PoolFull:
        return PoolFull(2.0)
    if issubclass(cls, ProofUnavailable):
        return cls(0, bytes(32))
    if cls is SigningRefused:
        return SigningRefused("x", b"", b"", ())
    return cls("x")


def test_the_table_answers_each_class_with_the_status_its_tree_shows() -> None:
    drawn = _drawn()
    in_table = [cls for cls, _ in ANSWERS if cls is not Exception]
    for cls in in_table:
        assert cls.__name__ in drawn, f"{cls.__name__} is answered but not drawn in the tree"
    for name, status in drawn.items():
        cls = getattr(errors, name, None) or getattr(client_errors, name)
        if status is None:
            assert issubclass(cls, StartupError), f"{name} is drawn without a status"
            continue
        assert answer(_example(cls)).status == status, name


def test_every_server_error_is_in_the_table_or_refuses_start_up() -> None:
    def subclasses(cls: type[Exception]) -> list[type[Exception]]:
        return [c for s in cls.__subclasses__() for c in (s, *subclasses(s))]

    in_table = {cls for cls, _ in ANSWERS}
    for cls in subclasses(LogServerError):
        if cls.__module__ != errors.__name__:
            continue  # a test's own subclass
        assert cls in in_table or issubclass(cls, StartupError), cls.__name__


def test_each_row_is_reachable() -> None:
    """Most specific first: no row is shadowed by one above it."""
    for i, (cls, _) in enumerate(ANSWERS):
        for above, _ in ANSWERS[:i]:
            assert not issubclass(cls, above), f"{cls.__name__} is shadowed by {above.__name__}"


def test_the_classes_are_still_importable_where_they_were() -> None:
    from firmlog.server import acceptance, config, escrow, reader, sequencer, signing, storage

    assert sequencer.PoolFull is PoolFull
    assert sequencer.ProofUnavailable is ProofUnavailable
    assert sequencer.SequencerStopped is SequencerStopped
    assert reader.NotFound is NotFound
    assert escrow.ImageRejected is ImageRejected
    assert escrow.ImageNotLogged is ImageNotLogged
    assert escrow.ImageCorrupt is ImageCorrupt
    assert acceptance.EntryTooLarge is EntryTooLarge
    assert signing.SigningRefused is SigningRefused
    assert signing.WrongLog is errors.WrongLog
    assert config.ConfigError is errors.ConfigError
    assert storage.StorageUnavailable is StorageUnavailable
    assert storage.StorageOpenError is errors.StorageOpenError
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(NotFound, LookupError)
