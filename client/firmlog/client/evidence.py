"""Split-view evidence: proof that a log signed two trees that cannot both be true.

DESIGN.md section 5. A monitor keeps and serves it (``GET /v1/evidence``);
anyone checks it offline (``firmlog evidence verify``). Two kinds:

- ``same-size``: two checkpoints of one tree size with two roots. The two
  signed notes prove it.
- ``different-sizes``: ``smaller_root`` is the larger tree's root at the
  smaller size (computed from the log's own tiles of the larger tree), and
  ``proof`` is the consistency proof (RFC 9162 2.1.4) from (smaller size,
  ``smaller_root``) to the larger checkpoint. If the proof verifies and
  ``smaller_root`` differs from the root the log signed for the smaller size,
  the log signed two trees that cannot both be true.

The JSON form (what ``/v1/evidence`` serves, one object per item) holds the
bytes in standard base64: ``{"kind", "notes": [old, new], "proof": [...],
"smaller_root", "detail"}``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from firmlog.client.checkpoint import open_checkpoint
from firmlog.client.errors import EvidenceFormatError, VerificationError
from firmlog.client.keys import Verifier
from firmlog.client.merkle import EMPTY_ROOT, verify_consistency

__all__ = ["DIFFERENT_SIZES", "KINDS", "SAME_SIZE", "SplitViewEvidence"]

SAME_SIZE = "same-size"
DIFFERENT_SIZES = "different-sizes"
KINDS = (SAME_SIZE, DIFFERENT_SIZES)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise EvidenceFormatError(
            f"evidence: {what} must be a base64 string, got {type(value).__name__}"
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EvidenceFormatError(f"evidence: {what} is not standard base64") from exc


@dataclass(frozen=True, slots=True)
class SplitViewEvidence:
    kind: str  # SAME_SIZE or DIFFERENT_SIZES
    old_note: bytes  # the checkpoint the monitor trusted, byte for byte
    new_note: bytes  # the one that contradicts it, byte for byte
    proof: tuple[bytes, ...]  # different sizes: from smaller_root to the larger checkpoint
    smaller_root: bytes | None  # different sizes: the larger tree's root at the smaller size
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "notes": [_b64(self.old_note), _b64(self.new_note)],
            "proof": [_b64(h) for h in self.proof],
            "smaller_root": _b64(self.smaller_root) if self.smaller_root is not None else None,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, item: object) -> SplitViewEvidence:
        """Parse one item as :meth:`to_json` writes it; EvidenceFormatError otherwise."""
        if not isinstance(item, dict):
            raise EvidenceFormatError(f"evidence must be a JSON object, got {type(item).__name__}")
        kind = item.get("kind")
        if kind not in KINDS:
            raise EvidenceFormatError(
                f"evidence kind must be 'same-size' or 'different-sizes', got {kind!r}"
            )
        notes = item.get("notes")
        if not isinstance(notes, list) or len(notes) != 2:
            raise EvidenceFormatError(
                "evidence: notes must be a list of two base64 signed checkpoints"
            )
        proof_items = item.get("proof", [])
        if not isinstance(proof_items, list):
            raise EvidenceFormatError("evidence: proof must be a list of base64 hashes")
        root = item.get("smaller_root")
        detail = item.get("detail", "")
        return cls(
            kind=kind,
            old_note=_unb64(notes[0], "notes[0]"),
            new_note=_unb64(notes[1], "notes[1]"),
            proof=tuple(_unb64(h, f"proof[{i}]") for i, h in enumerate(proof_items)),
            smaller_root=None if root is None else _unb64(root, "smaller_root"),
            detail=detail if isinstance(detail, str) else "",
        )

    def verify(self, log_key: Verifier) -> str:
        """Check that this proves ``log_key`` signed two inconsistent trees; say how.

        Both notes must be checkpoints signed by ``log_key``. Raises
        SignatureError/CheckpointFormatError for notes the key did not sign,
        EvidenceFormatError for evidence of the wrong shape, VerificationError
        when it proves nothing.
        """
        a, b = (open_checkpoint(n, log_key).checkpoint for n in (self.old_note, self.new_note))
        if a.tree_size == b.tree_size:
            if self.kind != SAME_SIZE:
                raise EvidenceFormatError(
                    f"evidence of kind {self.kind!r} holds two checkpoints of one size"
                )
            if a.root_hash == b.root_hash:
                raise VerificationError(
                    f"both checkpoints of {a.origin!r} have tree size {a.tree_size} and the "
                    "same root: no split view"
                )
            return (
                f"the log {a.origin!r} signed two trees of size {a.tree_size}: roots "
                f"{a.root_hash.hex()} and {b.root_hash.hex()}"
            )
        if self.kind != DIFFERENT_SIZES:
            raise EvidenceFormatError(
                f"evidence of kind {self.kind!r} holds checkpoints of two sizes"
            )
        if self.smaller_root is None:
            raise EvidenceFormatError("evidence of different sizes needs smaller_root")
        small, large = (a, b) if a.tree_size < b.tree_size else (b, a)
        root = self.smaller_root
        if small.tree_size == 0:
            if self.proof or root != EMPTY_ROOT:
                raise EvidenceFormatError(
                    "evidence about an empty tree carries no proof, and its root"
                )
        else:
            verify_consistency(
                small.tree_size, large.tree_size, root, large.root_hash, list(self.proof)
            )
        if root == small.root_hash:
            raise VerificationError(
                f"the checkpoints of {a.origin!r} at sizes {small.tree_size} and "
                f"{large.tree_size} are consistent: no split view"
            )
        return (
            f"the log {a.origin!r} signed a tree of size {small.tree_size} with root "
            f"{small.root_hash.hex()}, and a tree of size {large.tree_size} whose root at "
            f"size {small.tree_size} is {root.hex()} (consistency proof verified)"
        )
