"""Split-view evidence as the monitor keeps and serves it (DESIGN.md section 5).

Two checkpoints signed by one log key that cannot both be true:

- ``same-size``: one tree size, two roots. The two signed notes prove it.
- ``different-sizes``: the larger tree's root at the smaller size
  (``smaller_root``, computed from the log's own tiles of the larger tree)
  differs from the smaller checkpoint's root, and ``proof`` is the
  consistency proof (RFC 9162 2.1.4) from (smaller size, ``smaller_root``)
  to the larger checkpoint, which verifies. Anyone can check it offline with
  ``firmlog evidence verify FILE --log-key VKEY``.

Served by ``GET /v1/evidence`` as JSON: bytes in standard base64.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

__all__ = ["DIFFERENT_SIZES", "SAME_SIZE", "Evidence"]

SAME_SIZE = "same-size"
DIFFERENT_SIZES = "different-sizes"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True, slots=True)
class Evidence:
    kind: str  # SAME_SIZE or DIFFERENT_SIZES
    old_note: bytes  # the checkpoint the monitor trusted, byte for byte
    new_note: bytes  # the one that contradicts it, byte for byte
    proof: tuple[bytes, ...]  # from smaller_root at the smaller size to the larger checkpoint
    smaller_root: bytes | None  # different sizes: the larger tree's root at the smaller size
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "notes": [_b64(self.old_note), _b64(self.new_note)],
            "proof": [_b64(h) for h in self.proof],
            "smaller_root": _b64(self.smaller_root) if self.smaller_root is not None else None,
            "detail": self.detail,
        }
