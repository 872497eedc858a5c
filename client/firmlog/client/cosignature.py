"""c2sp.org/tlog-cosignature: ``cosignature/v1`` Ed25519 witness signatures (type 0x04).

The signature is over ``cosignature/v1\\ntime <ts>\\n<checkpoint body>`` and is
encoded in the note signature line as 8-byte big-endian timestamp || 64-byte
Ed25519 signature. The key ID is computed with type 0x04. Witness vkeys of
type 0x04 are canonical; type 0x01 vkeys are accepted too (the public witness
network publishes them so), still computing the key ID with 0x04.

Witness keys follow the key formats of :mod:`firmlog.client.keys` (the same
functions check and write them). A :class:`CosignatureVerifier` is a
:class:`firmlog.client.keys.Verifier`, so
witness keys can be passed to :func:`~firmlog.client.note.open_note` (or
:func:`~firmlog.client.checkpoint.open_checkpoint`) next to the log key; the
time of each valid cosignature is then read back from ``Note.verified`` with
:func:`cosignature_timestamp`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmlog.client.checkpoint import Checkpoint
from firmlog.client.keys import (
    ED25519_SIGNATURE_SIZE,
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    check_key_name,
    check_written_key_id,
    ed25519_public_key,
    key_id,
    load_public_key,
    load_seed,
    signer_key_text,
    split_signer_key,
    split_verifier_key,
    verifier_key_text,
)
from firmlog.client.note import Signature, add_signatures, split_note

__all__ = [
    "COSIGNATURE_SIZE",
    "MAX_TIMESTAMP",
    "CosignatureSigner",
    "CosignatureVerifier",
    "cosign",
    "cosignature_message",
    "cosignature_timestamp",
    "generate_witness_key",
    "parse_witness_signer_key",
    "parse_witness_verifier_key",
]

MAX_TIMESTAMP = (1 << 63) - 1
TIMESTAMP_SIZE = 8
COSIGNATURE_SIZE = TIMESTAMP_SIZE + ED25519_SIGNATURE_SIZE
_HEADER = b"cosignature/v1\ntime "
_WITNESS_KEY_TYPES = (SIG_COSIGNATURE_V1, SIG_ED25519)  # 0x04 canonical, 0x01 as published


def cosignature_message(checkpoint_text: bytes, timestamp: int) -> bytes:
    """The signed message: ``cosignature/v1\\ntime <ts>\\n`` then the checkpoint text."""
    return b"%s%d\n%s" % (_HEADER, timestamp, checkpoint_text)


def _check_timestamp(timestamp: int) -> None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise TypeError(f"timestamp must be an int, got {type(timestamp).__name__}")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"timestamp must be between 0 and 2^63-1, got {timestamp}")


@dataclass(frozen=True, slots=True)
class CosignatureVerifier:
    """A note Verifier for cosignature/v1 signatures (key ID computed with type 0x04).

    Stateless: the timestamp of a verified cosignature is read from the
    signature itself with :func:`cosignature_timestamp`. The constructor
    checks name, key length and key ID (ValueError otherwise).
    """

    name: str
    key_id: int
    public_key: bytes
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = load_public_key(self.name, self.key_id, SIG_COSIGNATURE_V1, self.public_key)
        object.__setattr__(self, "_key", key)

    def __reduce__(self) -> tuple[type[CosignatureVerifier], tuple[str, int, bytes]]:
        return (type(self), (self.name, self.key_id, self.public_key))

    def verify(self, message: bytes, signature: bytes) -> bool:
        """``message`` is the checkpoint text; ``signature`` is timestamp || Ed25519 signature."""
        if len(signature) != COSIGNATURE_SIZE:
            return False
        timestamp = int.from_bytes(signature[:TIMESTAMP_SIZE], "big")
        if timestamp > MAX_TIMESTAMP:
            return False
        try:  # the message is cosignature_message(message, timestamp)
            self._key.verify(
                signature[TIMESTAMP_SIZE:], b"%s%d\n%s" % (_HEADER, timestamp, message)
            )
        except InvalidSignature:
            return False
        return True

    @property
    def vkey(self) -> str:
        """Canonical type 0x04 vkey."""
        return verifier_key_text(self.name, self.key_id, SIG_COSIGNATURE_V1, self.public_key)


@dataclass(frozen=True, slots=True)
class CosignatureSigner:
    """A witness's cosignature/v1 signing key (holds the seed; never log it)."""

    name: str
    key_id: int
    seed: bytes
    _private: Ed25519PrivateKey = field(init=False, repr=False, compare=False)
    _verifier: CosignatureVerifier = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        private, public = load_seed(self.name, self.key_id, SIG_COSIGNATURE_V1, self.seed)
        object.__setattr__(self, "_private", private)
        object.__setattr__(self, "_verifier", CosignatureVerifier(self.name, self.key_id, public))

    def __reduce__(self) -> tuple[type[CosignatureSigner], tuple[str, int, bytes]]:
        return (type(self), (self.name, self.key_id, self.seed))

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> CosignatureSigner:
        """The witness key for a 32-byte seed, with its (type 0x04) key ID computed."""
        check_key_name(name)
        return cls(name, _witness_key_id(name, ed25519_public_key(seed)), seed)

    def sign_at(self, checkpoint_text: str, timestamp: int) -> bytes:
        """8-byte timestamp || signature over the cosigned message."""
        _check_timestamp(timestamp)
        message = cosignature_message(checkpoint_text.encode("utf-8"), timestamp)
        return timestamp.to_bytes(TIMESTAMP_SIZE, "big") + self._private.sign(message)

    @property
    def verifier(self) -> CosignatureVerifier:
        return self._verifier

    @property
    def skey(self) -> str:
        """``PRIVATE+KEY+name+hexid+base64(0x04||seed)``."""
        return signer_key_text(self.name, self.key_id, SIG_COSIGNATURE_V1, self.seed)

    def __repr__(self) -> str:
        return f"CosignatureSigner(name={self.name!r}, key_id={self.key_id:08x})"


def _witness_key_id(name: str, public_key: bytes) -> int:
    return key_id(name, bytes([SIG_COSIGNATURE_V1]) + public_key)


def generate_witness_key(name: str) -> CosignatureSigner:
    """A fresh witness key named ``name``."""
    check_key_name(name)
    return CosignatureSigner.from_seed(name, Ed25519PrivateKey.generate().private_bytes_raw())


def parse_witness_signer_key(skey: str) -> CosignatureSigner:
    """Parse a witness signer key: ``PRIVATE+KEY+name+hexid+base64(type||seed)``.

    Type 0x04 is canonical; a type 0x01 signer key is accepted too (its key ID
    checked with 0x01, as the tool that wrote it computed it) and becomes a
    cosignature key whose ID is computed with 0x04. KeyFormatError otherwise;
    messages never contain the key material.
    """
    what = "witness signer key"
    name, written, key_type, seed = split_signer_key(skey, what, types=_WITNESS_KEY_TYPES)
    public = ed25519_public_key(seed)
    check_written_key_id(what, name, written, key_type, public)
    return CosignatureSigner(name, _witness_key_id(name, public), seed)


def parse_witness_verifier_key(vkey: str) -> CosignatureVerifier:
    """Accept type 0x04 and type 0x01 vkeys; the verifier's key ID is computed with 0x04.

    The key ID written in the vkey is checked against the vkey's own type:
    0x04 for canonical witness vkeys, 0x01 for Ed25519 vkeys as the public
    witness network publishes them (computed by standard note tooling).
    KeyFormatError otherwise.
    """
    what = "witness verifier key"
    name, written, key_type, public = split_verifier_key(vkey, what, types=_WITNESS_KEY_TYPES)
    check_written_key_id(what, name, written, key_type, public, of=f"the type 0x{key_type:02x} key")
    return CosignatureVerifier(name, _witness_key_id(name, public), public)


def cosignature_timestamp(signature: bytes) -> int:
    """The timestamp of a cosignature/v1 signature (without key ID).

    ValueError if ``signature`` is not 72 bytes (not a cosignature/v1).
    """
    if len(signature) != COSIGNATURE_SIZE:
        raise ValueError(
            f"a cosignature/v1 signature is {COSIGNATURE_SIZE} bytes, got {len(signature)}"
        )
    return int.from_bytes(signature[:TIMESTAMP_SIZE], "big")


def cosign(checkpoint_note: bytes, signer: CosignatureSigner, timestamp: int) -> bytes:
    """Return ``checkpoint_note`` with this witness's cosignature line appended.

    The note must be a well-formed signed note whose text is a checkpoint
    (NoteFormatError/CheckpointFormatError). This only signs: a witness must
    have verified the log's signature and consistency before calling it.
    """
    _check_timestamp(timestamp)
    text, _ = split_note(checkpoint_note)
    Checkpoint.parse(text)
    sig = Signature(signer.name, signer.key_id, signer.sign_at(text, timestamp))
    return add_signatures(checkpoint_note, [sig])
