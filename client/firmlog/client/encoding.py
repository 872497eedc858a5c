"""The encodings the C2SP formats share: strict base64, and found values in messages.

c2sp.org/signed-note, tlog-checkpoint and tlog-proof all carry binary values
as standard base64 with padding, and firmlog accepts each value in one
spelling only: the canonical one, which any encoder produces (no missing or
excess padding, zero pad bits, no whitespace). :func:`b64decode_strict`
decodes text, :func:`b64decode_canonical` bytes; both return None for
anything else, so that each parser says in its own words what was wrong.
"""

from __future__ import annotations

import binascii

__all__ = ["b64decode_canonical", "b64decode_strict", "b64encode", "show"]


def show(value: str | bytes, limit: int = 60) -> str:
    """A short printable rendering of a found value for error messages."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    if len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    return repr(value)


def b64encode(raw: bytes) -> str:
    """Standard base64 with padding: the canonical spelling of ``raw``."""
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def b64decode_strict(text: str) -> bytes | None:
    """The bytes whose canonical standard base64 is ``text``, or None."""
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


def b64decode_canonical(data: bytes) -> bytes | None:
    """:func:`b64decode_strict` of bytes, without encoding the result again.

    Strict decoding refuses what is not base64 but for excess padding after
    a whole quantum (hence the length check) and non-zero pad bits (checked
    here). tests/client/test_fast_paths.py checks that the two agree.
    """
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
