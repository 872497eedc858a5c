"""Online extras for devices and tools (DESIGN.md section 6): fetch, prove, remember.

- :class:`LogClient` talks to a log over HTTP (standard library ``urllib``;
  each request has one deadline for connecting, sending and reading the
  whole answer, and a size cap): the latest checkpoint (c2sp.org/tlog-tiles
  ``/checkpoint``), tiles and entry bundles (``/tile/...``), the
  ``.tlog-proof`` bundle of an entry (``/v1/bundle/<index or leaf hash>``),
  and submissions (``POST /v1/entries``). Network failures raise
  :class:`~firmlog.client.errors.TransportError`; an HTTP error status raises
  :class:`~firmlog.client.errors.HTTPStatusError` with the server's message.
- :func:`refresh_checkpoint` and :func:`fetch_bundle` feed the log's
  checkpoint, with the log's tiles, to a
  :class:`~firmlog.client.trust.CheckpointTracker` started at the device's
  stored checkpoint: verified with the trust policy, proven consistent with
  a proof the client BUILDS from the tiles (never one the server computed).
  Checkpoints that cannot both be true raise
  :class:`~firmlog.client.errors.SplitViewError` carrying both signed notes
  byte for byte. :func:`check_consistency` (from :mod:`firmlog.client.trust`)
  is that rule for two notes. :func:`save_state` persists a device's state
  atomically.
- :func:`check_not_revoked` asks the log for revocations of a verified
  release (``GET /v1/revocations/<identity>``) and refuses the update
  (step ``revocation``) by :func:`firmlog.client.verify.check_revocations`:
  only a revocation with the pinned vendor keys' signatures at threshold
  counts, so a log cannot revoke a release on its own. A log can hide a
  revocation from one client; only monitors reading the whole log see them all.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import io
import json
import logging
import os
import re
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmlog.client.bundle import ProofBundle
from firmlog.client.errors import (
    FirmlogError,
    HTTPStatusError,
    StateFormatError,
    TransportError,
)
from firmlog.client.policy import Policy
from firmlog.client.tiles import Tile
from firmlog.client.trust import CheckpointNote, CheckpointTracker, check_consistency
from firmlog.client.verify import (
    DeviceState,
    PinnedVendorKeys,
    VerifiedUpdate,
    check_revocations,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = [
    "DEFAULT_TIMEOUT",
    "LogClient",
    "check_consistency",
    "check_not_revoked",
    "fetch_bundle",
    "load_state",
    "refresh_checkpoint",
    "save_state",
    "write_atomic",
]

log = logging.getLogger("firmlog.client.online")

DEFAULT_TIMEOUT = 10.0  # seconds for a whole request: connect, send, headers and body
MAX_RESPONSE_SIZE = 16 << 20  # no firmlog resource is larger (a bundle is <= 1 MiB)
MAX_ERROR_BODY = 64 << 10  # what is read of an error answer
USER_AGENT = "firmlog-client/0.1"
_HEX64 = re.compile("[0-9a-f]{64}")
_CONTENT_LENGTH = re.compile("[0-9]{1,18}")


class LogClient:
    """A log's HTTP API at ``base_url`` (``http://`` or ``https://``).

    Every request must be answered in full within ``timeout`` seconds, from
    connecting to the last byte of the body (a server that trickles its
    answer cannot hold the client longer; name resolution is the system's
    and not counted); responses larger than ``max_response_size`` and bodies
    shorter than their Content-Length are refused (TransportError).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_response_size: int = MAX_RESPONSE_SIZE,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"log URL must be http:// or https:// with a host, got {base_url!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_response_size = max_response_size
        self.requests = 0  # how many HTTP requests this client made

    def __repr__(self) -> str:
        return f"LogClient({self.base_url!r})"

    # -- HTTP ---------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        url = f"{self.base_url}/{path.lstrip('/')}"
        headers = {"User-Agent": USER_AGENT}
        if body is not None:
            headers["Content-Type"] = "text/plain; charset=utf-8"
        # The scheme is http or https (checked in __init__).
        request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310
        self.requests += 1
        deadline = _Deadline(self.timeout)
        opener = urllib.request.build_opener(
            _DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline)
        )
        try:
            with opener.open(request, timeout=self.timeout) as response:
                data = _read_body(response, self.max_response_size)
        except urllib.error.HTTPError as exc:
            raise _status_error(url, exc) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, _BodyError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise TransportError(
                f"{method} {url}: {reason or type(exc).__name__} (timeout {self.timeout} s)"
            ) from exc
        return data

    def get(self, path: str) -> bytes:
        """GET ``path`` below the base URL; the body of a 200 answer."""
        return self._request("GET", path)

    def post(self, path: str, body: bytes) -> bytes:
        """POST ``body`` to ``path`` below the base URL; the body of a 200 answer."""
        return self._request("POST", path, body)

    # -- the API --------------------------------------------------------------

    def checkpoint(self) -> bytes:
        """The log's latest signed checkpoint note, unverified."""
        return self.get("checkpoint")

    def bundle(self, ref: int | bytes | str, *, tree_size: int | None = None) -> bytes:
        """The ``.tlog-proof`` bundle of an entry, by index or leaf hash, unverified.

        ``ref`` is an index, a 32-byte leaf hash or its 64 lowercase hex digits.
        Against the latest checkpoint, or the one of ``tree_size``.
        """
        if isinstance(ref, bool):
            raise TypeError("ref must be an index or a leaf hash, not a bool")
        if isinstance(ref, int):
            if ref < 0:
                raise ValueError(f"entry index must be >= 0, got {ref}")
            name = str(ref)
        elif isinstance(ref, bytes):
            if len(ref) != 32:
                raise ValueError(f"leaf hash must be 32 bytes, got {len(ref)}")
            name = ref.hex()
        elif isinstance(ref, str) and _HEX64.fullmatch(ref):
            name = ref
        else:
            raise ValueError(f"expected an index or a leaf hash, got {ref!r}")
        query = "" if tree_size is None else f"?tree_size={int(tree_size)}"
        return self.get(f"v1/bundle/{name}{query}")

    def tile(self, tile: Tile) -> bytes:
        """The bytes at ``tile.path``. A partial tile the log no longer serves is
        read from the full tile that replaced it (its first hashes are the same)."""
        try:
            return self.get(tile.path)
        except HTTPStatusError as exc:
            if exc.status != 404 or tile.is_full:
                raise
            return self.get(Tile(tile.level, tile.index).path)

    def tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        """A :class:`~firmlog.client.tiles.TileHashReader` fetch function."""
        return [self.tile(t) for t in tiles]

    def submit(self, entry: bytes) -> bytes:
        """POST a signed entry; the ``.tlog-proof`` bundle the log answers, unverified.

        A rejected entry raises HTTPStatusError with the log's reason (4xx).
        """
        return self._request("POST", "v1/entries", entry)


class _BodyError(Exception):
    """An answer's body is too large, shorter than its Content-Length, or framed badly."""


def _read_body(response: http.client.HTTPResponse, limit: int) -> bytes:
    """The whole body of ``response``: at most ``limit`` bytes, exactly its Content-Length."""
    declared: int | None = None
    if response.headers.get("Transfer-Encoding") is None:
        values = {v.strip() for v in response.headers.get_all("Content-Length") or ()}
        if values:
            value = values.pop()
            if values or not _CONTENT_LENGTH.fullmatch(value):
                raise _BodyError(
                    f"malformed Content-Length: {response.headers['Content-Length'][:40]!r}"
                )
            declared = int(value)
    if declared is not None and declared > limit:
        raise _BodyError(f"the answer is {declared} bytes: more than the {limit} accepted")
    data = response.read(limit + 1)
    if len(data) > limit:
        raise _BodyError(f"the answer is larger than the {limit} bytes accepted")
    if declared is not None and len(data) != declared:
        raise _BodyError(f"the answer ended after {len(data)} of its {declared} bytes")
    return data


class _Deadline:
    """One point in time by which a whole request must be done."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out: no complete answer within {self.seconds} s")
        return left


class _DeadlineReader(io.RawIOBase):
    """Reads a socket, each read waiting at most until the deadline."""

    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int | None:
        self._sock.settimeout(self._deadline.remaining())
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineSocket:
    """A connected socket whose reads (http.client reads through ``makefile``) and
    writes (``sendall``) all end by one deadline; everything else is the socket's."""

    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str = "r", *args: Any, **kwargs: Any) -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"only binary reading is supported, not mode {mode!r}")
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def sendall(self, data: ReadableBuffer) -> None:
        self._sock.settimeout(self._deadline.remaining())
        self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _DeadlineHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, *, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        self.timeout = self._deadline.remaining()
        super().connect()
        self.sock = _DeadlineSocket(self.sock, self._deadline)


class _DeadlineHTTPSConnection(_DeadlineHTTPConnection, http.client.HTTPSConnection):
    pass


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_DeadlineHTTPConnection, deadline=self._deadline)
        return self.do_open(connection, req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_DeadlineHTTPSConnection, deadline=self._deadline)
        return self.do_open(connection, req)


def _status_error(url: str, exc: urllib.error.HTTPError) -> HTTPStatusError:
    try:
        body = exc.read(MAX_ERROR_BODY)
    except (OSError, http.client.HTTPException):
        body = b""
    message = ""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            message = doc["error"]
    except (ValueError, UnicodeDecodeError):
        pass
    if not message:
        message = body[:300].decode("utf-8", "replace").strip() or str(exc.reason)
    retry_after = None
    header = exc.headers.get("Retry-After") if exc.headers is not None else None
    if header is not None:
        try:
            retry_after = float(header)
        except ValueError:
            retry_after = None
    return HTTPStatusError(url, exc.code, message, retry_after)


# -- consistency ----------------------------------------------------------------------


def refresh_checkpoint(
    client: LogClient,
    policy: Policy,
    stored: bytes | None,
    *,
    now: int | None = None,
    max_cosignature_age: int | None = None,
) -> bytes:
    """Fetch the log's latest checkpoint, verify it, check it against ``stored``.

    Returns the newest verified checkpoint note (the stored one if the log
    answered with an older one). Raises the policy's errors (SignatureError,
    QuorumError, format errors), SplitViewError, TransportError.
    """
    note = client.checkpoint()
    return _accept(client, policy, stored, note, now, max_cosignature_age)


def fetch_bundle(
    client: LogClient,
    ref: int | bytes | str,
    policy: Policy,
    stored: bytes | None,
    *,
    now: int | None = None,
    max_cosignature_age: int | None = None,
) -> bytes:
    """The bundle of an entry, its checkpoint verified and proven consistent with ``stored``.

    The bundle itself (the entry, the inclusion proof) is left to
    :func:`firmlog.client.verify.verify_update`. Raises BundleFormatError, the
    policy's errors, SplitViewError, TransportError.
    """
    bundle = client.bundle(ref)
    parsed = ProofBundle.parse(bundle)
    _accept(client, policy, stored, parsed.checkpoint, now, max_cosignature_age)
    return bundle


def check_not_revoked(
    client: LogClient, update: VerifiedUpdate, vendor_keys: PinnedVendorKeys
) -> None:
    """Refuse ``update`` if the log holds a revocation of it signed by the vendor.

    Asks the log (``GET /v1/revocations/<identity>``) and leaves the decision
    to :func:`~firmlog.client.verify.check_revocations`. Raises UpdateRefused
    (step ``revocation``) naming the revocation's log index, reason and
    advisory; TransportError if the log cannot answer. A revocation without
    the pinned keys' signatures at threshold is logged and ignored.
    """
    release = update.entry.identity.hex()  # revocations name a release by its identity
    try:
        answer = json.loads(client.get(f"/v1/revocations/{release}"))
        items = answer["revocations"]
        if not isinstance(items, list):
            raise TypeError("revocations is not a list")
        found = [(int(r["index"]), base64.b64decode(r["entry"], validate=True)) for r in items]
    except (ValueError, KeyError, TypeError) as exc:
        raise TransportError(
            f"{client.base_url} answered the revocation query with malformed JSON: {exc}"
        ) from exc

    def ignored(index: int, why: FirmlogError) -> None:
        log.warning("ignoring a revocation at log index %d: %s", index, why)

    check_revocations(update.entry.identity, vendor_keys, found, on_ignored=ignored)


def _accept(
    client: LogClient,
    policy: Policy,
    stored: bytes | None,
    note: bytes,
    now: int | None,
    max_cosignature_age: int | None,
) -> bytes:
    """The newest of ``stored`` and ``note`` once ``note`` is verified and proven
    consistent with ``stored`` (a CheckpointTracker started at ``stored``)."""
    trusted = None if stored is None else CheckpointNote.parse(stored)
    new = CheckpointNote.parse(note).checkpoint  # not verified yet: the tracker does that
    if trusted is not None and trusted.checkpoint.origin != new.origin:
        log.info(
            "stored checkpoint is of %s, not %s: not compared",
            trusted.checkpoint.origin,
            new.origin,
        )
        trusted = None
    tracker = CheckpointTracker.for_policy(
        policy, trusted, now=now, max_cosignature_age=max_cosignature_age
    )
    try:
        return tracker.update(note, client.tiles).note
    except HTTPStatusError as exc:
        if trusted is None or new.tree_size >= trusted.checkpoint.tree_size:
            raise
        # The log shows an older tree than the device saw; proving it a prefix
        # of the stored one takes tiles of the stored size, which it lacks.
        raise TransportError(
            f"{client.base_url} serves a checkpoint of tree size {new.tree_size}, older than "
            f"the stored one ({trusted.checkpoint.tree_size}), and no tiles of the stored size "
            f"({exc}): a stale replica, or a log that went back; retry later or elsewhere"
        ) from exc


# -- local state ----------------------------------------------------------------------


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically: a temporary file in the same
    directory, written and fsynced, renamed over ``path``, the directory fsynced.

    A crash leaves either the old or the new content, never a mix.
    """
    target = Path(path)
    directory = target.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save_state(path: str | os.PathLike[str], state: DeviceState) -> None:
    """Persist a device's state atomically (see :func:`write_atomic`)."""
    write_atomic(path, state.to_json(), mode=0o600)


def load_state(path: str | os.PathLike[str]) -> DeviceState:
    """Read a state written by :func:`save_state`. StateFormatError if corrupt, OSError."""
    data = Path(path).read_bytes()
    try:
        return DeviceState.from_json(data)
    except StateFormatError as exc:
        raise StateFormatError(f"{path}: {exc}") from exc
