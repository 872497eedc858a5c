"""RFC 8785 JSON Canonicalization Scheme, for the subset firmlog entries use.

Values are ``None``, ``bool``, ``int`` (|n| <= 2**53 - 1), ``str``, ``list``
and ``dict`` with ``str`` keys. Floats are refused: firmlog entries have none,
and refusing them keeps one canonical form per value.

Within that subset RFC 8785 comes down to:

- no insignificant whitespace;
- object members sorted by their names compared as arrays of UTF-16 code
  units (section 3.2.3), which differs from Python's code point order for
  names mixing characters above U+FFFF with U+E000..U+FFFF;
- strings escaped as ECMAScript's ``JSON.stringify`` does (section 3.2.2.2):
  ``\\b \\f \\n \\r \\t \\" \\\\`` in short form, the other characters below
  U+0020 as ``\\u00xx`` with lowercase hex, everything else (DEL, U+2028,
  U+2029, non-ASCII) literal, and the whole text encoded as UTF-8;
- integers in plain decimal (``-0`` has no place: it is ``0``).

:func:`parse_canonical_json` accepts a text only if it is exactly the
canonical encoding of what it contains, so one value has one byte string.
"""

from __future__ import annotations

import json
import re
from typing import Any

from firmlog.client.errors import EntryFormatError

__all__ = ["MAX_DEPTH", "MAX_SAFE_INTEGER", "canonical_json", "parse_canonical_json"]

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 64  # nesting of arrays and objects; firmlog entries use 3

_SHORT_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}
_ESCAPES = {chr(c): _SHORT_ESCAPES.get(chr(c), f"\\u{c:04x}") for c in range(0x20)}
_ESCAPES['"'] = '\\"'
_ESCAPES["\\"] = "\\\\"
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')
_SURROGATE = re.compile("[\ud800-\udfff]")


def _quote(s: str) -> str:
    if _SURROGATE.search(s):
        raise ValueError(f"string {s!r} contains a lone surrogate: not representable in UTF-8")
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _ESCAPES[m.group()], s) + '"'


def _utf16_key(s: str) -> bytes:
    # Big-endian UTF-16 bytes compare exactly like sequences of UTF-16 code units.
    return s.encode("utf-16-be")


def _encode(value: Any, out: list[str], depth: int) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise ValueError(f"integer {value} is outside ±(2**53-1): not exact in I-JSON")
        out.append(str(int(value)))
    elif isinstance(value, str):
        out.append(_quote(value))
    elif isinstance(value, float):
        raise ValueError(f"float {value!r}: firmlog canonical JSON has integers only")
    elif isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} arrays/objects")
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out, depth + 1)
        out.append("]")
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} arrays/objects")
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"object key {key!r} is a {type(key).__name__}, not a str")
            if _SURROGATE.search(key):
                raise ValueError(
                    f"object key {key!r} contains a lone surrogate: not representable in UTF-8"
                )
        out.append("{")
        for i, key in enumerate(sorted(value, key=_utf16_key)):
            if i:
                out.append(",")
            out.append(_quote(key))
            out.append(":")
            _encode(value[key], out, depth + 1)
        out.append("}")
    else:
        raise ValueError(f"{type(value).__name__} is not supported by firmlog canonical JSON")


def canonical_json(value: Any) -> bytes:
    """Encode as RFC 8785 canonical JSON (keys sorted by UTF-16 code units).

    ValueError on unsupported values: floats, integers beyond ±(2**53-1),
    non-str keys, strings with lone surrogates, other types, nesting deeper
    than :data:`MAX_DEPTH`. Tuples are encoded as arrays.
    """
    out: list[str] = []
    _encode(value, out, 0)
    return "".join(out).encode("utf-8")


# --- parsing -----------------------------------------------------------------

_JSON_ESCAPES = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}
_WHITESPACE = " \t\n\r"
_DIGITS = "0123456789"
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_MAX_DIGITS = 16  # 2**53 - 1 has 16 digits; longer is out of range anyway
_STRING_RUN = re.compile(r'[^"\\\x00-\x1f]*')


def _show(ch: str) -> str:
    """A character for an error message."""
    if not ch:
        return "end of input"
    if ch.isprintable() and ch != "'":
        return f"'{ch}'"
    return f"U+{ord(ch):04X}"


class _Parser:
    """Strict RFC 8259 parser for the firmlog subset (no floats, no duplicate keys)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.misordered: tuple[str, str] | None = None  # first pair of members out of order

    def fail(self, what: str, pos: int | None = None) -> EntryFormatError:
        at = self.pos if pos is None else pos
        offset = len(self.text[:at].encode("utf-8", "surrogatepass"))
        return EntryFormatError(f"invalid JSON at byte {offset}: {what}")

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def skip_ws(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in _WHITESPACE:
            pos += 1
        self.pos = pos

    def document(self) -> Any:
        self.skip_ws()
        value = self.value(0)
        self.skip_ws()
        if self.pos != len(self.text):
            raise self.fail(f"expected end of input after the value, found {_show(self.peek())}")
        return value

    def value(self, depth: int) -> Any:
        ch = self.peek()
        if ch == "{":
            return self.obj(depth)
        if ch == "[":
            return self.array(depth)
        if ch == '"':
            return self.string()
        if self.text.startswith(("NaN", "Infinity", "-Infinity"), self.pos):
            raise self.fail("NaN and Infinity are not JSON")
        if ch and ch in "-0123456789":
            return self.number()
        for word, result in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return result
        raise self.fail(f"expected a JSON value, found {_show(ch)}")

    def enter(self, depth: int) -> None:
        if depth >= MAX_DEPTH:
            raise self.fail(f"nested deeper than {MAX_DEPTH} arrays/objects")

    def obj(self, depth: int) -> dict[str, Any]:
        self.enter(depth)
        self.pos += 1  # '{'
        result: dict[str, Any] = {}
        self.skip_ws()
        if self.peek() == "}":
            self.pos += 1
            return result
        while True:
            self.skip_ws()
            if self.peek() != '"':
                raise self.fail(f"expected a member name string, found {_show(self.peek())}")
            key_pos = self.pos
            key = self.string()
            if key in result:
                raise self.fail(f"duplicate member name {_quote_lenient(key)}", key_pos)
            if result and self.misordered is None:
                previous = next(reversed(result))
                if _utf16_key(key) < _utf16_key(previous):
                    self.misordered = (previous, key)
            self.skip_ws()
            if self.peek() != ":":
                raise self.fail(f"expected ':' after a member name, found {_show(self.peek())}")
            self.pos += 1
            self.skip_ws()
            result[key] = self.value(depth + 1)
            self.skip_ws()
            ch = self.peek()
            self.pos += 1
            if ch == "}":
                return result
            if ch != ",":
                raise self.fail(
                    f"expected ',' or '}}' in an object, found {_show(ch)}", self.pos - 1
                )

    def array(self, depth: int) -> list[Any]:
        self.enter(depth)
        self.pos += 1  # '['
        result: list[Any] = []
        self.skip_ws()
        if self.peek() == "]":
            self.pos += 1
            return result
        while True:
            self.skip_ws()
            result.append(self.value(depth + 1))
            self.skip_ws()
            ch = self.peek()
            self.pos += 1
            if ch == "]":
                return result
            if ch != ",":
                raise self.fail(f"expected ',' or ']' in an array, found {_show(ch)}", self.pos - 1)

    def number(self) -> int:
        text, start = self.text, self.pos
        pos = start
        if text[pos : pos + 1] == "-":
            pos += 1
        digits_start = pos
        while pos < len(text) and text[pos] in _DIGITS:
            pos += 1
        digits = text[digits_start:pos]
        if not digits:
            raise self.fail(f"expected a digit after '-', found {_show(text[pos : pos + 1])}", pos)
        if len(digits) > 1 and digits[0] == "0":
            raise self.fail("leading zeros are not JSON", digits_start)
        if text[pos : pos + 1] in (".", "e", "E"):
            raise self.fail("fractions and exponents are not allowed: integers only", pos)
        if len(digits) > _MAX_DIGITS or int(digits) > MAX_SAFE_INTEGER:
            raise self.fail(f"integer {text[start:pos][:40]} is outside ±(2**53-1)", start)
        self.pos = pos
        return int(text[start:pos])

    def string(self) -> str:
        text = self.text
        self.pos += 1  # opening quote
        parts: list[str] = []
        while True:
            m = _STRING_RUN.match(text, self.pos)
            assert m is not None  # the pattern matches the empty string
            parts.append(m.group())
            self.pos = m.end()
            ch = self.peek()
            if ch == '"':
                self.pos += 1
                return "".join(parts)
            if ch == "\\":
                parts.append(self.escape())
            elif not ch:
                raise self.fail("unterminated string")
            else:
                raise self.fail(f"control character {_show(ch)} in a string must be escaped")

    def escape(self) -> str:
        start = self.pos
        ch = self.text[self.pos + 1 : self.pos + 2]
        if ch in _JSON_ESCAPES:
            self.pos += 2
            return _JSON_ESCAPES[ch]
        if ch != "u":
            raise self.fail(f"invalid escape '\\{ch}'", start)
        unit = self.hex4(start)
        if 0xDC00 <= unit <= 0xDFFF:
            raise self.fail(f"lone surrogate \\u{unit:04x}", start)
        if 0xD800 <= unit <= 0xDBFF:
            if self.text[self.pos : self.pos + 2] != "\\u":
                raise self.fail(f"lone surrogate \\u{unit:04x}", start)
            low = self.hex4(self.pos)
            if not 0xDC00 <= low <= 0xDFFF:
                raise self.fail(f"lone surrogate \\u{unit:04x}", start)
            return chr(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
        return chr(unit)

    def hex4(self, start: int) -> int:
        m = _HEX4.match(self.text, self.pos + 2)
        if m is None:
            raise self.fail("expected 4 hex digits after '\\u'", start)
        self.pos += 6
        return int(m.group(), 16)


def _show_char(c: str) -> str:
    if c in '"\\':
        return "\\" + c
    return c if c.isprintable() else ascii(c)[1:-1]


def _quote_lenient(s: str) -> str:
    """A member name for an error message: quoted, shortened, non-printables escaped."""
    shown = "".join(_show_char(c) for c in s[:40])
    return '"' + shown + ('..."' if len(s) > 40 else '"')


def _snippet(data: bytes, at: int) -> str:
    piece = data[at : at + 16]
    text = piece.decode("utf-8", "backslashreplace")
    return repr(text) + ("..." if len(data) > at + 16 else "") if piece else "end of input"


def parse_canonical_json(data: bytes | str) -> Any:
    """Parse JSON that must already be canonical: no duplicate keys, no floats,
    no insignificant whitespace, sorted keys, canonical escapes. EntryFormatError otherwise.

    Objects come back as ``dict``, arrays as ``list``.
    """
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EntryFormatError(
                f"invalid JSON: lone surrogate U+{ord(data[exc.start]):04X} at character "
                f"{exc.start}"
            ) from None
        text = data
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EntryFormatError(
                f"invalid JSON: not UTF-8 at byte {exc.start} (0x{raw[exc.start]:02x})"
            ) from None
    else:
        raise TypeError(f"parse_canonical_json takes bytes or str, not {type(data).__name__}")
    value = _parse_fast(text, raw)
    if value is not _NO_FAST_RESULT:
        return value
    return _parse_strict(text, raw)


def _parse_strict(text: str, raw: bytes) -> Any:
    """The reference path: our own strict parser, then a byte comparison with
    the canonical encoding. Slow, but its errors say exactly what is wrong."""
    parser = _Parser(text)
    value = parser.document()
    canonical = canonical_json(value)
    if canonical != raw:
        at = next(
            (i for i, (a, b) in enumerate(zip(canonical, raw, strict=False)) if a != b),
            min(len(canonical), len(raw)),
        )
        hint = ""
        if parser.misordered is not None:
            first, second = parser.misordered
            hint = (
                f" (member {_quote_lenient(second)} must come before {_quote_lenient(first)}:"
                " names are sorted by UTF-16 code units)"
            )
        raise EntryFormatError(
            f"not canonical JSON (RFC 8785): at byte {at} expected {_snippet(canonical, at)}, "
            f"found {_snippet(raw, at)}{hint}"
        )
    return value


# --- fast path ------------------------------------------------------------------
#
# Entries are parsed on every verification, so the common case (input that is
# canonical) goes through the C json module: parse refusing floats, NaN,
# out-of-range integers and duplicate names, re-encode with json.dumps, and
# compare bytes. json.dumps(ensure_ascii=False, sort_keys=True) escapes exactly
# as RFC 8785 does; it sorts names by code point, which agrees with UTF-16 order
# unless the text holds both characters above U+FFFF (UTF-8 lead bytes F0..F4)
# and characters in U+E000..U+FFFF (lead bytes EE, EF). Lone surrogates from
# escapes fail the UTF-8 encoding. Anything the fast path does not accept, or
# cannot judge, goes through the strict parser, which then decides and explains.

_NO_FAST_RESULT: Any = object()
_SUPPLEMENTARY = re.compile(b"[\xf0-\xf4]")
_HIGH_BMP = re.compile(b"[\xee\xef]")


def _refuse(_: str) -> Any:
    raise ValueError("not in the subset")


def _safe_int(digits: str) -> int:
    if len(digits) > _MAX_DIGITS + 1:  # + 1 for a minus sign
        raise ValueError("out of range")
    value = int(digits)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise ValueError("out of range")
    return value


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name")
    return result


# Built once: json.loads and json.dumps with arguments build one per call.
# The values parsed cannot be circular, and nest less than MAX_DEPTH deep.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_members,
    parse_float=_refuse,
    parse_int=_safe_int,
    parse_constant=_refuse,
)
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, check_circular=False
)


def _parse_fast(text: str, raw: bytes) -> Any:
    if raw.count(b"[") + raw.count(b"{") >= MAX_DEPTH:  # could nest too deep: be exact
        return _NO_FAST_RESULT
    try:
        # As json.loads and json.dumps with these arguments; raw_decode leaves
        # nothing to skip around the value (canonical JSON has no whitespace).
        value, end = _DECODER.raw_decode(text)
        encoded = _ENCODER.encode(value).encode("utf-8")
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return _NO_FAST_RESULT
    if end != len(text) or encoded != raw:
        return _NO_FAST_RESULT
    if not raw.isascii() and _SUPPLEMENTARY.search(raw) and _HIGH_BMP.search(raw):
        return _NO_FAST_RESULT
    return value
