"""c2sp.org/signed-note: keys, signing and opening notes (Ed25519, type 0x01).

A note is UTF-8 text ending in a newline, a blank line, and one or more
signature lines ``— <name> <base64(keyid(4) || signature)>``. Key ID =
SHA-256(name || 0x0A || type || public key)[:4]. Verifier keys are
``name+hexid+base64(type||pubkey)``; signer keys
``PRIVATE+KEY+name+hexid+base64(type||seed)`` (the golang.org/x/mod/sumdb/note
encoding).

Opening follows the spec: signatures by unknown keys are ignored (kept in
:attr:`Note.unverified`), every signature by a known key (name *and* key ID
match) is verified and one that fails rejects the whole note, at least one
known valid signature is required; at most 100 signatures; note size bounded
by ``max_size``. Repeated identical signature lines are kept once.

Encodings are strict: standard base64 with padding and in canonical form
(what any encoder produces), key IDs as exactly eight lowercase hex digits.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmlog.client.errors import KeyFormatError, NoteFormatError, SignatureError

__all__ = [
    "DEFAULT_MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "SIG_COSIGNATURE_V1",
    "SIG_ED25519",
    "Ed25519Signer",
    "Ed25519Verifier",
    "Note",
    "Signature",
    "Signer",
    "Verifier",
    "add_signatures",
    "check_key_name",
    "generate_key",
    "key_id",
    "open_note",
    "parse_signer_key",
    "parse_verifier_key",
    "sign_note",
    "split_note",
    "verify_note_signatures",
]

SIG_ED25519 = 0x01
SIG_COSIGNATURE_V1 = 0x04
MAX_SIGNATURES = 100
DEFAULT_MAX_NOTE_SIZE = 1 << 20

ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SEED_SIZE = 32
ED25519_SIGNATURE_SIZE = 64

_SIG_PREFIX = "— "  # U+2014 EM DASH, U+0020 SPACE
_SIG_PREFIX_BYTES = _SIG_PREFIX.encode()
_SIGNER_KEY_PREFIX = "PRIVATE+KEY+"

# Unicode White_Space (the set Go's unicode.IsSpace uses), '+', and the ASCII
# controls, which can never appear in a note.
_NAME_EXCLUDED = "\x00-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000+"
_BAD_NAME_CHARS = re.compile(f"[{_NAME_EXCLUDED}]")
# ASCII controls other than newline; UTF-8 never encodes another code point
# with bytes below 0x80, so checking bytes is checking code points.
_NOTE_CONTROL_BYTES = re.compile(b"[\x00-\x09\x0b-\x1f]")
_NOTE_CONTROL_CHARS = re.compile("[\x00-\x09\x0b-\x1f]")
_NOTE_CONTROL_SET = bytes(range(0x20)).replace(b"\n", b"")
_HEX_KEY_ID = re.compile("[0-9a-f]{8}")


class Verifier(Protocol):
    """Verifies signatures of one key, as in golang.org/x/mod/sumdb/note."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True if ``signature`` (without key ID) is valid over ``message``.

        Internal primitive of note opening; public verify functions raise.
        """
        ...


class Signer(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, message: bytes) -> bytes: ...


# --- small shared helpers (also used by checkpoint, cosignature and policy) ---


def _show(value: str | bytes, limit: int = 60) -> str:
    """A short printable rendering of a found value for error messages."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    if len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    return repr(value)


def _b64decode_strict(text: str) -> bytes | None:
    """Standard base64 with padding in canonical form, or None."""
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII str
        return None
    if binascii.b2a_base64(raw, newline=False).decode("ascii") != text:
        return None  # non-zero pad bits, or other non-canonical spelling
    return raw


# The last character before "=" or "==" of canonical base64: the pad bits it
# carries (2, or 4) are zero.
_PAD_1 = frozenset(b"AEIMQUYcgkosw048")
_PAD_2 = frozenset(b"AQgw")


def _b64decode_canonical(data: bytes) -> bytes | None:
    """:func:`_b64decode_strict` of bytes, without encoding the result again:
    strict decoding refuses what is not base64 but for excess padding after a
    whole quantum (hence the length check) and non-zero pad bits (checked
    here). tests/client/test_fast_paths.py checks that the two agree."""
    if len(data) % 4:
        return None
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error:
        return None
    if data.endswith(b"=="):
        if data[-3] not in _PAD_2:
            return None
    elif data.endswith(b"=") and data[-2] not in _PAD_1:
        return None
    return raw


def _b64encode(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def _name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid key name, or None if it is."""
    if not isinstance(name, str):
        return f"must be a str, got {type(name).__name__}"
    if not name:
        return "must not be empty"
    bad = _BAD_NAME_CHARS.search(name)
    if bad is not None:
        char = bad.group()
        if char == "+":
            return f"must not contain '+', got {_show(name)}"
        if char < " ":
            return f"must not contain control characters, got {_show(name)}"
        return f"must not contain spaces (found U+{ord(char):04X}), got {_show(name)}"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"must be valid UTF-8, got {_show(name)}"
    return None


def key_id(name: str, key_type_and_public_key: bytes) -> int:
    """SHA-256(name || 0x0A || type || pubkey)[:4] as a big-endian uint32."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + key_type_and_public_key).digest()
    return int.from_bytes(digest[:4], "big")


def check_key_name(name: str) -> None:
    """Key names are non-empty, without Unicode spaces or '+'. KeyFormatError otherwise.

    ASCII control characters are refused as well: a note cannot contain them,
    so a key with such a name could never sign one.
    """
    problem = _name_problem(name)
    if problem is not None:
        raise KeyFormatError(f"invalid key name: {problem}")


def _split_key(
    key: str, what: str, *, secret: bool
) -> tuple[str, int, int, bytes]:  # name, key ID, type, key material
    """Parse ``name+hexid+base64(type||material)``; checks shapes, not the key ID."""
    if not isinstance(key, str):
        raise TypeError(f"{what} must be a str, got {type(key).__name__}")
    parts = key.split("+", 2)
    if len(parts) != 3:
        shown = "" if secret else f", got {_show(key)}"
        raise KeyFormatError(f"{what}: expected 'name+hexid+base64key'{shown}")
    name, hex_id, b64 = parts
    problem = _name_problem(name)
    if problem is not None:
        raise KeyFormatError(f"{what}: key name {problem}")
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise KeyFormatError(
            f"{what} {name!r}: key ID must be 8 lowercase hex digits, got {_show(hex_id)}"
        )
    raw = _b64decode_strict(b64)
    if raw is None:
        shown = "" if secret else f", got {_show(b64)}"
        raise KeyFormatError(f"{what} {name!r}: key is not canonical standard base64{shown}")
    if len(raw) < 2:
        raise KeyFormatError(
            f"{what} {name!r}: expected a type byte and key material, got {len(raw)} byte(s)"
        )
    return name, int(hex_id, 16), raw[0], raw[1:]


def _check_ed25519_key(
    what: str, name: str, key_type: int, material: bytes, *, types: tuple[int, ...]
) -> None:
    if key_type not in types:
        expected = " or ".join(f"0x{t:02x}" for t in types)
        raise KeyFormatError(f"{what} {name!r}: expected key type {expected}, got 0x{key_type:02x}")
    if len(material) != 32:
        raise KeyFormatError(
            f"{what} {name!r}: expected a 32-byte Ed25519 key, got {len(material)} bytes"
        )


def _load_seed(
    name: str, key_id: int, seed: object, key_type: int
) -> tuple[Ed25519PrivateKey, bytes]:
    """Check a signer key's name, seed and key ID (of ``key_type``); load it once."""
    check_key_name(name)
    if not isinstance(seed, bytes):
        raise TypeError(f"seed must be bytes, got {type(seed).__name__}")
    if len(seed) != ED25519_SEED_SIZE:
        raise ValueError(f"expected a 32-byte Ed25519 seed, got {len(seed)} bytes")
    private, public = _public_from_seed(seed)
    _check_key_id(name, key_id, bytes([key_type]) + public)
    return private, public


def _public_from_seed(seed: bytes) -> tuple[Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.from_private_bytes(seed)
    return private, private.public_key().public_bytes_raw()


def _load_public(public_key: bytes) -> Ed25519PublicKey:
    if not isinstance(public_key, bytes):
        raise TypeError(f"public_key must be bytes, got {type(public_key).__name__}")
    if len(public_key) != ED25519_PUBLIC_KEY_SIZE:
        raise ValueError(f"expected a 32-byte Ed25519 public key, got {len(public_key)} bytes")
    return Ed25519PublicKey.from_public_bytes(public_key)


def _check_key_id(name: str, got: int, type_and_key: bytes) -> None:
    want = key_id(name, type_and_key)
    if got != want:
        raise ValueError(f"key ID mismatch for {name!r}: expected {want:08x}, got {got:08x}")


# --- keys ---


@dataclass(frozen=True, slots=True)
class Ed25519Verifier:
    """A type 0x01 Ed25519 verifier key.

    The constructor checks the name, the key length and that ``key_id`` is
    the spec's key ID for this name and key (ValueError otherwise), and loads
    the public key once so that every verification is a single Ed25519 check.
    """

    name: str
    key_id: int
    public_key: bytes  # 32 raw bytes
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)
    _vkey: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_key_name(self.name)
        object.__setattr__(self, "_key", _load_public(self.public_key))
        _check_key_id(self.name, self.key_id, bytes([SIG_ED25519]) + self.public_key)
        material = _b64encode(bytes([SIG_ED25519]) + self.public_key)
        object.__setattr__(self, "_vkey", f"{self.name}+{self.key_id:08x}+{material}")

    def __reduce__(self) -> tuple[type[Ed25519Verifier], tuple[str, int, bytes]]:
        return (type(self), (self.name, self.key_id, self.public_key))

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != ED25519_SIGNATURE_SIZE:
            return False
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    @property
    def vkey(self) -> str:
        """``name+hexid+base64(0x01||pubkey)`` (computed once, by the constructor)."""
        return self._vkey


@dataclass(frozen=True, slots=True)
class Ed25519Signer:
    """A type 0x01 Ed25519 signer key (holds the seed; never log it).

    The constructor checks the name, the seed length and the key ID
    (ValueError otherwise) and loads the private key once.
    """

    name: str
    key_id: int
    seed: bytes  # 32 raw bytes
    _private: Ed25519PrivateKey = field(init=False, repr=False, compare=False)
    _verifier: Ed25519Verifier = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        private, public = _load_seed(self.name, self.key_id, self.seed, SIG_ED25519)
        object.__setattr__(self, "_private", private)
        object.__setattr__(self, "_verifier", Ed25519Verifier(self.name, self.key_id, public))

    def __reduce__(self) -> tuple[type[Ed25519Signer], tuple[str, int, bytes]]:
        return (type(self), (self.name, self.key_id, self.seed))

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Ed25519Signer:
        """The signer for a 32-byte seed, with its key ID computed."""
        check_key_name(name)
        if not isinstance(seed, bytes) or len(seed) != ED25519_SEED_SIZE:
            raise ValueError("expected a 32-byte Ed25519 seed")
        _, public = _public_from_seed(seed)
        return cls(name, key_id(name, bytes([SIG_ED25519]) + public), seed)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    @property
    def skey(self) -> str:
        """``PRIVATE+KEY+name+hexid+base64(0x01||seed)``."""
        material = _b64encode(bytes([SIG_ED25519]) + self.seed)
        return f"{_SIGNER_KEY_PREFIX}{self.name}+{self.key_id:08x}+{material}"

    @property
    def verifier(self) -> Ed25519Verifier:
        return self._verifier

    def __repr__(self) -> str:  # never show the seed
        return f"Ed25519Signer(name={self.name!r}, key_id={self.key_id:08x})"


def generate_key(name: str) -> Ed25519Signer:
    """A fresh Ed25519 signer key named ``name``."""
    check_key_name(name)
    return Ed25519Signer.from_seed(name, Ed25519PrivateKey.generate().private_bytes_raw())


def _parse_signer_parts(skey: str, what: str) -> tuple[str, int, int, bytes]:
    """Split ``PRIVATE+KEY+name+hexid+base64(type||seed)`` without echoing secrets."""
    if not isinstance(skey, str):
        raise TypeError(f"{what} must be a str, got {type(skey).__name__}")
    if not skey.startswith(_SIGNER_KEY_PREFIX):
        raise KeyFormatError(f"{what}: expected a key starting with 'PRIVATE+KEY+'")
    return _split_key(skey[len(_SIGNER_KEY_PREFIX) :], what, secret=True)


def _checked_seed_key(what: str, name: str, hex_id: int, seed: bytes, *, id_type: int) -> bytes:
    """Check the key ID of a signer key against its public key; return the public key."""
    _, public = _public_from_seed(seed)
    want = key_id(name, bytes([id_type]) + public)
    if hex_id != want:
        raise KeyFormatError(
            f"{what} {name!r}: key ID does not match the key: expected {want:08x}, got {hex_id:08x}"
        )
    return public


def parse_signer_key(skey: str) -> Ed25519Signer:
    """Parse ``PRIVATE+KEY+...`` (type 0x01 only). KeyFormatError on anything else.

    Error messages never contain the key material.
    """
    what = "signer key"
    name, hex_id, key_type, seed = _parse_signer_parts(skey, what)
    _check_ed25519_key(what, name, key_type, seed, types=(SIG_ED25519,))
    _checked_seed_key(what, name, hex_id, seed, id_type=SIG_ED25519)
    return Ed25519Signer(name, hex_id, seed)


def parse_verifier_key(vkey: str) -> Ed25519Verifier:
    """Parse a type 0x01 vkey and check its key ID. KeyFormatError on anything else."""
    what = "verifier key"
    name, hex_id, key_type, public = _split_key(vkey, what, secret=False)
    _check_ed25519_key(what, name, key_type, public, types=(SIG_ED25519,))
    want = key_id(name, bytes([key_type]) + public)
    if hex_id != want:
        raise KeyFormatError(
            f"{what} {name!r}: key ID does not match the key: expected {want:08x}, got {hex_id:08x}"
        )
    return Ed25519Verifier(name, hex_id, public)


# --- notes ---


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line: key name, key ID and the signature bytes (without key ID)."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """``— <name> <base64(keyid || signature)>\\n``."""
        payload = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_SIG_PREFIX}{self.name} {_b64encode(payload)}\n"

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
            f"signature line {number}: expected '— <name> <base64>', got {_show(line)}"
        )
    name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    if not sep:
        raise NoteFormatError(
            f"signature line {number}: expected '— <name> <base64>', got {_show(line)}"
        )
    if not name or _BAD_NAME_CHARS.search(name):  # fast path; the text is valid UTF-8
        raise NoteFormatError(f"signature line {number}: key name {_name_problem(name)}")
    raw = _b64decode_strict(b64)
    if raw is None:
        raise NoteFormatError(
            f"signature line {number} ({_show(name, 40)}): signature is not canonical "
            f"standard base64, got {_show(b64)}"
        )
    if len(raw) < 5:
        raise NoteFormatError(
            f"signature line {number} ({_show(name, 40)}): expected a 4-byte key ID and a "
            f"signature, got {len(raw)} bytes"
        )
    return Signature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def split_note(data: bytes, max_size: int = DEFAULT_MAX_NOTE_SIZE) -> tuple[str, list[Signature]]:
    """Parse a signed note into text and signature lines, without verifying.

    NoteFormatError when malformed (not UTF-8, control characters, no final
    newline, no blank line before signatures, bad signature line, more than
    100 signatures, larger than ``max_size`` bytes).
    """
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
        # The note has no control characters (split_note checked), the line
        # no newline and the name no space: of _BAD_NAME_CHARS, an ASCII name
        # can only hold "+".
        bad_name = b"+" in name_bytes if name_bytes.isascii() else _BAD_NAME_CHARS.search(name)
        raw = _b64decode_canonical(b64)
        if bad_name or raw is None or len(raw) < 5:
            return None
        signatures.append(Signature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return text, signatures


def _check_text(text: str) -> bytes:
    """The UTF-8 encoding of a note text that may be signed; ValueError otherwise."""
    if not isinstance(text, str):
        raise TypeError(f"note text must be a str, got {type(text).__name__}")
    if not text.endswith("\n"):
        raise ValueError(f"note text must end in a newline, got {_show(text[-20:])} at its end")
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
    problem = _name_problem(sig.name)
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


def _index_verifiers(verifiers: Iterable[Verifier]) -> dict[tuple[str, int], Verifier]:
    index: dict[tuple[str, int], Verifier] = {}
    for verifier in verifiers:
        ident = (verifier.name, verifier.key_id)
        other = index.setdefault(ident, verifier)
        if other is not verifier and other != verifier:
            raise ValueError(
                f"two different verifiers share key name {ident[0]!r} and key ID {ident[1]:08x}"
            )
    return index


def verify_note_signatures(
    text: str, signatures: Sequence[Signature], verifiers: Iterable[Verifier]
) -> Note:
    """Apply the spec's verification rules to a split note (see :func:`split_note`).

    Signatures by unknown keys go to :attr:`Note.unverified`; every signature
    by a known key must verify (SignatureError otherwise); at least one must.
    Repeated identical signature lines count once.
    """
    return _verify_indexed(text, signatures, _index_verifiers(verifiers))


def _verify_indexed(
    text: str, signatures: Sequence[Signature], index: Mapping[tuple[str, int], Verifier]
) -> Note:
    """:func:`verify_note_signatures` with the verifiers already indexed by
    :func:`_index_verifiers` (callers that verify often keep the index)."""
    message = text.encode("utf-8")
    verified: list[Signature] = []
    unverified: list[Signature] = []
    # Equal signatures have equal signature bytes: when those are all
    # different (the usual case), there is nothing to skip, and no need to
    # hash the Signature objects.
    distinct = len(set(map(_signature_bytes, signatures))) == len(signatures)
    seen: set[Signature] = set()
    for sig in signatures:
        if not distinct:
            if sig in seen:
                continue
            seen.add(sig)
        verifier = index.get((sig.name, sig.key_id))
        if verifier is None:
            unverified.append(sig)
        elif verifier.verify(message, sig.signature):
            verified.append(sig)
        else:
            raise SignatureError(f"invalid signature by known key {sig.key}")
    if not verified:
        trusted = sorted(f"{name}+{kid:08x}" for name, kid in index)
        found = [sig.key for sig in unverified]
        raise SignatureError(
            f"note has no valid signature by a trusted key: expected one of {trusted}, "
            f"found signatures by {found}"
        )
    return Note(text, tuple(verified), tuple(unverified))


def open_note(
    data: bytes, verifiers: Iterable[Verifier], max_size: int = DEFAULT_MAX_NOTE_SIZE
) -> Note:
    """Open a signed note with the spec's rules.

    Verifiers are matched by (name, key ID). Raises NoteFormatError when
    malformed, SignatureError when no known key signed it or a known key's
    signature is invalid. Two different verifiers with the same name and key
    ID are caller misuse (ValueError).
    """
    text, signatures = split_note(data, max_size)
    return verify_note_signatures(text, signatures, verifiers)
