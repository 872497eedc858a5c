"""The log server's errors, and the one table that answers each over HTTP.

The server's errors are a branch of firmlog's one error tree
(:mod:`firmlog.client.errors`): a malformed request is the client's
:class:`~firmlog.client.errors.FormatError`, an entry that breaks a rule its
:class:`~firmlog.client.errors.VerificationError`, and what only the server
raises is under :class:`LogServerError`. Each line says how the HTTP API
answers it (:data:`ANSWERS`) and what the caller should do::

    FirmlogError                     422  (client) unless listed below: refused; do not resend it
    ├── FormatError                  400  the request is malformed; fix it first
    │   ├── BadRequest               400  a request parameter is malformed
    │   ├── BodyIncomplete           400  the body ended early; send all of it
    │   └── EntryFormatError         400  (client) not a firmlog entry
    │       └── EntryTooLarge        413  over limits.max_entry_size; do not resend it
    ├── VerificationError            422  (client) well-formed, but refused
    │   ├── SignatureError           403  not signed by the keys the entry needs
    │   └── EntryPolicyError         403  breaks a ledger rule (threshold, rollback...)
    └── LogServerError               500  the server's own; unless listed below, a bug
        ├── NotFound                 404  not in the log (yet); ask again once it is
        ├── ImageNotLogged           404  no logged release names it; log that first
        ├── ImageRejected            400  not the image its release names
        ├── ImageTooLarge            413  larger than escrow holds; keep it elsewhere
        ├── ImageCorrupt             500  a stored image went bad; upload it again
        ├── BodyTimeout              408  the body came too slowly; connection closed
        ├── SigningRefused           500  the key refuses to sign; the operator must look
        ├── Unavailable              503  nothing wrong with the request: retry after
        │   ├── PoolFull             503  too many entries wait; Retry-After: the pool's
        │   ├── ProofUnavailable     503  logged, not yet proven; resubmit it (same index)
        │   │   └── NotCosigned      503  logged, its checkpoint awaits the witnesses' quorum
        │   ├── SequencerStopped     503  shutting down (kind ShuttingDown)
        │   └── StorageUnavailable   503  the database cannot be reached or written
        └── StartupError                  never answered: the server refuses to start, exit 2
            ├── ConfigError               the configuration is invalid; it names the setting
            ├── StorageOpenError          the database cannot be opened; it says why
            └── WrongLog                  the database or data dir holds another log

Anything else is a bug: 500 with kind ``InternalError``, the traceback in the
server's log and no detail in the answer. Every class is also importable from
the module that raises it (``firmlog.server.sequencer.PoolFull``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from firmlog.client.errors import (
    EntryFormatError,
    EntryPolicyError,
    FirmlogError,
    FormatError,
    SignatureError,
)

__all__ = [
    "ANSWERS",
    "Answer",
    "BadRequest",
    "BodyIncomplete",
    "BodyTimeout",
    "ConfigError",
    "EntryTooLarge",
    "ImageCorrupt",
    "ImageNotLogged",
    "ImageRejected",
    "ImageTooLarge",
    "LogServerError",
    "NotCosigned",
    "NotFound",
    "PoolFull",
    "ProofUnavailable",
    "SequencerStopped",
    "SigningRefused",
    "StartupError",
    "StorageOpenError",
    "StorageUnavailable",
    "Unavailable",
    "WrongLog",
    "answer",
]

# -- the server's requests that are malformed (the client's FormatError) --------------------


class BadRequest(FormatError):
    """A request parameter is malformed. Fix the request."""


class BodyIncomplete(FormatError):
    """The request body ended before its end (the client went away, or broken framing).
    Send the whole body."""


class EntryTooLarge(EntryFormatError):
    """The submission exceeds the entry size limit. Do not resend it."""


# -- the server's own branch ------------------------------------------------------------------


class LogServerError(FirmlogError):
    """Raised by the log server, never by the client library. A subclass that
    :data:`ANSWERS` does not list is answered as a bug (500)."""


class NotFound(LogServerError, LookupError):
    """The thing asked for is not in the log (yet). Ask again once it is logged."""


class ImageNotLogged(LogServerError, LookupError):
    """No logged release names this image digest. Log the release first."""


class ImageRejected(LogServerError, ValueError):
    """The upload does not match any logged release (digest or size). Upload the image
    the release names."""


class ImageTooLarge(LogServerError, ValueError):
    """Every release naming this image gives a size above what escrow holds
    (``limits.max_image_size``). Keep the image elsewhere."""


class ImageCorrupt(LogServerError, RuntimeError):
    """A stored image no longer matches its digest; it was quarantined. Upload it again."""


class BodyTimeout(LogServerError):
    """The client did not send its request body in time. The connection is closed;
    send faster, or a smaller body."""


class SigningRefused(LogServerError):
    """The log key refused to sign: the stored tree is not provably consistent
    with the last checkpoint this server published. Nothing was written.

    Retrying does not help; an operator must find out how the stored tree
    changed. The evidence: ``recorded`` (the last checkpoint published, raw),
    ``stored`` (the database's latest checkpoint, raw) and ``proof`` (the
    consistency proof from the stored tiles that failed, if one was computed).
    """

    def __init__(
        self, message: str, recorded: bytes, stored: bytes, proof: tuple[bytes, ...]
    ) -> None:
        super().__init__(message)
        self.recorded = recorded
        self.stored = stored
        self.proof = proof

    def __reduce__(
        self,
    ) -> tuple[type[SigningRefused], tuple[str, bytes, bytes, tuple[bytes, ...]]]:
        return (type(self), (str(self), self.recorded, self.stored, self.proof))


class Unavailable(LogServerError):
    """The log cannot do this just now; nothing is wrong with the request.
    Answer 503 with Retry-After; the caller retries after it."""


class PoolFull(Unavailable):
    """The pool of pending entries is full. Retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"the submission pool is full; retry after {retry_after:.0f} s")
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[type[PoolFull], tuple[float]]:
        return (type(self), (self.retry_after,))


class ProofUnavailable(Unavailable):
    """The entry is durably logged, but its proof could not be built just now.

    Resubmit it (it keeps its index and gets a bundle) or fetch its bundle later.
    """

    def __init__(self, leaf_index: int, leaf_hash: bytes) -> None:
        super().__init__(
            f"the entry is logged at index {leaf_index}, but its proof could not be built "
            f"just now; resubmit it (it keeps its index) or GET /v1/bundle/{leaf_hash.hex()}"
        )
        self.leaf_index = leaf_index
        self.leaf_hash = leaf_hash

    def __reduce__(self) -> tuple[type[ProofUnavailable], tuple[int, bytes]]:
        return (type(self), (self.leaf_index, self.leaf_hash))


class NotCosigned(ProofUnavailable):
    """The entry is durably logged, but no checkpoint covering it is cosigned by a
    quorum of witnesses yet, so none is published. Resubmit it later (it keeps its
    index and gets the cosigned bundle once there is one)."""

    def __init__(self, leaf_index: int, leaf_hash: bytes) -> None:
        Unavailable.__init__(
            self,
            f"the entry is logged at index {leaf_index}; its checkpoint is not cosigned by a "
            "quorum of witnesses yet, retry: resubmit it (it keeps its index) or GET "
            f"/v1/bundle/{leaf_hash.hex()} later",
        )
        self.leaf_index = leaf_index
        self.leaf_hash = leaf_hash


class SequencerStopped(Unavailable):
    """The sequencer is shutting down and takes no more entries. Retry at another
    server, or at this one once it is back."""


class StorageUnavailable(Unavailable):
    """The database cannot be reached or written just now. Retry later; an entry
    that was logged keeps its index when resubmitted."""


class StartupError(LogServerError):
    """The server must not start. The message says why and what to do; the
    server prints it and exits 2."""


class ConfigError(StartupError, ValueError):
    """The configuration is invalid; the message names the setting."""


class StorageOpenError(StartupError):
    """The database cannot be opened or used; the message says why and what to do.

    Raised by :meth:`firmlog.server.storage.Storage.open`.
    """


class WrongLog(StartupError):
    """This server must not sign for the database it was given.

    The message names both logs (or the tree this data dir's key signed) and
    says what to do.
    """


# -- the table ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """How the HTTP API answers one class of error: a JSON body
    ``{"error": message, "kind": kind}`` with ``status``."""

    status: int
    kind: str | None = None
    """None: the error's class name."""
    retry_after: int | Callable[[Exception], int] | None = None
    """Seconds for the Retry-After header, or how to get them from the error."""
    message: str | None = None
    """None: the error's own message is shown. Else this text replaces it (the
    error's message goes to the server's log, or was logged where it was raised)."""
    close: bool = False
    """Close the connection after the answer."""
    warn: str | None = None
    """Log a warning with this event and the error's message."""
    traceback: bool = False
    """Log the error with its traceback (a bug)."""

    def kind_of(self, exc: Exception) -> str:
        return self.kind or type(exc).__name__

    def message_of(self, exc: Exception) -> str:
        return str(exc) if self.message is None else self.message

    def headers_of(self, exc: Exception) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        seconds = self.retry_after if isinstance(self.retry_after, int) else self.retry_after(exc)
        return {"Retry-After": str(seconds)}


def _pool_retry_after(exc: Exception) -> int:
    assert isinstance(exc, PoolFull)
    return int(exc.retry_after)


BUG = Answer(
    500, "InternalError", message="the log server failed to handle this request", traceback=True
)
"""A bug: no detail to the client, the traceback to the server's log."""

ANSWERS: tuple[tuple[type[Exception], Answer], ...] = (
    # A malformed request, or an entry that breaks a rule.
    (EntryTooLarge, Answer(413)),
    (FormatError, Answer(400)),
    (SignatureError, Answer(403)),
    (EntryPolicyError, Answer(403)),
    # The server's own.
    (NotFound, Answer(404, "NotFound")),
    (ImageNotLogged, Answer(404, "NotFound")),
    (ImageRejected, Answer(400)),
    (ImageTooLarge, Answer(413)),
    (ImageCorrupt, Answer(500)),
    (BodyTimeout, Answer(408, close=True)),
    (
        SigningRefused,  # logged as critical by the signer, with the evidence
        Answer(
            500,
            message="the log refuses to sign a tree it cannot prove consistent with the "
            "checkpoint it published last; nothing was stored, and the operator must investigate",
        ),
    ),
    (PoolFull, Answer(503, retry_after=_pool_retry_after)),
    (NotCosigned, Answer(503, retry_after=1)),
    (ProofUnavailable, Answer(503, retry_after=1)),
    (SequencerStopped, Answer(503, "ShuttingDown", retry_after=5)),
    (
        StorageUnavailable,
        Answer(
            503,
            retry_after=5,
            message="the log's database cannot be reached or written just now; retry later "
            "(an entry that was logged keeps its index when resubmitted)",
            warn="storage unavailable",
        ),
    ),
    (Unavailable, Answer(503, retry_after=5)),
    (LogServerError, BUG),
    # The client's tree: verification errors not listed above.
    (FirmlogError, Answer(422)),
    (Exception, BUG),
)
"""Error class -> answer, most specific first: an error gets the first row it is an instance of."""


_ROW_OF: dict[type[Exception], Answer] = {}  # each class's row, found once


def answer(exc: Exception) -> Answer:
    """How the HTTP API answers ``exc``: its first row in :data:`ANSWERS`."""
    kind = type(exc)
    row = _ROW_OF.get(kind)
    if row is None:
        row = _ROW_OF[kind] = next(r for cls, r in ANSWERS if issubclass(kind, cls))
    return row
