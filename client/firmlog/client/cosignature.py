"""c2sp.org/tlog-cosignature: ``cosignature/v1`` Ed25519 witness signatures (type 0x04).

The signature is over ``cosignature/v1\\ntime <ts>\\n<checkpoint body>`` and is
encoded in the note signature line as 8-byte big-endian timestamp || 64-byte
Ed25519 signature. The key ID is computed with type 0x04. Witness vkeys of
type 0x04 are canonical; type 0x01 vkeys are accepted too (the public witness
network publishes them so), still computing the key ID with 0x04.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CosignatureVerifier:
    """A note Verifier for cosignature/v1 signatures; records the timestamp it saw."""

    name: str
    key_id: int
    public_key: bytes

    def verify(self, message: bytes, signature: bytes) -> bool:
        raise NotImplementedError

    @property
    def vkey(self) -> str:
        """Canonical type 0x04 vkey."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class CosignatureSigner:
    name: str
    key_id: int
    seed: bytes

    def sign_at(self, checkpoint_text: str, timestamp: int) -> bytes:
        """8-byte timestamp || signature over the cosigned message."""
        raise NotImplementedError

    @property
    def verifier(self) -> CosignatureVerifier:
        raise NotImplementedError

    @property
    def skey(self) -> str:
        """``PRIVATE+KEY+name+hexid+base64(0x04||seed)``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"CosignatureSigner(name={self.name!r}, key_id={self.key_id:08x})"


def generate_witness_key(name: str) -> CosignatureSigner:
    raise NotImplementedError


def parse_witness_signer_key(skey: str) -> CosignatureSigner:
    raise NotImplementedError


def parse_witness_verifier_key(vkey: str) -> CosignatureVerifier:
    """Accept type 0x04 and type 0x01 vkeys; the key ID is checked against type 0x04."""
    raise NotImplementedError


def cosignature_timestamp(signature: bytes) -> int:
    """The timestamp of a cosignature/v1 signature (without key ID)."""
    raise NotImplementedError


def cosign(checkpoint_note: bytes, signer: CosignatureSigner, timestamp: int) -> bytes:
    """Return ``checkpoint_note`` with this witness's cosignature line appended."""
    raise NotImplementedError
