"""Hostile inputs shared by the client and server tests."""

from __future__ import annotations

import base64
import functools
import hashlib
import random

from firmlog.client.note import Signature, split_note

ED25519 = b"\x01"  # signed-note key type


@functools.cache
def colliding_vkeys(name: str) -> tuple[str, str]:
    """Two verifier keys with one name and one 4-byte key ID: a birthday search
    over 32-byte public keys (about 2^16 tries; the key ID is a truncated
    SHA-256). Deterministic for a name."""
    rng = random.Random(name)
    prefix = name.encode("utf-8") + b"\n\x01"
    seen: dict[bytes, bytes] = {}
    while True:
        public = rng.randbytes(32)
        key_id = hashlib.sha256(prefix + public).digest()[:4]
        other = seen.setdefault(key_id, public)
        if other != public:
            first, second = (
                f"{name}+{key_id.hex()}+" + base64.b64encode(ED25519 + p).decode("ascii")
                for p in (other, public)
            )
            return first, second


def with_signature_lines(note: bytes, extra: list[Signature]) -> bytes:
    """``note`` with more signature lines appended (same signed text)."""
    text, signatures = split_note(note)
    lines = "".join(s.line() for s in (*signatures, *extra))
    return f"{text}\n{lines}".encode()


def repeat_first_signature(note: bytes) -> bytes:
    """``note`` with its first signature line twice."""
    _, signatures = split_note(note)
    return with_signature_lines(note, [signatures[0]])
