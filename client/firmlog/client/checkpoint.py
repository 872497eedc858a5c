"""c2sp.org/tlog-checkpoint: ``<origin>\\n<tree size>\\n<base64 root>\\n[extensions]``.

firmlog's log writes no extension lines; the parser accepts non-empty
extension lines (as the spec allows) and keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from firmlog.client.note import Note, Signer, Verifier


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def to_text(self) -> str:
        raise NotImplementedError

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Strict parse. CheckpointFormatError says which line is wrong and why."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint together with the exact signed note it came from."""

    checkpoint: Checkpoint
    note: Note
    raw: bytes  # the signed note, byte for byte


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> bytes:
    """The signed note; the signer's name must equal the origin (ValueError otherwise)."""
    raise NotImplementedError


def open_checkpoint(
    data: bytes, log_verifier: Verifier, extra_verifiers: Iterable[Verifier] = ()
) -> SignedCheckpoint:
    """Open a checkpoint note that must carry a valid signature by ``log_verifier``.

    The origin must equal the log key's name. ``extra_verifiers`` (e.g.
    witness cosignature verifiers) are checked too if present. Raises
    NoteFormatError/CheckpointFormatError/SignatureError.
    """
    raise NotImplementedError
