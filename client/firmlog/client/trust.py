"""Trusted checkpoints: what a client believes about one log, and the one rule
that moves that belief forward.

DESIGN.md section 5 (a monitor verifies consistency with the last checkpoint
it trusted, from tiles, and keeps a split view as evidence) and section 6 (a
device checks a new checkpoint against the one it stored); RFC 9162 2.1.4
(consistency proofs), c2sp.org/tlog-checkpoint, c2sp.org/tlog-tiles.

The rule: a client trusts a new checkpoint of a log only once it is proven
to describe the same growing tree as the checkpoint it trusted before, with
a consistency proof it BUILDS from the log's tiles (it never takes a proof
the log computed). Two checkpoints of one log that cannot both be true (one
tree size and two roots, or two sizes that no proof from the log's own
tiles connects) are a split view: :class:`~firmlog.client.errors.SplitViewError`
carries both signed notes byte for byte and the proof tried. Evidence, not
a message.

Here, and pure (no network, no files, no clock of its own):

- :class:`CheckpointNote`: a signed checkpoint note, byte for byte, with the
  checkpoint it holds.
- :class:`CheckpointTracker`: one log's trusted checkpoint.
  :meth:`~CheckpointTracker.update` opens a new note (log key or trust
  policy), proves it consistent with the trusted one from hashes read
  through a tile fetch function the caller supplies, and either advances or
  raises; a refused note leaves the state as it was.
- :func:`check_consistency`: the rule for two notes the caller verified.
- :func:`check_no_fork`: the half of the rule that needs no hashes (one
  tree size, one root), which a device checks offline.

Not here: fetching checkpoints and tiles (:class:`firmlog.client.online.LogClient`,
a mirror's directory, a test's memory), storing the trusted note (a
device's :class:`~firmlog.client.verify.DeviceState`, a mirror's
``checkpoint`` file, a monitor's state), and reporting evidence. Callers do
those and hand this module bytes and a :data:`~firmlog.client.tiles.TileFetcher`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from firmlog.client.checkpoint import Checkpoint, open_checkpoint
from firmlog.client.errors import ConsistencyProofError, SignatureError, SplitViewError
from firmlog.client.keys import Verifier
from firmlog.client.merkle import EMPTY_ROOT, consistency_proof, verify_consistency
from firmlog.client.note import split_note
from firmlog.client.policy import Policy
from firmlog.client.tiles import TileFetcher, TileHashReader

__all__ = [
    "CheckpointNote",
    "CheckpointTracker",
    "NoteOpener",
    "check_consistency",
    "check_no_fork",
]

log = logging.getLogger("firmlog.client.trust")

NoteOpener = Callable[[bytes], Checkpoint]
"""``open(note)``: verify a checkpoint note's signatures and return its checkpoint, or raise."""


@dataclass(frozen=True, slots=True)
class CheckpointNote:
    """A signed checkpoint note, byte for byte, and the checkpoint it holds."""

    note: bytes
    checkpoint: Checkpoint

    @classmethod
    def parse(cls, note: bytes) -> CheckpointNote:
        """Parse a note whose signatures the caller checked before (a stored one).

        Signatures are not checked again. NoteFormatError or
        CheckpointFormatError if it is not a checkpoint note.
        """
        text, _ = split_note(note)
        return cls(bytes(note), Checkpoint.parse(text))


def _split_view(
    old: CheckpointNote, new: CheckpointNote, detail: str, proof: tuple[bytes, ...] = ()
) -> SplitViewError:
    """The one place a split view's evidence is put together."""
    return SplitViewError(
        f"split view of {old.checkpoint.origin!r}: {detail}", old.note, new.note, proof
    )


def _check_one_log(old: Checkpoint, new: Checkpoint) -> None:
    if old.origin != new.origin:
        raise ValueError(f"checkpoints of different logs: {old.origin!r} and {new.origin!r}")


def check_no_fork(old: CheckpointNote, new: CheckpointNote) -> None:
    """Raise SplitViewError if two checkpoints of one log have one tree size and two roots.

    The half of the rule that needs no hashes: a device checks it offline
    against the checkpoint it stored. Checkpoints of different sizes pass
    here; proving those takes :func:`check_consistency` or a
    :class:`CheckpointTracker`. Checkpoints of different origins are a
    ValueError (compare only checkpoints of one log).
    """
    a, b = old.checkpoint, new.checkpoint
    _check_one_log(a, b)
    if a.tree_size == b.tree_size and a.root_hash != b.root_hash:
        raise _split_view(
            old,
            new,
            f"two checkpoints, both of tree size {a.tree_size}, with roots "
            f"{a.root_hash.hex()} and {b.root_hash.hex()}",
        )


def _prove(old: CheckpointNote, new: CheckpointNote, tiles: TileFetcher) -> tuple[bytes, ...]:
    """The rule: the consistency proof between two checkpoints of one log, in either
    order, built from tiles of the larger tree; SplitViewError if there is none."""
    check_no_fork(old, new)
    a, b = old.checkpoint, new.checkpoint
    small, large = (a, b) if a.tree_size <= b.tree_size else (b, a)
    if small.tree_size == large.tree_size:
        return ()
    if small.tree_size == 0:
        if small.root_hash != EMPTY_ROOT:
            raise _split_view(
                old,
                new,
                f"a checkpoint of the empty tree with root {small.root_hash.hex()}, "
                f"expected {EMPTY_ROOT.hex()}",
            )
        return ()  # every tree extends the empty tree
    reader = TileHashReader(large.tree_size, tiles)
    proof = tuple(consistency_proof(small.tree_size, large.tree_size, reader))
    try:
        verify_consistency(
            small.tree_size, large.tree_size, small.root_hash, large.root_hash, proof
        )
    except ConsistencyProofError as exc:
        raise _split_view(
            old,
            new,
            f"no consistency proof from tree size {small.tree_size} to {large.tree_size} "
            f"built from the log's tiles: {exc}",
            proof,
        ) from exc
    log.debug(
        "checkpoints of %s consistent from size %d to %d",
        a.origin,
        small.tree_size,
        large.tree_size,
    )
    return proof


def check_consistency(
    old_note: bytes, new_note: bytes, fetch_tiles: TileFetcher
) -> tuple[bytes, ...]:
    """Prove that two checkpoints of one log describe one growing tree.

    Both notes must be signed checkpoints the caller has verified, with the
    same origin (ValueError otherwise); either may be the larger. The
    consistency proof from the smaller tree to the larger is built here from
    tiles of the larger tree, fetched with ``fetch_tiles`` (for example
    :meth:`firmlog.client.online.LogClient.tiles`), and returned.

    Raises SplitViewError, with both notes as given, when the trees have the
    same size and different roots, or when the log's own tiles give no proof
    that connects them. Errors from ``fetch_tiles`` (TransportError...) propagate.
    """
    return _prove(CheckpointNote.parse(old_note), CheckpointNote.parse(new_note), fetch_tiles)


class CheckpointTracker:
    """One log's trusted checkpoint, advanced only by checkpoints proven consistent with it.

    ``open_note`` verifies a new note's signatures (see :meth:`for_log_key`
    and :meth:`for_policy`). ``trusted`` is the checkpoint trusted so far,
    for example the one a device stored; with None, the first note that
    opens is trusted as it is (trust on first use). Not thread-safe: one
    update at a time.
    """

    __slots__ = ("_open", "_trusted")

    def __init__(self, open_note: NoteOpener, trusted: CheckpointNote | None = None) -> None:
        if trusted is not None and not isinstance(trusted, CheckpointNote):
            raise TypeError(f"trusted must be a CheckpointNote, got {type(trusted).__name__}")
        self._open = open_note
        self._trusted = trusted

    @classmethod
    def for_log_key(
        cls, log_key: Verifier, trusted: CheckpointNote | None = None
    ) -> CheckpointTracker:
        """New notes must be signed by ``log_key``, their origin its name."""

        def open_note(note: bytes) -> Checkpoint:
            return open_checkpoint(note, log_key).checkpoint

        return cls(open_note, trusted)

    @classmethod
    def for_policy(
        cls,
        policy: Policy,
        trusted: CheckpointNote | None = None,
        *,
        now: int | None = None,
        max_cosignature_age: int | None = None,
    ) -> CheckpointTracker:
        """New notes must be signed by a log of ``policy`` and cosigned to its quorum.

        Cosignatures are dated against ``now`` (default: the clock at each
        update); with ``max_cosignature_age`` older ones do not count.
        """

        def open_note(note: bytes) -> Checkpoint:
            verified = policy.verify_checkpoint(note, now=now, max_age=max_cosignature_age)
            return verified.signed.checkpoint

        return cls(open_note, trusted)

    def __repr__(self) -> str:
        trusted = self._trusted
        if trusted is None:
            return "CheckpointTracker(trusted=None)"
        cp = trusted.checkpoint
        return f"CheckpointTracker({cp.origin!r}, tree_size={cp.tree_size})"

    @property
    def trusted(self) -> CheckpointNote | None:
        """The checkpoint trusted now, or None before the first update."""
        return self._trusted

    def update(self, note: bytes, tiles: TileFetcher) -> CheckpointNote:
        """Open ``note`` and trust it if it extends the trusted checkpoint.

        The consistency proof (RFC 9162 2.1.4) between the trusted checkpoint
        and ``note``'s is built from tiles of the larger tree, read through
        ``tiles`` (the log's own tiles, fetched by the caller), never taken
        from the log. Returns the checkpoint trusted afterwards: ``note``'s
        when its tree is as large as the trusted one or larger; the trusted
        one when ``note`` is a proven prefix of it (an older checkpoint, say
        from a stale replica: nothing new is learned, nothing is wrong).

        Raises whatever opening the note raises (SignatureError, QuorumError,
        NoteFormatError, CheckpointFormatError; SignatureError too for a
        checkpoint of another origin than the trusted one), SplitViewError
        (both notes and the proof tried: keep them, report them, stop trusting
        the log), MerkleFormatError for malformed tiles, and whatever
        ``tiles`` raises (TransportError). After any error the trusted
        checkpoint is the one it was.
        """
        new = CheckpointNote(bytes(note), self._open(note))
        old = self._trusted
        if old is None:
            self._trusted = new
            return new
        if new.checkpoint.origin != old.checkpoint.origin:
            raise SignatureError(
                f"checkpoint of {new.checkpoint.origin!r}, expected one of "
                f"{old.checkpoint.origin!r} (the log whose checkpoint is trusted)"
            )
        _prove(old, new, tiles)
        if new.checkpoint.tree_size < old.checkpoint.tree_size:
            return old  # a proven prefix of the trusted tree
        self._trusted = new
        return new
