"""c2sp.org/tlog-checkpoint: ``<origin>\\n<tree size>\\n<base64 root>\\n[extensions]``.

firmlog's log writes no extension lines; the parser accepts non-empty
extension lines (as the spec allows) and keeps them.

Parsing is strict: the origin is a non-empty line, the tree size is ASCII
decimal without leading zeros that fits in a uint64, the root hash is
canonical standard base64 of exactly 32 bytes, extension lines are non-empty,
and the text ends in a newline. A checkpoint is the text of a signed note
(c2sp.org/signed-note), so ASCII control characters other than newline are
refused too.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass

from firmlog.client.encoding import b64decode_strict, b64encode, show
from firmlog.client.errors import CheckpointFormatError, SignatureError
from firmlog.client.keys import Signer, Verifier
from firmlog.client.merkle import HASH_SIZE
from firmlog.client.note import Note, sign_note, split_note, verify_note_signatures

__all__ = [
    "MAX_TREE_SIZE",
    "Checkpoint",
    "SignedCheckpoint",
    "check_log_signature",
    "open_checkpoint",
    "sign_checkpoint",
]

MAX_TREE_SIZE = (1 << 64) - 1

_TREE_SIZE = re.compile("0|[1-9][0-9]{0,19}")
_CONTROL_CHARS = re.compile("[\x00-\x09\x0b-\x1f]")
# A checkpoint without extension lines, in the one form Checkpoint.parse
# accepts: the root hash is the canonical base64 of 32 bytes (43 characters,
# the last with 2 zero pad bits, and "=").
_PLAIN_CHECKPOINT = re.compile(
    "([^\x00-\x1f]+)\n(0|[1-9][0-9]{0,19})\n([A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=)\n"
)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: origin, tree size, root hash and opaque extension lines.

    The constructor checks what :meth:`to_text` needs to produce a text that
    :meth:`parse` accepts (ValueError/TypeError otherwise).
    """

    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise ValueError(f"checkpoint origin must be a non-empty str, got {self.origin!r}")
        if "\n" in self.origin or _CONTROL_CHARS.search(self.origin):
            raise ValueError(
                f"checkpoint origin must not contain control characters, got {show(self.origin)}"
            )
        if isinstance(self.tree_size, bool) or not isinstance(self.tree_size, int):
            raise TypeError(f"tree_size must be an int, got {type(self.tree_size).__name__}")
        if not 0 <= self.tree_size <= MAX_TREE_SIZE:
            raise ValueError(f"tree_size must be a uint64, got {self.tree_size}")
        if not isinstance(self.root_hash, bytes):
            raise TypeError(f"root_hash must be bytes, got {type(self.root_hash).__name__}")
        if len(self.root_hash) != HASH_SIZE:
            raise ValueError(f"root_hash must be 32 bytes, got {len(self.root_hash)}")
        if not isinstance(self.extensions, tuple):
            raise TypeError(f"extensions must be a tuple, got {type(self.extensions).__name__}")
        for ext in self.extensions:
            if not isinstance(ext, str) or not ext or "\n" in ext or _CONTROL_CHARS.search(ext):
                raise ValueError(
                    "extension lines must be non-empty single lines without control "
                    f"characters, got {ext!r}"
                )

    def to_text(self) -> str:
        """The note text: origin, tree size, base64 root hash, extensions, each ending in '\\n'."""
        lines = [self.origin, str(self.tree_size), b64encode(self.root_hash), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Strict parse. CheckpointFormatError says which line is wrong and why."""
        if not isinstance(text, str):
            raise TypeError(f"checkpoint text must be a str, got {type(text).__name__}")
        plain = _PLAIN_CHECKPOINT.fullmatch(text)
        if plain is not None:  # fast path: no extensions, every line well-formed
            origin, size_text, root_text = plain.groups()
            tree_size = int(size_text)
            if tree_size <= MAX_TREE_SIZE and cls is Checkpoint:
                # Each field is as the constructor checks it: set them as it does.
                checkpoint = object.__new__(Checkpoint)
                object.__setattr__(checkpoint, "origin", origin)
                object.__setattr__(checkpoint, "tree_size", tree_size)
                object.__setattr__(checkpoint, "root_hash", binascii.a2b_base64(root_text))
                object.__setattr__(checkpoint, "extensions", ())
                return checkpoint
        return cls._parse_strict(text)

    @classmethod
    def _parse_strict(cls, text: str) -> Checkpoint:
        """The reference for :meth:`parse`: line by line, every error named."""
        if not text.endswith("\n"):
            raise CheckpointFormatError(
                f"checkpoint text must end in a newline, got {show(text[-20:])} at its end"
            )
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointFormatError(
                "checkpoint needs at least 3 lines (origin, tree size, root hash), "
                f"got {len(lines)}"
            )
        origin, size_text, root_text, *extensions = lines
        if not origin:
            raise CheckpointFormatError("checkpoint line 1: origin must not be empty")
        # Tree size and root hash are checked character by character below; the
        # free-form lines must not hold control characters (a note cannot).
        for number, line in enumerate([origin, *extensions] if extensions else [origin]):
            bad = _CONTROL_CHARS.search(line)
            if bad is not None:
                raise CheckpointFormatError(
                    f"checkpoint line {number + 3 if number else 1}: control character "
                    f"0x{ord(bad.group()):02x} is not allowed"
                )
        if not _TREE_SIZE.fullmatch(size_text):
            raise CheckpointFormatError(
                "checkpoint line 2: tree size must be decimal digits without leading "
                f"zeros, got {show(size_text)}"
            )
        tree_size = int(size_text)
        if tree_size > MAX_TREE_SIZE:
            raise CheckpointFormatError(
                f"checkpoint line 2: tree size must fit in 64 bits, got {size_text}"
            )
        root_hash = b64decode_strict(root_text)
        if root_hash is None:
            raise CheckpointFormatError(
                "checkpoint line 3: root hash must be canonical standard base64, "
                f"got {show(root_text)}"
            )
        if len(root_hash) != HASH_SIZE:
            raise CheckpointFormatError(
                f"checkpoint line 3: root hash must be 32 bytes, got {len(root_hash)}"
            )
        for number, ext in enumerate(extensions, 4):
            if not ext:
                raise CheckpointFormatError(
                    f"checkpoint line {number}: extension lines must not be empty"
                )
        return cls(origin, tree_size, root_hash, tuple(extensions))


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint together with the exact signed note it came from."""

    checkpoint: Checkpoint
    note: Note
    raw: bytes  # the signed note, byte for byte


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> bytes:
    """The signed note; the signer's name must equal the origin (ValueError otherwise)."""
    if signer.name != checkpoint.origin:
        raise ValueError(
            f"log key name must equal the checkpoint origin: expected {checkpoint.origin!r}, "
            f"got {signer.name!r}"
        )
    return sign_note(checkpoint.to_text(), [signer])


def check_log_signature(checkpoint: Checkpoint, note: Note, logs: Iterable[Verifier]) -> None:
    """SignatureError unless one of the verified signatures of the checkpoint's
    note is by one of ``logs`` (matched by name and key ID)."""
    logs = tuple(logs)
    for sig in note.verified:
        for verifier in logs:
            if sig.name == verifier.name and sig.key_id == verifier.key_id:
                return
    expected = " or ".join(sorted(f"{v.name}+{v.key_id:08x}" for v in logs))
    raise SignatureError(
        f"checkpoint for {checkpoint.origin!r} is not signed by the log: expected a "
        f"signature by {expected}, verified only {[sig.key for sig in note.verified]}"
    )


def open_checkpoint(
    data: bytes, log_verifier: Verifier, extra_verifiers: Iterable[Verifier] = ()
) -> SignedCheckpoint:
    """Open a checkpoint note that must carry a valid signature by ``log_verifier``.

    The origin must equal the log key's name. ``extra_verifiers`` (e.g.
    witness cosignature verifiers) are checked too if present: a signature by
    one of them that fails rejects the note, valid ones are listed in
    ``note.verified``. Raises NoteFormatError/CheckpointFormatError/SignatureError.
    """
    text, signatures = split_note(data)
    checkpoint = Checkpoint.parse(text)
    if checkpoint.origin != log_verifier.name:
        raise SignatureError(
            f"checkpoint origin mismatch: expected {log_verifier.name!r}, got {checkpoint.origin!r}"
        )
    note = verify_note_signatures(text, signatures, (log_verifier, *extra_verifiers))
    check_log_signature(checkpoint, note, (log_verifier,))
    return SignedCheckpoint(checkpoint, note, bytes(data))
