"""c2sp.org/signed-note keys: names, key IDs, the key formats, Ed25519 keys, key rings.

A key has a name, a signature type and key material. Its key ID is
SHA-256(name || 0x0A || type || public key)[:4]. Verifier keys are written
``name+hexid+base64(type||pubkey)``, signer keys
``PRIVATE+KEY+name+hexid+base64(type||seed)`` (the golang.org/x/mod/sumdb/note
encoding): key IDs as exactly eight lowercase hex digits, base64 canonical
(:mod:`firmlog.client.encoding`). Key names are non-empty, without Unicode
spaces, '+' or ASCII control characters.

This module implements type 0x01 (Ed25519): :class:`Ed25519Verifier`,
:class:`Ed25519Signer`, :func:`parse_verifier_key`, :func:`parse_signer_key`.
The key-format functions below it (:func:`split_verifier_key`,
:func:`load_public_key`, ...) serve every Ed25519-based type, so
:mod:`firmlog.client.cosignature` builds type 0x04 witness keys from the same
rules.

A :class:`KeyRing` is a set of verifiers indexed once by name and key ID, as
signature lines name keys: notes, checkpoints, entries and policies are
verified against rings built once, not against lists indexed at every call.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmlog.client.encoding import b64decode_strict, b64encode, show
from firmlog.client.errors import KeyFormatError

__all__ = [
    "ED25519_PUBLIC_KEY_SIZE",
    "ED25519_SEED_SIZE",
    "ED25519_SIGNATURE_SIZE",
    "SIG_COSIGNATURE_V1",
    "SIG_ED25519",
    "Ed25519Signer",
    "Ed25519Verifier",
    "KeyRing",
    "PublicKeyVerifier",
    "Signer",
    "Verifier",
    "check_key_name",
    "check_written_key_id",
    "ed25519_public_key",
    "generate_key",
    "key_id",
    "key_name_problem",
    "load_public_key",
    "load_seed",
    "parse_signer_key",
    "parse_verifier_key",
    "signer_key_text",
    "split_signer_key",
    "split_verifier_key",
    "verifier_key_text",
]

SIG_ED25519 = 0x01
SIG_COSIGNATURE_V1 = 0x04

ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SEED_SIZE = 32
ED25519_SIGNATURE_SIZE = 64

_SIGNER_KEY_PREFIX = "PRIVATE+KEY+"

# Unicode White_Space (the set Go's unicode.IsSpace uses), '+', and the ASCII
# controls, which can never appear in a note.
_NAME_EXCLUDED = "\x00-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000+"
_BAD_NAME_CHARS = re.compile(f"[{_NAME_EXCLUDED}]")
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


class PublicKeyVerifier(Verifier, Protocol):
    """A verifier that shows its raw public key (every key type of firmlog does)."""

    @property
    def public_key(self) -> bytes: ...


class Signer(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, message: bytes) -> bytes: ...


# --- names and key IDs --------------------------------------------------------------


def key_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid key name, or None if it is."""
    if (
        type(name) is str
        and name.isascii()
        and name.isprintable()  # ASCII: no control characters (nor DEL, allowed below)
        and name
        and " " not in name
        and "+" not in name
    ):
        return None  # the common case, at once
    if not isinstance(name, str):
        return f"must be a str, got {type(name).__name__}"
    if not name:
        return "must not be empty"
    bad = _BAD_NAME_CHARS.search(name)
    if bad is not None:
        char = bad.group()
        if char == "+":
            return f"must not contain '+', got {show(name)}"
        if char < " ":
            return f"must not contain control characters, got {show(name)}"
        return f"must not contain spaces (found U+{ord(char):04X}), got {show(name)}"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"must be valid UTF-8, got {show(name)}"
    return None


def check_key_name(name: str) -> None:
    """Key names are non-empty, without Unicode spaces or '+'. KeyFormatError otherwise.

    ASCII control characters are refused as well: a note cannot contain them,
    so a key with such a name could never sign one.
    """
    problem = key_name_problem(name)
    if problem is not None:
        raise KeyFormatError(f"invalid key name: {problem}")


def key_id(name: str, key_type_and_public_key: bytes) -> int:
    """SHA-256(name || 0x0A || type || pubkey)[:4] as a big-endian uint32."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + key_type_and_public_key).digest()
    return int.from_bytes(digest[:4], "big")


# --- the key formats, for every Ed25519-based key type ---------------------------------


def verifier_key_text(name: str, key_id: int, key_type: int, public_key: bytes) -> str:
    """``name+hexid+base64(type||pubkey)``."""
    return f"{name}+{key_id:08x}+{b64encode(bytes([key_type]) + public_key)}"


def signer_key_text(name: str, key_id: int, key_type: int, seed: bytes) -> str:
    """``PRIVATE+KEY+name+hexid+base64(type||seed)``."""
    return _SIGNER_KEY_PREFIX + verifier_key_text(name, key_id, key_type, seed)


def split_verifier_key(
    vkey: str, what: str, *, types: tuple[int, ...]
) -> tuple[str, int, int, bytes]:
    """Name, key ID as written, type and public key of a verifier key whose
    type is one of ``types`` and whose key is 32 bytes; KeyFormatError
    (naming ``what``) otherwise. The key ID is not checked: that is
    :func:`check_written_key_id`, with the type the key ID was computed with."""
    return _split_key(vkey, what, types, secret=False)


def split_signer_key(
    skey: str, what: str, *, types: tuple[int, ...]
) -> tuple[str, int, int, bytes]:
    """:func:`split_verifier_key` of ``PRIVATE+KEY+...``, giving the seed;
    error messages never contain the key material."""
    if not isinstance(skey, str):
        raise TypeError(f"{what} must be a str, got {type(skey).__name__}")
    if not skey.startswith(_SIGNER_KEY_PREFIX):
        raise KeyFormatError(f"{what}: expected a key starting with 'PRIVATE+KEY+'")
    return _split_key(skey[len(_SIGNER_KEY_PREFIX) :], what, types, secret=True)


def _split_key(
    key: str, what: str, types: tuple[int, ...], *, secret: bool
) -> tuple[str, int, int, bytes]:
    if not isinstance(key, str):
        raise TypeError(f"{what} must be a str, got {type(key).__name__}")
    parts = key.split("+", 2)
    if len(parts) != 3:
        shown = "" if secret else f", got {show(key)}"
        raise KeyFormatError(f"{what}: expected 'name+hexid+base64key'{shown}")
    name, hex_id, b64 = parts
    problem = key_name_problem(name)
    if problem is not None:
        raise KeyFormatError(f"{what}: key name {problem}")
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise KeyFormatError(
            f"{what} {name!r}: key ID must be 8 lowercase hex digits, got {show(hex_id)}"
        )
    raw = b64decode_strict(b64)
    if raw is None:
        shown = "" if secret else f", got {show(b64)}"
        raise KeyFormatError(f"{what} {name!r}: key is not canonical standard base64{shown}")
    if len(raw) < 2:
        raise KeyFormatError(
            f"{what} {name!r}: expected a type byte and key material, got {len(raw)} byte(s)"
        )
    key_type, material = raw[0], raw[1:]
    if key_type not in types:
        expected = " or ".join(f"0x{t:02x}" for t in types)
        raise KeyFormatError(f"{what} {name!r}: expected key type {expected}, got 0x{key_type:02x}")
    if len(material) != 32:
        raise KeyFormatError(
            f"{what} {name!r}: expected a 32-byte Ed25519 key, got {len(material)} bytes"
        )
    return name, int(hex_id, 16), key_type, material


def check_written_key_id(
    what: str, name: str, written: int, key_type: int, public_key: bytes, *, of: str = "the key"
) -> None:
    """KeyFormatError unless ``written`` is the key ID of ``name`` and
    ``key_type || public_key``; ``of`` names the key in the message."""
    want = key_id(name, bytes([key_type]) + public_key)
    if written != want:
        raise KeyFormatError(
            f"{what} {name!r}: key ID does not match {of}: expected {want:08x}, got {written:08x}"
        )


def ed25519_public_key(seed: bytes) -> bytes:
    """The Ed25519 public key of a 32-byte seed (ValueError for anything else)."""
    if not isinstance(seed, bytes) or len(seed) != ED25519_SEED_SIZE:
        raise ValueError("expected a 32-byte Ed25519 seed")
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def load_public_key(name: str, key_id: int, key_type: int, public_key: bytes) -> Ed25519PublicKey:
    """Check a verifier's name, public key and key ID (of ``key_type``), and load
    the key once. KeyFormatError for the name, TypeError/ValueError otherwise."""
    check_key_name(name)
    if not isinstance(public_key, bytes):
        raise TypeError(f"public_key must be bytes, got {type(public_key).__name__}")
    if len(public_key) != ED25519_PUBLIC_KEY_SIZE:
        raise ValueError(f"expected a 32-byte Ed25519 public key, got {len(public_key)} bytes")
    loaded = Ed25519PublicKey.from_public_bytes(public_key)
    _check_key_id(name, key_id, bytes([key_type]) + public_key)
    return loaded


def load_seed(
    name: str, key_id: int, key_type: int, seed: object
) -> tuple[Ed25519PrivateKey, bytes]:
    """Check a signer's name, seed and key ID (of ``key_type``); load it once.

    Returns the private key and the raw public key."""
    check_key_name(name)
    if not isinstance(seed, bytes):
        raise TypeError(f"seed must be bytes, got {type(seed).__name__}")
    if len(seed) != ED25519_SEED_SIZE:
        raise ValueError(f"expected a 32-byte Ed25519 seed, got {len(seed)} bytes")
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes_raw()
    _check_key_id(name, key_id, bytes([key_type]) + public)
    return private, public


def _check_key_id(name: str, got: int, type_and_key: bytes) -> None:
    want = key_id(name, type_and_key)
    if got != want:
        raise ValueError(f"key ID mismatch for {name!r}: expected {want:08x}, got {got:08x}")


# --- Ed25519 (type 0x01) -------------------------------------------------------------


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
        key = load_public_key(self.name, self.key_id, SIG_ED25519, self.public_key)
        object.__setattr__(self, "_key", key)
        vkey = verifier_key_text(self.name, self.key_id, SIG_ED25519, self.public_key)
        object.__setattr__(self, "_vkey", vkey)

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
        private, public = load_seed(self.name, self.key_id, SIG_ED25519, self.seed)
        object.__setattr__(self, "_private", private)
        object.__setattr__(self, "_verifier", Ed25519Verifier(self.name, self.key_id, public))

    def __reduce__(self) -> tuple[type[Ed25519Signer], tuple[str, int, bytes]]:
        return (type(self), (self.name, self.key_id, self.seed))

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Ed25519Signer:
        """The signer for a 32-byte seed, with its key ID computed."""
        check_key_name(name)
        public = ed25519_public_key(seed)
        return cls(name, key_id(name, bytes([SIG_ED25519]) + public), seed)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    @property
    def skey(self) -> str:
        """``PRIVATE+KEY+name+hexid+base64(0x01||seed)``."""
        return signer_key_text(self.name, self.key_id, SIG_ED25519, self.seed)

    @property
    def verifier(self) -> Ed25519Verifier:
        return self._verifier

    def __repr__(self) -> str:  # never show the seed
        return f"Ed25519Signer(name={self.name!r}, key_id={self.key_id:08x})"


def generate_key(name: str) -> Ed25519Signer:
    """A fresh Ed25519 signer key named ``name``."""
    check_key_name(name)
    return Ed25519Signer.from_seed(name, Ed25519PrivateKey.generate().private_bytes_raw())


def parse_signer_key(skey: str) -> Ed25519Signer:
    """Parse ``PRIVATE+KEY+...`` (type 0x01 only). KeyFormatError on anything else.

    Error messages never contain the key material.
    """
    what = "signer key"
    name, written, key_type, seed = split_signer_key(skey, what, types=(SIG_ED25519,))
    check_written_key_id(what, name, written, key_type, ed25519_public_key(seed))
    return Ed25519Signer(name, written, seed)


def parse_verifier_key(vkey: str) -> Ed25519Verifier:
    """Parse a type 0x01 vkey and check its key ID. KeyFormatError on anything else.

    Verifiers are immutable, so the last :data:`VERIFIER_CACHE_SIZE` keys parsed
    are kept: a key named again (in every admission a log receives, in the key
    set it then records) is looked up, not parsed and loaded again. A key that
    fails to parse is never kept: it fails again, with the same error.
    """
    if type(vkey) is str:
        return _parse_verifier_key_cached(vkey)
    return _parse_verifier_key(vkey)


VERIFIER_CACHE_SIZE = 1024
"""How many parsed verifier keys :func:`parse_verifier_key` keeps (least recently used out)."""


@functools.lru_cache(maxsize=VERIFIER_CACHE_SIZE)
def _parse_verifier_key_cached(vkey: str) -> Ed25519Verifier:
    return _parse_verifier_key(vkey)


def _parse_verifier_key(vkey: str) -> Ed25519Verifier:
    what = "verifier key"
    name, written, key_type, public = split_verifier_key(vkey, what, types=(SIG_ED25519,))
    check_written_key_id(what, name, written, key_type, public)
    return Ed25519Verifier(name, written, public)


# --- key rings ---------------------------------------------------------------------------

V = TypeVar("V", bound=Verifier)
PV = TypeVar("PV", bound=PublicKeyVerifier)


class KeyRing(Generic[V]):
    """Verifiers indexed once by name and key ID, as signature lines name keys.

    Built from any iterable of verifiers; the same verifier given twice is
    kept once, in the order first given. Two different verifiers with one
    name and key ID are caller misuse (ValueError): a signature line could
    not say which of the two made it. A ring is itself an iterable of its
    verifiers, so it goes wherever verifiers do, and whatever takes verifiers
    uses a ring as it is instead of indexing them again.

    :attr:`by_id` maps ``(name, key_id)`` to the verifier (read-only).
    """

    __slots__ = ("_distinct", "by_id")

    by_id: Mapping[tuple[str, int], V]

    def __init__(self, verifiers: Iterable[V] = ()) -> None:
        by_id: dict[tuple[str, int], V] = {}
        for verifier in verifiers:
            ident = (verifier.name, verifier.key_id)
            other = by_id.setdefault(ident, verifier)
            if other is not verifier and other != verifier:
                raise ValueError(
                    f"two different verifiers share key name {ident[0]!r} and key ID {ident[1]:08x}"
                )
        self.by_id = by_id
        self._distinct: dict[bytes, Any] | None = None  # distinct(), once asked

    @classmethod
    def of(cls, verifiers: Iterable[V]) -> KeyRing[V]:
        """``verifiers`` if it is a ring already, else a ring of them."""
        if isinstance(verifiers, KeyRing):
            return verifiers
        return cls(verifiers)

    def __iter__(self) -> Iterator[V]:
        return iter(self.by_id.values())

    def __len__(self) -> int:
        return len(self.by_id)

    def __repr__(self) -> str:
        return f"KeyRing({self.key_names()})"

    def key_names(self) -> list[str]:
        """``name+hexid`` of every key, sorted: how messages list the keys."""
        return sorted(f"{name}+{kid:08x}" for name, kid in self.by_id)

    def distinct(self: KeyRing[PV]) -> Mapping[bytes, PV]:
        """One verifier per public key, in order: a key under two names is one key."""
        if self._distinct is None:
            distinct: dict[bytes, PV] = {}
            for verifier in self.by_id.values():
                distinct.setdefault(verifier.public_key, verifier)
            self._distinct = distinct
        return self._distinct
