"""c2sp.org/signed-note: splitting, signing and opening notes.

A note is UTF-8 text ending in a newline, a blank line, and one or more
signature lines ``— <name> <base64(keyid(4) || signature)>``. Keys, their
names, key IDs and formats are :mod:`firmlog.client.keys`.

Opening follows the spec: signatures by unknown keys are ignored (kept in
:attr:`Note.unverified`), every signature by a known key (name *and* key ID
match) is verified and one that fails rejects the whole note, at least one
known valid signature is required; at most 100 signatures; note size bounded
by ``max_size``. Repeated identical signature lines are kept once. The known
keys are a :class:`~firmlog.client.keys.KeyRing`, or any verifiers (indexed
into one).

Encodings are strict: signatures in canonical standard base64
(:mod:`firmlog.client.encoding`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter

from firmlog.client.encoding import b64decode_canonical, b64decode_strict, b64encode, show
from firmlog.client.errors import NoteFormatError, SignatureError
from firmlog.client.keys import KeyRing, Signer, Verifier, key_name_problem

__all__ = [
    "DEFAULT_MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "Note",
    "Signature",
    "add_signatures",
    "open_note",
    "sign_note",
    "split_note",
    "verify_note_signatures",
]

MAX_SIGNATURES = 100
DEFAULT_MAX_NOTE_SIZE = 1 << 20

_SIG_PREFIX = "— "  # U+2014 EM DASH, U+0020 SPACE
_SIG_PREFIX_BYTES = _SIG_PREFIX.encode()

# ASCII controls other than newline; UTF-8 never encodes another code point
# with bytes below 0x80, so checking bytes is checking code points.
_NOTE_CONTROL_BYTES = re.compile(b"[\x00-\x09\x0b-\x1f]")
_NOTE_CONTROL_CHARS = re.compile("[\x00-\x09\x0b-\x1f]")
_NOTE_CONTROL_SET = bytes(range(0x20)).replace(b"\n", b"")


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line: key name, key ID and the signature bytes (without key ID)."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """``— <name> <base64(keyid || signature)>\\n``."""
        payload = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_SIG_PREFIX}{self.name} {b64encode(payload)}\n"

    @property
    def key(self) -> str:
        """``name+hexid``, how keys are named in messages."""
        return f"{self.name}+{self.key_id:08x}"


@dataclass(frozen=True, slots=True)
class Note:
    """An opened note: the signed text, signatures verified and signatures not checked."""

    text: str
    verified: tuple[Signature, ...]
    unverified: tuple[Signature, ...]


def _parse_signature_line(line: str, number: int) -> Signature:
    if not line.startswith(_SIG_PREFIX):
        raise NoteFormatError(
            f"signature line {number}: expected '— <name> <base64>', got {show(line)}"
        )
    name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    if not sep:
        raise NoteFormatError(
            f"signature line {number}: expected '— <name> <base64>', got {show(line)}"
        )
    problem = key_name_problem(name)
    if problem is not None:
        raise NoteFormatError(f"signature line {number}: key name {problem}")
    raw = b64decode_strict(b64)
    if raw is None:
        raise NoteFormatError(
            f"signature line {number} ({show(name, 40)}): signature is not canonical "
            f"standard base64, got {show(b64)}"
        )
    if len(raw) < 5:
        raise NoteFormatError(
            f"signature line {number} ({show(name, 40)}): expected a 4-byte key ID and a "
            f"signature, got {len(raw)} bytes"
        )
    return Signature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def split_note(data: bytes, max_size: int = DEFAULT_MAX_NOTE_SIZE) -> tuple[str, list[Signature]]:
    """Parse a signed note into text and signature lines, without verifying.

    NoteFormatError when malformed (not UTF-8, control characters, no final
    newline, no blank line before signatures, bad signature line, more than
    100 signatures, larger than ``max_size`` bytes).
    """
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"a signed note must be bytes, got {type(data).__name__}")
        data = bytes(data)
    if len(data) > max_size:
        raise NoteFormatError(f"note too large: expected at most {max_size} bytes, got {len(data)}")
    # translate() is the fast test; the regex only locates the culprit.
    bad = None
    if len(data.translate(None, _NOTE_CONTROL_SET)) != len(data):
        bad = _NOTE_CONTROL_BYTES.search(data)
    if bad is not None:
        line = data.count(b"\n", 0, bad.start()) + 1
        raise NoteFormatError(
            f"note contains control character 0x{bad.group()[0]:02x} on line {line}; "
            "only newline is allowed"
        )
    fast = _split_fast(data)
    return _split_strict(data) if fast is None else fast


def _split_strict(data: bytes) -> tuple[str, list[Signature]]:
    """The reference for the rest of split_note: as text, every error named."""
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteFormatError(
            f"note is not valid UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    split = decoded.rfind("\n\n")
    if split < 0:
        raise NoteFormatError(
            "note has no blank line: expected text, a blank line and signature lines"
        )
    text = decoded[: split + 1]
    block = decoded[split + 2 :]
    if not block:
        raise NoteFormatError("note has no signature lines after the blank line")
    if not block.endswith("\n"):
        raise NoteFormatError("note does not end in a newline after its last signature line")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteFormatError(
            f"too many signatures: expected at most {MAX_SIGNATURES}, got {len(lines)}"
        )
    return text, [_parse_signature_line(line, i) for i, line in enumerate(lines, 1)]


def _split_fast(data: bytes) -> tuple[str, list[Signature]] | None:
    """_split_strict of a well-formed note (already checked for control
    characters), on the bytes: None for anything else, for _split_strict to
    parse as text and explain.

    Newline and space bytes are only ever those characters in UTF-8, so
    splitting the bytes splits the text alike; and every byte ends up decoded
    or checked as base64, so the note is UTF-8 exactly when the pieces are.
    Only the signed text and the key names are decoded: the text stays
    ASCII-only (compact) when it is, and nothing else is copied.
    """
    split = data.rfind(b"\n\n")
    block = data[split + 2 :]
    if split < 0 or not block.endswith(b"\n") or block.count(b"\n") > MAX_SIGNATURES:
        return None
    try:
        text = data[: split + 1].decode("utf-8")
    except UnicodeDecodeError:
        return None
    prefix = len(_SIG_PREFIX_BYTES)
    signatures: list[Signature] = []
    for line in block[:-1].split(b"\n"):
        name_bytes, space, b64 = line[prefix:].partition(b" ")
        if not (space and name_bytes and line.startswith(_SIG_PREFIX_BYTES)):
            return None
        try:
            name = name_bytes.decode("utf-8")
        except UnicodeDecodeError:
            return None
        bad_name = key_name_problem(name) is not None
        raw = b64decode_canonical(b64)
        if bad_name or raw is None or len(raw) < 5:
            return None
        signatures.append(Signature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return text, signatures


def _check_text(text: str) -> bytes:
    """The UTF-8 encoding of a note text that may be signed; ValueError otherwise."""
    if not isinstance(text, str):
        raise TypeError(f"note text must be a str, got {type(text).__name__}")
    if not text.endswith("\n"):
        raise ValueError(f"note text must end in a newline, got {show(text[-20:])} at its end")
    bad = _NOTE_CONTROL_CHARS.search(text)
    if bad is not None:
        raise ValueError(
            f"note text must not contain control characters other than newline, "
            f"found 0x{ord(bad.group()):02x} at offset {bad.start()}"
        )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"note text is not valid UTF-8: {exc.reason} at {exc.start}") from None


def _check_new_signature(sig: Signature) -> None:
    problem = key_name_problem(sig.name)
    if problem is not None:
        raise ValueError(f"signature key name {problem}")
    if not 0 <= sig.key_id < 1 << 32:
        raise ValueError(f"key ID must be a uint32, got {sig.key_id}")
    if not isinstance(sig.signature, bytes) or not sig.signature:
        raise ValueError(f"signature by {sig.name!r} must be non-empty bytes")


def sign_note(text: str, signers: Iterable[Signer]) -> bytes:
    """Sign ``text`` with each signer, in order.

    The text must end in a newline and must not contain ASCII control
    characters other than newline (ValueError otherwise); it may contain
    blank lines. At least one and at most 100 signers.
    """
    message = _check_text(text)
    sigs: list[Signature] = []
    for signer in signers:
        sig = Signature(signer.name, signer.key_id, signer.sign(message))
        _check_new_signature(sig)
        sigs.append(sig)
    if not sigs:
        raise ValueError("sign_note needs at least one signer")
    if len(sigs) > MAX_SIGNATURES:
        raise ValueError(f"at most {MAX_SIGNATURES} signatures per note, got {len(sigs)}")
    return message + b"\n" + "".join(sig.line() for sig in sigs).encode("utf-8")


def add_signatures(note: bytes, signatures: Sequence[Signature]) -> bytes:
    """Append signature lines to an existing signed note (for cosignatures).

    The note must be well-formed (NoteFormatError otherwise); the result must
    stay within 100 signatures (ValueError otherwise).
    """
    _, existing = split_note(note)
    for sig in signatures:
        _check_new_signature(sig)
    total = len(existing) + len(signatures)
    if total > MAX_SIGNATURES:
        raise ValueError(f"at most {MAX_SIGNATURES} signatures per note, would have {total}")
    return bytes(note) + "".join(sig.line() for sig in signatures).encode("utf-8")


_signature_bytes = attrgetter("signature")


def verify_note_signatures(
    text: str, signatures: Sequence[Signature], verifiers: Iterable[Verifier]
) -> Note:
    """Apply the spec's verification rules to a split note (see :func:`split_note`).

    ``verifiers`` are the known keys: a :class:`~firmlog.client.keys.KeyRing`
    (callers that verify often build one once), or verifiers to index into
    one (ValueError for two different ones with one name and key ID).
    Signatures by unknown keys go to :attr:`Note.unverified`; every signature
    by a known key must verify (SignatureError otherwise); at least one must.
    Repeated identical signature lines count once.
    """
    ring = KeyRing.of(verifiers)
    known = ring.by_id
    message = text.encode("utf-8")
    verified: list[Signature] = []
    unverified: list[Signature] = []
    # Equal signatures have equal signature bytes: when those are all
    # different (the usual case), there is nothing to skip, and no need to
    # hash the Signature objects.
    distinct = len(signatures) < 2 or len(set(map(_signature_bytes, signatures))) == len(signatures)
    seen: set[Signature] = set()
    for sig in signatures:
        if not distinct:
            if sig in seen:
                continue
            seen.add(sig)
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            unverified.append(sig)
        elif verifier.verify(message, sig.signature):
            verified.append(sig)
        else:
            raise SignatureError(f"invalid signature by known key {sig.key}")
    if not verified:
        found = [sig.key for sig in unverified]
        raise SignatureError(
            f"note has no valid signature by a trusted key: expected one of "
            f"{ring.key_names()}, found signatures by {found}"
        )
    return Note(text, tuple(verified), tuple(unverified))


def open_note(
    data: bytes, verifiers: Iterable[Verifier], max_size: int = DEFAULT_MAX_NOTE_SIZE
) -> Note:
    """Open a signed note with the spec's rules.

    Verifiers are matched by (name, key ID). Raises NoteFormatError when
    malformed, SignatureError when no known key signed it or a known key's
    signature is invalid. Two different verifiers with the same name and key
    ID are caller misuse (ValueError). ``verifiers`` may be a
    :class:`~firmlog.client.keys.KeyRing`, used as it is.
    """
    text, signatures = split_note(data, max_size)
    return verify_note_signatures(text, signatures, verifiers)
