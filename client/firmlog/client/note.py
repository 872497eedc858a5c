"""c2sp.org/signed-note: keys, signing and opening notes (Ed25519, type 0x01).

A note is UTF-8 text ending in a newline, a blank line, and one or more
signature lines ``— <name> <base64(keyid(4) || signature)>``. Key ID =
SHA-256(name || 0x0A || type || public key)[:4]. Verifier keys are
``name+hexid+base64(type||pubkey)``; signer keys
``PRIVATE+KEY+name+hexid+base64(type||seed)``.

Opening follows the spec: signatures by unknown keys are ignored (kept in
:attr:`Note.unverified`), a signature by a known key that fails rejects the
whole note, at least one known valid signature is required; at most 100
signatures; note size bounded by ``max_size``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

SIG_ED25519 = 0x01
SIG_COSIGNATURE_V1 = 0x04
MAX_SIGNATURES = 100
DEFAULT_MAX_NOTE_SIZE = 1 << 20


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


def key_id(name: str, key_type_and_public_key: bytes) -> int:
    """SHA-256(name || 0x0A || type || pubkey)[:4] as a big-endian uint32."""
    raise NotImplementedError


def check_key_name(name: str) -> None:
    """Key names are non-empty, without Unicode spaces or '+'. KeyFormatError otherwise."""
    raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Ed25519Verifier:
    """A type 0x01 Ed25519 verifier key."""

    name: str
    key_id: int
    public_key: bytes  # 32 raw bytes

    def verify(self, message: bytes, signature: bytes) -> bool:
        raise NotImplementedError

    @property
    def vkey(self) -> str:
        """``name+hexid+base64(0x01||pubkey)``."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Ed25519Signer:
    """A type 0x01 Ed25519 signer key (holds the seed; never log it)."""

    name: str
    key_id: int
    seed: bytes  # 32 raw bytes

    def sign(self, message: bytes) -> bytes:
        raise NotImplementedError

    @property
    def skey(self) -> str:
        """``PRIVATE+KEY+name+hexid+base64(0x01||seed)``."""
        raise NotImplementedError

    @property
    def verifier(self) -> Ed25519Verifier:
        raise NotImplementedError

    def __repr__(self) -> str:  # never show the seed
        return f"Ed25519Signer(name={self.name!r}, key_id={self.key_id:08x})"


def generate_key(name: str) -> Ed25519Signer:
    """A fresh Ed25519 signer key named ``name``."""
    raise NotImplementedError


def parse_signer_key(skey: str) -> Ed25519Signer:
    """Parse ``PRIVATE+KEY+...`` (type 0x01 only). KeyFormatError on anything else."""
    raise NotImplementedError


def parse_verifier_key(vkey: str) -> Ed25519Verifier:
    """Parse a type 0x01 vkey and check its key ID. KeyFormatError on anything else."""
    raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line: key name, key ID and the signature bytes (without key ID)."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """``— <name> <base64(keyid || signature)>\\n``."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Note:
    """An opened note: the signed text, signatures verified and signatures not checked."""

    text: str
    verified: tuple[Signature, ...]
    unverified: tuple[Signature, ...]


def split_note(data: bytes, max_size: int = DEFAULT_MAX_NOTE_SIZE) -> tuple[str, list[Signature]]:
    """Parse a signed note into text and signature lines, without verifying.

    NoteFormatError when malformed (not UTF-8, no final newline, no blank line
    before signatures, bad signature line, too many signatures, too large).
    """
    raise NotImplementedError


def sign_note(text: str, signers: Iterable[Signer]) -> bytes:
    """Sign ``text`` (must end in a newline) with each signer, in order."""
    raise NotImplementedError


def add_signatures(note: bytes, signatures: Sequence[Signature]) -> bytes:
    """Append signature lines to an existing signed note (for cosignatures)."""
    raise NotImplementedError


def open_note(
    data: bytes, verifiers: Iterable[Verifier], max_size: int = DEFAULT_MAX_NOTE_SIZE
) -> Note:
    """Open a signed note with the spec's rules.

    Verifiers are matched by (name, key ID). Raises NoteFormatError when
    malformed, SignatureError when no known key signed it or a known key's
    signature is invalid.
    """
    raise NotImplementedError
