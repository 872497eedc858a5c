"""c2sp.org/tlog-witness ``add-checkpoint``: parse the request, check it, cosign.

Request body: ``old <size>\\n``, up to 63 base64 consistency proof lines,
an empty line, then the checkpoint note. Answers, as the spec orders them:

- 400 malformed request, or old size larger than the checkpoint's;
- 404 the checkpoint's origin is not the watched log's;
- 403 no valid signature by the log key (and: this monitor proved a split
  view of the log and cosigns nothing of it any more);
- 409 (``text/x.tlog.size``, the size it knows) old size is not the size of
  the latest cosigned checkpoint; or same size and another root (a split
  view: the evidence is kept);
- 422 the consistency proof does not verify; if it does lead to the
  checkpoint's root, but from another root at the old size than the one
  this witness cosigned, the log signed two trees that cannot both be true:
  the evidence (both notes, that root and the proof) is kept;
- 200 the cosignature line.

Checking the old size and storing the new checkpoint are one atomic step
(:meth:`firmlog.monitor.state.WatchedLog.advance` under its lock).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import structlog

from firmlog.client.checkpoint import Checkpoint, open_checkpoint
from firmlog.client.errors import FormatError, ProofError, SignatureError, SplitViewError
from firmlog.client.evidence import DIFFERENT_SIZES, SAME_SIZE, SplitViewEvidence
from firmlog.client.merkle import HASH_SIZE, old_root_from_consistency, verify_consistency
from firmlog.client.note import split_note
from firmlog.client.trust import CheckpointNote, check_no_fork
from firmlog.monitor.state import WatchedLog

__all__ = ["MAX_PROOF_LINES", "AddCheckpoint", "WitnessRefusal", "add_checkpoint"]

log = structlog.get_logger("firmlog.monitor.witness")

MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_OLD = re.compile(r"old (0|[1-9][0-9]{0,19})")


class WitnessRefusal(Exception):
    """An add-checkpoint request refused: ``status`` and what to answer."""

    def __init__(self, status: int, message: str, content_type: str = "text/plain") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.content_type = content_type


def _hash(line: str) -> bytes | None:
    """A canonical standard base64 hash, or None."""
    try:
        h = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(h) != HASH_SIZE or base64.b64encode(h).decode("ascii") != line:
        return None
    return h


def _bad(message: str) -> WitnessRefusal:
    return WitnessRefusal(400, message)


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    """A parsed add-checkpoint request; ``note`` and its checkpoint are not verified yet."""

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes
    checkpoint: Checkpoint

    @classmethod
    def parse(cls, body: bytes) -> AddCheckpoint:
        """Strict parse; WitnessRefusal(400) says what is wrong."""
        head, sep, note = body.partition(b"\n\n")
        if not sep:
            raise _bad("expected an old size line, proof lines, an empty line and a checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError as exc:
            raise _bad("the old size and proof lines must be ASCII") from exc
        old = _OLD.fullmatch(lines[0])
        if old is None:
            raise _bad(f"line 1 must be 'old <size>' in decimal, got {lines[0][:40]!r}")
        if len(lines) - 1 > MAX_PROOF_LINES:
            raise _bad(f"at most {MAX_PROOF_LINES} proof lines, got {len(lines) - 1}")
        proof = []
        for number, line in enumerate(lines[1:], 2):
            h = _hash(line)
            if h is None:
                raise _bad(f"line {number} must be a base64 hash of {HASH_SIZE} bytes")
            proof.append(h)
        old_size = int(old.group(1))
        try:
            text, _ = split_note(note)
            checkpoint = Checkpoint.parse(text)
        except FormatError as exc:
            raise _bad(f"not a checkpoint note: {exc}") from exc
        if old_size > checkpoint.tree_size:
            raise _bad(
                f"old size {old_size} is larger than the checkpoint's {checkpoint.tree_size}"
            )
        if old_size == 0 and proof:
            raise _bad("the proof must be empty when the old size is 0")
        return cls(old_size, tuple(proof), note, checkpoint)


async def add_checkpoint(watched: WatchedLog, request: AddCheckpoint) -> bytes:
    """Check ``request`` against the watched log, cosign, and return the
    cosignature line; WitnessRefusal otherwise."""
    cp = request.checkpoint
    if cp.origin != watched.origin:
        raise WitnessRefusal(404, f"unknown log origin {cp.origin[:100]!r}")
    try:
        open_checkpoint(request.note, watched.log_key)
    except SignatureError as exc:
        raise WitnessRefusal(403, f"no valid signature by the log key: {exc}") from exc
    except FormatError as exc:
        raise _bad(str(exc)) from exc
    new = CheckpointNote(request.note, cp)
    async with watched.lock:
        if watched.split_view:
            raise WitnessRefusal(
                403, "this witness proved a split view of this log and cosigns nothing of it"
            )
        trusted = watched.trusted
        known = trusted.checkpoint.tree_size if trusted else 0
        if request.old_size != known:
            raise WitnessRefusal(409, f"{known}\n", SIZE_CONTENT_TYPE)
        if trusted is not None:
            try:
                check_no_fork(trusted, new)
            except SplitViewError as exc:
                await watched.record_split_view(
                    SplitViewEvidence(SAME_SIZE, exc.old_note, exc.new_note, (), None, str(exc))
                )
                raise WitnessRefusal(409, f"{known}\n", SIZE_CONTENT_TYPE) from exc
            if request.old_size < cp.tree_size and request.old_size > 0:
                try:
                    verify_consistency(
                        request.old_size,
                        cp.tree_size,
                        trusted.checkpoint.root_hash,
                        cp.root_hash,
                        request.proof,
                    )
                except (ProofError, FormatError) as exc:
                    evidence = _fork_evidence(trusted, new, request.proof, str(exc))
                    if evidence is not None:
                        await watched.record_split_view(evidence)
                        raise WitnessRefusal(
                            422, f"consistency proof does not verify: {exc}; split view recorded"
                        ) from exc
                    log.warning(
                        "add-checkpoint with a consistency proof that does not verify",
                        origin=cp.origin,
                        old_size=request.old_size,
                        tree_size=cp.tree_size,
                        error=str(exc),
                    )
                    raise WitnessRefusal(422, f"consistency proof does not verify: {exc}") from exc
            elif request.proof:
                raise _bad("the proof must be empty when the old size is the checkpoint's")
        sig = await watched.advance(trusted, new, "add-checkpoint")
    if sig is None:  # the stored state moved: another process shares the data dir
        raise WitnessRefusal(503, "the witness state changed meanwhile; retry")
    return sig.line().encode("utf-8")


def _fork_evidence(
    trusted: CheckpointNote, new: CheckpointNote, proof: tuple[bytes, ...], error: str
) -> SplitViewEvidence | None:
    """Evidence from a proof that leads to ``new``'s root from another root at the
    trusted size than the trusted one; None if the proof proves nothing."""
    old, cp = trusted.checkpoint, new.checkpoint
    try:
        root = old_root_from_consistency(old.tree_size, cp.tree_size, cp.root_hash, proof)
    except (ProofError, FormatError):
        return None
    if root == old.root_hash:
        return None
    detail = (
        f"the log's tree of size {cp.tree_size} has root {root.hex()} at size "
        f"{old.tree_size}, where it signed root {old.root_hash.hex()} ({error})"
    )
    return SplitViewEvidence(DIFFERENT_SIZES, trusted.note, new.note, proof, root, detail)
