"""RFC 8785 JSON Canonicalization Scheme, for the subset firmlog entries use.

Values are ``None``, ``bool``, ``int`` (|n| <= 2**53 - 1), ``str``, ``list``
and ``dict`` with ``str`` keys. Floats are refused: firmlog entries have none,
and refusing them keeps one canonical form per value.
"""

from __future__ import annotations

from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1


def canonical_json(value: Any) -> bytes:
    """Encode as RFC 8785 canonical JSON (keys sorted by UTF-16 code units).

    ValueError on unsupported values.
    """
    raise NotImplementedError


def parse_canonical_json(data: bytes | str) -> Any:
    """Parse JSON that must already be canonical: no duplicate keys, no floats,
    no insignificant whitespace, sorted keys, canonical escapes. EntryFormatError otherwise."""
    raise NotImplementedError
