"""The log key's guard: it never signs two trees that cannot both be true (DESIGN.md 4).

The sequencer signs checkpoints only through a :class:`TreeSigner`, which keeps
two records of which log its key signs for and refuses whatever contradicts them:

- The database's identity record (:class:`~firmlog.server.storage.LogIdentity`):
  the origin and verifier key of the log it holds, written once, in the
  integration that publishes the empty tree. A server with another key or
  origin refuses to start. A database made before the record existed is
  claimed only if its latest checkpoint opens with this server's key.
- The data dir's ``checkpoint`` file: the last checkpoint note this server
  published. It is replaced atomically after each integration commits and
  before anyone is shown the new checkpoint, so it never names a tree the
  database does not hold. Processes sharing one data dir and one database
  (``--workers``, or several servers) may make it lag behind the database,
  never lead it, and never go back: each replaces it under an exclusive lock
  of ``.checkpoint.lock`` and only with a larger tree than it names.

Before the key signs a tree that extends the stored tree, the last checkpoint
published (size m, root r: the data dir's, or this process's if that is
newer) must be consistent with the stored tree (size n, the root of its right
edge): m <= n, and r is that root when m == n, or else a consistency proof
from m to n, computed from the stored tiles, verifies against both roots. The
new tree extends the stored right edge, so it is then consistent with
everything this server published.

A failed check at start-up refuses to start (:class:`WrongLog`, whose message
says what to do). In an integration it fails the batch before anything is
written (:class:`SigningRefused`, carrying the evidence), is logged as critical
and counted in ``firmlog_signing_refusals_total``.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
from dataclasses import dataclass
from pathlib import Path

import structlog

from firmlog.client.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from firmlog.client.errors import FirmlogError, ProofError
from firmlog.client.keys import Ed25519Signer
from firmlog.client.merkle import EMPTY_ROOT, CompactRange, verify_consistency
from firmlog.client.note import split_note
from firmlog.server.errors import SigningRefused, WrongLog
from firmlog.server.metrics import ServerMetrics
from firmlog.server.reader import LogReader
from firmlog.server.storage import Integration, LogIdentity, LogState
from firmlog.service.files import replace_file

log = structlog.get_logger("firmlog.signing")

MAX_RECORD_SIZE = 4096
"""A checkpoint note is far smaller; a larger file in its place is not one."""

_NEW_LOG = "to start a new log instead, use a new data dir (it gets new keys)"


@dataclass(frozen=True, slots=True)
class _Conflict:
    """Why the stored tree cannot extend the recorded checkpoint."""

    problem: str
    remedy: str
    recorded: bytes
    proof: tuple[bytes, ...] = ()


def _parse(note: bytes) -> Checkpoint:
    text, _ = split_note(note)
    return Checkpoint.parse(text)


def _signers(note: bytes) -> str:
    """Who signed a note, as ``name+hexid``, for messages (nothing is verified)."""
    try:
        _, signatures = split_note(note)
    except FirmlogError as exc:
        return f"unreadable ({exc})"
    return ", ".join(s.key for s in signatures) or "nobody"


def _read_record(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            return f.read(MAX_RECORD_SIZE + 1)
    except FileNotFoundError:
        return None


def _advance_record(path: Path, note: bytes, size: int) -> None:
    """Replace the record with ``note``, the checkpoint of tree ``size``, unless it
    already names a tree at least as large (another process published a newer
    checkpoint meanwhile). Under an exclusive lock, so that the record never goes back."""
    with (path.parent / f".{path.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed
        current = _read_record(path)
        if current is not None and len(current) <= MAX_RECORD_SIZE:
            try:
                if _parse(current).tree_size >= size:
                    return
            except FirmlogError:
                pass  # not a checkpoint: replaced (the next signing checks the new one)
        replace_file(path, note)


class TreeSigner:
    """The log key, guarded by the records of what it signed (see the module docstring).

    ``record`` is the data dir's ``checkpoint`` file; without one, only the
    checkpoints this process published are checked. Owned by one sequencer:
    calls come from its run loop, one at a time.
    """

    def __init__(
        self,
        signer: Ed25519Signer,
        reader: LogReader,
        record: Path | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._signer = signer
        self._identity = LogIdentity(origin=signer.name, vkey=signer.verifier.vkey)
        self._reader = reader
        self._record = record
        self._metrics = metrics or ServerMetrics()
        self._published: tuple[bytes, Checkpoint] | None = None  # by this process
        self._signed: tuple[bytes, Checkpoint] | None = None  # the last note signed
        self._opened: tuple[bytes, Checkpoint] | None = None  # the record, last verified
        self._record_holds: bytes | None = None  # what this process last wrote there

    @property
    def origin(self) -> str:
        return self._signer.name

    # -- start-up ---------------------------------------------------------------

    async def check_database(self, tx: Integration, stored: LogState) -> None:
        """Refuse (WrongLog) a database that holds another log or a tree that
        contradicts the last checkpoint this data dir's key published.

        Run at start-up in the integration that creates the log if it is new;
        records this log's identity there if the database has none yet (a new
        database, or one made by an older firmlog that this key signed).
        """
        ours = self._identity
        theirs = await tx.identity()
        if theirs is not None and theirs != ours:
            raise WrongLog(
                f"the database holds the log {theirs.origin!r} (key {theirs.vkey}), not this "
                f"server's log {ours.origin!r} (key {ours.vkey}); point --database at this "
                "log's database, or serve that database with its own data dir"
            )
        if stored.checkpoint:
            self._check_stored_checkpoint(stored, recorded_identity=theirs is not None)
        if theirs is None:
            await tx.write_identity(ours)
        conflict = await self._conflict(stored)
        if conflict is not None:
            raise WrongLog(f"{conflict.problem}; {conflict.remedy}")

    def _check_stored_checkpoint(self, stored: LogState, *, recorded_identity: bool) -> None:
        try:
            cp = open_checkpoint(stored.checkpoint, self._signer.verifier).checkpoint
        except FirmlogError as exc:
            if recorded_identity:
                raise WrongLog(
                    f"the database records this log but its latest checkpoint does not open "
                    f"with this log's key ({exc}): the database is damaged; restore it from a "
                    "backup"
                ) from exc
            try:
                other = repr(_parse(stored.checkpoint).origin)
            except FirmlogError:
                other = "of an unreadable checkpoint"
            raise WrongLog(
                f"the database holds the log {other} (its latest checkpoint is signed by "
                f"{_signers(stored.checkpoint)}), not this server's log {self.origin!r} "
                f"(key {self._identity.vkey}); point --database at this log's database, or "
                "serve that database with its own data dir"
            ) from exc
        root = CompactRange.from_bytes(stored.tree_size, stored.right_edge).root()
        if (cp.tree_size, cp.root_hash) != (stored.tree_size, root):
            raise WrongLog(
                f"the database is damaged: its latest checkpoint is of tree size {cp.tree_size} "
                f"(root {cp.root_hash.hex()}) but its tree has size {stored.tree_size} (root "
                f"{root.hex()}); restore it from a backup"
            )

    # -- signing ----------------------------------------------------------------

    async def sign(self, stored: LogState, tree_size: int, root_hash: bytes) -> bytes:
        """The signed checkpoint of the new tree ``(tree_size, root_hash)``.

        The new tree must extend the stored tree (the caller appended to its
        right edge). Raises SigningRefused, without signing, unless the stored
        tree is consistent with the last checkpoint this server published.
        """
        if tree_size < stored.tree_size:
            raise RuntimeError(
                f"asked to sign tree size {tree_size}, smaller than the stored tree "
                f"({stored.tree_size}): a sequencer bug"
            )
        if tree_size == stored.tree_size:
            root = CompactRange.from_bytes(stored.tree_size, stored.right_edge).root()
            if root_hash != root:
                raise RuntimeError(
                    f"asked to sign tree size {tree_size} with root {root_hash.hex()}, but the "
                    f"stored tree of that size has root {root.hex()}: a sequencer bug"
                )
        conflict = await self._conflict(stored)
        if conflict is not None:
            self._metrics.signing_refusals.inc()
            message = f"the log key refuses to sign tree size {tree_size}: {conflict.problem}"
            log.critical(
                "the log key refused to sign a tree",
                reason=message,
                tree_size=tree_size,
                stored_size=stored.tree_size,
                recorded=conflict.recorded.decode("utf-8", "replace"),
                stored=stored.checkpoint.decode("utf-8", "replace"),
                proof=[base64.b64encode(h).decode("ascii") for h in conflict.proof],
            )
            raise SigningRefused(message, conflict.recorded, stored.checkpoint, conflict.proof)
        checkpoint = Checkpoint(self.origin, tree_size, root_hash)
        note = sign_checkpoint(checkpoint, self._signer)
        self._signed = (note, checkpoint)  # published() need not parse it back
        return note

    async def published(self, note: bytes) -> None:
        """Record ``note`` as the last checkpoint published.

        Call after the integration that stored it committed, and before anyone
        is shown it: a note signed but never committed must not be recorded.
        """
        if self._published is None or self._published[0] != note:
            signed = self._signed
            if signed is not None and signed[0] == note:
                self._published = signed
            else:
                self._published = (note, _parse(note))
        if self._record is not None and self._record_holds != note:
            size = self._published[1].tree_size
            await asyncio.to_thread(_advance_record, self._record, note, size)
            self._record_holds = note

    # -- the check ----------------------------------------------------------------

    async def _records(self) -> list[tuple[bytes, Checkpoint]] | _Conflict:
        """The data dir's record and this process's last published checkpoint, if different."""
        found: list[tuple[bytes, Checkpoint]] = []
        if self._published is not None:
            found.append(self._published)
        raw = await asyncio.to_thread(_read_record, self._record) if self._record else None
        if raw is None or (self._published is not None and raw == self._published[0]):
            return found
        if self._opened is None or self._opened[0] != raw:
            try:
                if len(raw) > MAX_RECORD_SIZE:
                    raise ValueError(f"it is larger than {MAX_RECORD_SIZE} bytes")
                self._opened = (raw, open_checkpoint(raw, self._signer.verifier).checkpoint)
            except (FirmlogError, ValueError) as exc:
                return _Conflict(
                    f"{self._record} is not a checkpoint signed by this log's key ({exc})",
                    "restore the file from a backup, or remove it if you are sure the "
                    "database is this log's",
                    raw,
                )
        return [self._opened, *found]

    async def _conflict(self, stored: LogState) -> _Conflict | None:
        """Why the stored tree does not extend a checkpoint published, or None if it does."""
        records = await self._records()
        if isinstance(records, _Conflict):
            return records
        root = CompactRange.from_bytes(stored.tree_size, stored.right_edge).root()
        for note, cp in records:
            conflict = await self._extends(stored.tree_size, root, note, cp)
            if conflict is not None:
                return conflict
        return None

    async def _extends(self, n: int, root: bytes, note: bytes, cp: Checkpoint) -> _Conflict | None:
        """Why the stored tree ``(n, root)`` does not extend ``cp``, or None if it does."""
        m = cp.tree_size
        signed = f"this data dir's log key signed tree size {m} (root {cp.root_hash.hex()})"
        if m > n:
            return _Conflict(
                f"{signed}, but the database holds {n} entries: the database was lost or replaced",
                f"restore it, or point --database at this log's database; {_NEW_LOG}",
                note,
            )
        proof: tuple[bytes, ...] = ()
        if m == n:
            consistent = cp.root_hash == root
        elif m == 0:
            consistent = cp.root_hash == EMPTY_ROOT
        else:
            proof = tuple(await self._reader.consistency_proof(m, n))
            try:
                verify_consistency(m, n, cp.root_hash, root, proof)
                consistent = True
            except ProofError:
                consistent = False
        if consistent:
            return None
        return _Conflict(
            f"{signed}, but the database's tree of size {n} (root {root.hex()}) does not extend "
            "it: the database holds another tree",
            f"restore this log's database, or point --database at it; {_NEW_LOG}",
            note,
            proof,
        )
