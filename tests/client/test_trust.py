"""The trusted checkpoint (firmlog.client.trust): a tracker that advances only
through consistency proofs built from tiles, and split-view evidence.

Logs here live in memory: a list of entries, its tiles served by a fetch
function that records what it was asked for, and checkpoints signed with a
real log key. Two logs with one key and different entries are one log that
shows two views.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence

import pytest

from firmlog.client.checkpoint import Checkpoint, sign_checkpoint
from firmlog.client.cosignature import CosignatureSigner, cosign
from firmlog.client.errors import (
    CheckpointFormatError,
    ConsistencyProofError,
    QuorumError,
    SignatureError,
    SplitViewError,
    TransportError,
)
from firmlog.client.keys import Ed25519Signer
from firmlog.client.merkle import EMPTY_ROOT, consistency_proof, leaf_hash, root_hash
from firmlog.client.note import sign_note
from firmlog.client.policy import parse_policy
from firmlog.client.tiles import TILE_HEIGHT, Tile, TileHashReader
from firmlog.client.trust import (
    CheckpointNote,
    CheckpointTracker,
    check_consistency,
    check_no_fork,
)

ORIGIN = "trust.example/log"
LOG_KEY = Ed25519Signer.from_seed(ORIGIN, b"\x11" * 32)
OTHER_KEY = Ed25519Signer.from_seed(ORIGIN, b"\x12" * 32)  # same name, not the log's key
WITNESS = CosignatureSigner.from_seed("witness.example", b"\x13" * 32)
NOW = 1_700_000_000


class MemoryLog:
    """A log in memory: entries, tiles at any size (a fetch function), signed checkpoints."""

    def __init__(self, entries: Sequence[bytes], key: Ed25519Signer = LOG_KEY) -> None:
        self.leaves = [leaf_hash(e) for e in entries]
        self.key = key
        self.fetched: list[str] = []

    def root(self, size: int) -> bytes:
        return root_hash(self.leaves[:size])

    def note(self, size: int) -> bytes:
        return sign_checkpoint(Checkpoint(self.key.name, size, self.root(size)), self.key)

    def tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        """A TileFetcher: hash k of tile (L, N) is the root of 256**L leaves."""
        self.fetched += [t.path for t in tiles]
        out = []
        for t in tiles:
            span = 1 << (TILE_HEIGHT * t.level)
            first = t.index * 256
            out.append(
                b"".join(
                    root_hash(self.leaves[(first + k) * span : (first + k + 1) * span])
                    for k in range(t.width)
                )
            )
        return out

    def proof(self, old: int, new: int) -> tuple[bytes, ...]:
        return tuple(consistency_proof(old, new, TileHashReader(new, self.tiles)))


def entries(tag: str, n: int) -> list[bytes]:
    return [f"{tag} {i}".encode() for i in range(n)]


SHARED = entries("shared", 2)
LOG_A = MemoryLog([*SHARED, *entries("a", 400)])  # one view of the log
LOG_B = MemoryLog([*SHARED, *entries("b", 400)])  # another view, diverging at index 2


def no_tiles(tiles: Sequence[Tile]) -> list[bytes]:
    raise AssertionError(f"no tiles needed, asked for {[t.path for t in tiles]}")


def tracker_at(log: MemoryLog, size: int) -> CheckpointTracker:
    return CheckpointTracker.for_log_key(LOG_KEY.verifier, CheckpointNote.parse(log.note(size)))


# -- advancing ------------------------------------------------------------------------


def test_the_first_checkpoint_is_trusted_as_it_is() -> None:
    tracker = CheckpointTracker.for_log_key(LOG_KEY.verifier)
    assert tracker.trusted is None
    note = LOG_A.note(5)
    got = tracker.update(note, no_tiles)
    assert got == tracker.trusted
    assert got.note == note
    assert got.checkpoint == Checkpoint(ORIGIN, 5, LOG_A.root(5))


def test_a_larger_tree_is_trusted_once_proven_from_tiles() -> None:
    log = MemoryLog(entries("grow", 300))
    tracker = tracker_at(log, 3)
    got = tracker.update(log.note(300), log.tiles)
    assert tracker.trusted == got
    assert got.note == log.note(300)
    assert log.fetched  # the proof came from tiles
    assert all(p.startswith(("tile/0/", "tile/1/")) for p in log.fetched)
    # the proof it built is the proof of the whole tree
    assert check_consistency(log.note(3), log.note(300), log.tiles) == log.proof(3, 300)


def test_the_same_tree_again_is_trusted_with_its_new_note() -> None:
    # Same size and root, other signature lines (say, newer cosignatures).
    tracker = tracker_at(LOG_A, 7)
    again = cosign(LOG_A.note(7), WITNESS, NOW)
    assert tracker.update(again, no_tiles).note == again


def test_a_smaller_tree_is_proven_a_prefix_and_changes_nothing() -> None:
    log = MemoryLog(entries("stale", 10))
    tracker = tracker_at(log, 10)
    before = tracker.trusted
    got = tracker.update(log.note(4), log.tiles)  # a stale replica's checkpoint
    assert got is before
    assert tracker.trusted is before
    assert log.fetched == ["tile/0/000.p/10"]  # proven from tiles of the trusted size


def test_an_empty_tree_is_extended_by_every_tree() -> None:
    tracker = tracker_at(LOG_A, 0)
    assert tracker.update(LOG_A.note(6), no_tiles).checkpoint.tree_size == 6


# -- split views ------------------------------------------------------------------------------


def test_same_size_different_root_is_a_split_view() -> None:
    tracker = tracker_at(LOG_A, 5)
    with pytest.raises(SplitViewError) as info:
        tracker.update(LOG_B.note(5), no_tiles)
    evidence = info.value
    assert (evidence.old_note, evidence.new_note) == (LOG_A.note(5), LOG_B.note(5))
    assert evidence.proof == ()
    assert str(evidence) == (
        f"split view of {ORIGIN!r}: two checkpoints, both of tree size 5, with roots "
        f"{LOG_A.root(5).hex()} and {LOG_B.root(5).hex()}"
    )


def test_a_larger_tree_whose_proof_fails_is_a_split_view() -> None:
    tracker = tracker_at(LOG_A, 5)
    with pytest.raises(SplitViewError) as info:
        tracker.update(LOG_B.note(9), LOG_B.tiles)  # the tiles of the view it was shown
    evidence = info.value
    assert (evidence.old_note, evidence.new_note) == (LOG_A.note(5), LOG_B.note(9))
    assert evidence.proof == LOG_B.proof(5, 9)  # the proof that was tried
    assert "no consistency proof from tree size 5 to 9 built from the log's tiles" in str(evidence)
    assert isinstance(evidence.__cause__, ConsistencyProofError)


def test_a_smaller_tree_that_is_no_prefix_is_a_split_view() -> None:
    tracker = tracker_at(LOG_A, 10)
    with pytest.raises(SplitViewError) as info:
        tracker.update(LOG_B.note(4), LOG_B.tiles)
    assert (info.value.old_note, info.value.new_note) == (LOG_A.note(10), LOG_B.note(4))
    assert info.value.proof == LOG_B.proof(4, 10)


def test_an_empty_tree_with_another_root_is_a_split_view() -> None:
    bad = sign_checkpoint(Checkpoint(ORIGIN, 0, b"\x01" * 32), LOG_KEY)
    tracker = CheckpointTracker.for_log_key(LOG_KEY.verifier, CheckpointNote.parse(bad))
    with pytest.raises(SplitViewError, match=f"expected {EMPTY_ROOT.hex()}"):
        tracker.update(LOG_A.note(3), no_tiles)


def test_evidence_carries_both_notes_byte_for_byte() -> None:
    # Notes with more than the log's signature: cosigned, and signed by another key too.
    old = cosign(LOG_A.note(5), WITNESS, NOW)
    extra = Ed25519Signer.from_seed("someone.example", b"\x14" * 32)
    new = sign_note(Checkpoint(ORIGIN, 9, LOG_B.root(9)).to_text(), [LOG_KEY, extra])
    tracker = CheckpointTracker.for_log_key(LOG_KEY.verifier, CheckpointNote.parse(old))
    with pytest.raises(SplitViewError) as info:
        tracker.update(new, LOG_B.tiles)
    assert info.value.old_note == old
    assert info.value.new_note == new
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.old_note, again.new_note, again.proof) == (old, new, info.value.proof)


# -- a refusal changes nothing ---------------------------------------------------------------


def test_the_state_is_unchanged_after_a_refusal() -> None:
    tracker = tracker_at(LOG_A, 5)
    trusted = tracker.trusted

    def unreachable(tiles: Sequence[Tile]) -> list[bytes]:
        raise TransportError("the log is unreachable")

    refusals: list[tuple[bytes, object]] = [
        (LOG_B.note(5), no_tiles),  # split view, same size
        (LOG_B.note(9), LOG_B.tiles),  # split view, larger
        (LOG_A.note(9), unreachable),  # no tiles to prove it with
        (MemoryLog(entries("a", 9), OTHER_KEY).note(9), LOG_A.tiles),  # not the log's key
        (b"not a note", LOG_A.tiles),
    ]
    for note, fetch in refusals:
        with pytest.raises((SplitViewError, TransportError, SignatureError, ValueError)):
            tracker.update(note, fetch)  # type: ignore[arg-type]
        assert tracker.trusted is trusted
    # and the log's real next checkpoint is still accepted
    assert tracker.update(LOG_A.note(9), LOG_A.tiles).note == LOG_A.note(9)


def test_a_policy_tracker_needs_the_quorum_and_one_origin() -> None:
    other = Ed25519Signer.from_seed("other.example/log", b"\x15" * 32)
    policy = parse_policy(
        f"log {LOG_KEY.verifier.vkey}\nlog {other.verifier.vkey}\n"
        f"witness w {WITNESS.verifier.vkey}\nquorum w\n"
    )
    tracker = CheckpointTracker.for_policy(policy, CheckpointNote.parse(LOG_A.note(5)), now=NOW)
    with pytest.raises(QuorumError):
        tracker.update(LOG_A.note(9), LOG_A.tiles)  # not cosigned
    other_log = MemoryLog(entries("other", 9), other)
    with pytest.raises(SignatureError, match=re.escape("expected one of 'trust.example/log'")):
        tracker.update(cosign(other_log.note(9), WITNESS, NOW), other_log.tiles)
    assert tracker.trusted is not None
    assert tracker.trusted.note == LOG_A.note(5)
    cosigned = cosign(LOG_A.note(9), WITNESS, NOW - 10)
    assert tracker.update(cosigned, LOG_A.tiles).note == cosigned
    stale = CheckpointTracker.for_policy(policy, now=NOW, max_cosignature_age=5)
    with pytest.raises(QuorumError, match="older than max_age=5"):
        stale.update(cosigned, no_tiles)


def test_trusted_must_be_a_checkpoint_note() -> None:
    with pytest.raises(TypeError, match="CheckpointNote"):
        CheckpointTracker.for_log_key(LOG_KEY.verifier, LOG_A.note(3))  # type: ignore[arg-type]
    with pytest.raises(CheckpointFormatError):
        CheckpointNote.parse(sign_note("not a checkpoint\n", [LOG_KEY]))
    assert repr(tracker_at(LOG_A, 3)) == f"CheckpointTracker({ORIGIN!r}, tree_size=3)"


# -- the rule for two notes ---------------------------------------------------------------------


def test_check_consistency_in_either_order() -> None:
    proof = check_consistency(LOG_A.note(3), LOG_A.note(303), LOG_A.tiles)
    assert proof == LOG_A.proof(3, 303)
    assert check_consistency(LOG_A.note(303), LOG_A.note(3), LOG_A.tiles) == proof
    assert check_consistency(LOG_A.note(8), LOG_A.note(8), no_tiles) == ()
    with pytest.raises(SplitViewError) as info:
        check_consistency(LOG_B.note(9), LOG_A.note(3), LOG_B.tiles)
    assert (info.value.old_note, info.value.new_note) == (LOG_B.note(9), LOG_A.note(3))
    other = MemoryLog(entries("x", 3), Ed25519Signer.from_seed("x.example/log", b"\x16" * 32))
    with pytest.raises(ValueError, match="different logs"):
        check_consistency(LOG_A.note(3), other.note(3), LOG_A.tiles)


def test_check_no_fork_is_the_offline_half() -> None:
    a5, b5 = CheckpointNote.parse(LOG_A.note(5)), CheckpointNote.parse(LOG_B.note(5))
    check_no_fork(a5, CheckpointNote.parse(LOG_A.note(5)))
    check_no_fork(a5, CheckpointNote.parse(LOG_B.note(9)))  # needs tiles: not decided here
    with pytest.raises(SplitViewError) as info:
        check_no_fork(a5, b5)
    assert (info.value.old_note, info.value.new_note) == (a5.note, b5.note)
