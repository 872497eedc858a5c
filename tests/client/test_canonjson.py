"""RFC 8785 canonical JSON for firmlog's subset: encoding, strict parsing, fuzzing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.mutations import mutated

from firmlog.client.canonjson import (
    MAX_DEPTH,
    MAX_SAFE_INTEGER,
    _parse_strict,
    canonical_json,
    parse_canonical_json,
)
from firmlog.client.errors import EntryFormatError

# --- RFC 8785's own examples (the parts within our subset) ---------------------


def test_rfc8785_sorting_example() -> None:
    # RFC 8785 section 3.2.3: names sorted by UTF-16 code units, values literal.
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    expected = (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    ).encode()
    assert canonical_json(value) == expected
    assert parse_canonical_json(expected) == value


def test_rfc8785_string_and_literals_example() -> None:
    # RFC 8785 section 3.2.2 input, without its "numbers" member (floats are
    # outside firmlog's subset).
    source = (
        "{\n"
        '  "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",\n'
        '  "literals": [null, true, false]\n'
        "}"
    )
    expected = '{"literals":[null,true,false],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    assert canonical_json(json.loads(source)) == expected.encode()
    with pytest.raises(EntryFormatError, match=r"not canonical JSON \(RFC 8785\): at byte 1"):
        parse_canonical_json(source)
    assert parse_canonical_json(expected) == json.loads(source)


def test_rfc8785_numbers_example_is_refused() -> None:
    source = "[333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001]"
    with pytest.raises(EntryFormatError, match="fractions and exponents are not allowed"):
        parse_canonical_json(source)
    with pytest.raises(ValueError, match="integers only"):
        canonical_json(json.loads(source))


# --- encoding -----------------------------------------------------------------


def test_sort_order_is_utf16_not_code_points() -> None:
    # U+1F600 is D83D DE00 in UTF-16, which sorts before U+E000 and U+FFFD,
    # though its code point is larger.
    value = {"\ufffd": 3, "\ue000": 2, "\U0001f600": 1, "z": 0}
    assert sorted(value) == ["z", "\ue000", "\ufffd", "\U0001f600"]  # Python's order
    assert canonical_json(value) == '{"z":0,"\U0001f600":1,"\ue000":2,"\ufffd":3}'.encode()
    assert list(parse_canonical_json(canonical_json(value))) == [
        "z",
        "\U0001f600",
        "\ue000",
        "\ufffd",
    ]


def test_sort_order_prefix_and_nested() -> None:
    value = {"ab": {"b": 1, "a": [{"y": 1, "x": 2}]}, "a": None, "": True}
    assert canonical_json(value) == b'{"":true,"a":null,"ab":{"a":[{"x":2,"y":1}],"b":1}}'


@pytest.mark.parametrize(
    ("char", "encoded"),
    [
        ("\b", "\\b"),
        ("\t", "\\t"),
        ("\n", "\\n"),
        ("\f", "\\f"),
        ("\r", "\\r"),
        ('"', '\\"'),
        ("\\", "\\\\"),
        ("\x00", "\\u0000"),
        ("\x01", "\\u0001"),
        ("\x0b", "\\u000b"),
        ("\x1b", "\\u001b"),
        ("\x1f", "\\u001f"),
        ("/", "/"),
        ("\x7f", "\x7f"),
        ("\x80", "\x80"),
        ("\u2028", "\u2028"),
        ("\u2029", "\u2029"),
        ("\ufeff", "\ufeff"),
        ("é", "é"),
        ("\U0001f600", "\U0001f600"),
    ],
)
def test_string_escapes(char: str, encoded: str) -> None:
    expected = f'"{encoded}"'.encode()
    assert canonical_json(char) == expected
    assert parse_canonical_json(expected) == char


def test_every_control_character() -> None:
    short = {8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}
    for c in range(0x20):
        want = short.get(c, f"\\u{c:04x}")
        assert canonical_json(chr(c)) == f'"{want}"'.encode()


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (None, b"null"),
        (True, b"true"),
        (False, b"false"),
        (0, b"0"),
        (-1, b"-1"),
        (MAX_SAFE_INTEGER, b"9007199254740991"),
        (-MAX_SAFE_INTEGER, b"-9007199254740991"),
        ("", b'""'),
        ([], b"[]"),
        ((), b"[]"),
        ({}, b"{}"),
        ((1, "a", [None]), b'[1,"a",[null]]'),
    ],
)
def test_scalars_and_containers(value: Any, encoded: bytes) -> None:
    assert canonical_json(value) == encoded


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.0, "float 1.0"),
        (float("nan"), "float nan"),
        (MAX_SAFE_INTEGER + 1, "outside"),
        (-MAX_SAFE_INTEGER - 1, "outside"),
        ({1: "a"}, "object key 1 is a int"),
        ("\ud800", "lone surrogate"),
        ({"\udc00": 1}, "lone surrogate"),
        (b"bytes", "bytes is not supported"),
        ({"a"}, "set is not supported"),
        ([[1.5]], "float 1.5"),
    ],
)
def test_unsupported_values(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        canonical_json(value)


def test_depth_limit() -> None:
    ok: Any = []
    for _ in range(MAX_DEPTH - 1):
        ok = [ok]
    assert parse_canonical_json(canonical_json(ok)) == ok
    with pytest.raises(ValueError, match="nested deeper"):
        canonical_json([ok])
    with pytest.raises(EntryFormatError, match="nested deeper"):
        parse_canonical_json(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    with pytest.raises(EntryFormatError, match="nested deeper"):
        parse_canonical_json(b"[" * 100_000)


def test_bool_is_not_an_int_and_int_subclasses() -> None:
    assert canonical_json([True, 1]) == b"[true,1]"
    assert parse_canonical_json(b"[true,1]") == [True, 1]
    assert type(parse_canonical_json(b"[true,1]")[1]) is int


# --- strict parsing -----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "invalid JSON at byte 0: expected a JSON value, found end of input"),
        (b" 1", r"not canonical JSON \(RFC 8785\): at byte 0 expected '1', found ' 1'"),
        (b"1 ", r"not canonical JSON \(RFC 8785\): at byte 1 expected end of input"),
        (b'{"a": 1}', r"not canonical JSON \(RFC 8785\): at byte 5"),
        (b"[1, 2]", r"not canonical JSON \(RFC 8785\): at byte 3"),
        (
            b'{"b":1,"a":2}',
            r'at byte 2 expected \'a":2,"b":1}\', found \'b":1,"a":2}\' '
            r'\(member "a" must come before "b": names are sorted by UTF-16 code units\)',
        ),
        (
            '{"\ue000":1,"\U0001f600":2}'.encode(),
            r'member "\U0001f600" must come before "\\ue000"',
        ),
        (b'"\\u0041"', r"not canonical JSON \(RFC 8785\): at byte 1 expected 'A\"'"),
        (b'"\\/"', r"not canonical JSON .* expected '/\"'"),
        (b'"\\u001F"', r"not canonical JSON .* at byte 6 expected 'f\"', found 'F\"'"),
        (b'"\\u000a"', r"not canonical JSON .* at byte 2 expected 'n\"', found 'u000a\"'"),
        (b'"\\ud83d\\ude00"', "not canonical JSON"),
        (b"-0", r"not canonical JSON .* expected '0', found '-0'"),
        (b'{"a":1,"a":1}', 'invalid JSON at byte 7: duplicate member name "a"'),
        (b'{"a":1,"\\u0061":2}', 'invalid JSON at byte 7: duplicate member name "a"'),
        (b"1.0", "invalid JSON at byte 1: fractions and exponents are not allowed"),
        (b"1e3", "fractions and exponents are not allowed"),
        (b"1E3", "fractions and exponents are not allowed"),
        (b"[0.5]", "fractions and exponents are not allowed"),
        (b"NaN", "NaN and Infinity are not JSON"),
        (b"Infinity", "NaN and Infinity are not JSON"),
        (b"-Infinity", "NaN and Infinity are not JSON"),
        (b"01", "leading zeros are not JSON"),
        (b"-", "expected a digit after '-', found end of input"),
        (b"+1", "expected a JSON value, found '\\+'"),
        (b"9007199254740992", r"integer 9007199254740992 is outside ±\(2\*\*53-1\)"),
        (b"-9007199254740992", "is outside"),
        (b"1" * 5000, "is outside"),
        (b'"\\ud800"', r"invalid JSON at byte 1: lone surrogate \\ud800"),
        (b'"\\udc00"', r"lone surrogate \\udc00"),
        (b'"\\ud800\\u0041"', r"lone surrogate \\ud800"),
        (b'"\\ud800x"', r"lone surrogate \\ud800"),
        (b'"\xed\xa0\x80"', r"not UTF-8 at byte 1 \(0xed\)"),
        (b'"\xff"', r"not UTF-8 at byte 1 \(0xff\)"),
        (b'"\xc3"', "not UTF-8"),
        (b'"a\nb"', "control character U\\+000A in a string must be escaped"),
        (b'"a\x7f"', None),  # DEL is literal in canonical JSON: accepted
        (b'"abc', "unterminated string"),
        (b'"\\x"', r"invalid escape '\\x'"),
        (b'"\\u12"', "expected 4 hex digits"),
        (b"[1,]", "invalid JSON at byte 3: expected a JSON value, found ']'"),
        (b"[1 2]", "expected ',' or ']' in an array, found '2'"),
        (b'{"a":1 "b":2}', "expected ',' or '}' in an object, found '\"'"),
        (b'{"a" 1}', "expected ':' after a member name"),
        (b"{a:1}", "expected a member name string, found 'a'"),
        (b"{,}", "expected a member name string, found ','"),
        (b"tru", "expected a JSON value, found 't'"),
        (b"nul", "expected a JSON value"),
        (b"[]]", "expected end of input after the value, found ']'"),
        (b"{}{}", "expected end of input after the value"),
        ("\ufeff1".encode(), "expected a JSON value, found U\\+FEFF"),
    ],
)
def test_parse_errors(data: bytes, message: str | None) -> None:
    if message is None:
        parse_canonical_json(data)
        return
    with pytest.raises(EntryFormatError, match=message):
        parse_canonical_json(data)


def test_parse_str_input() -> None:
    assert parse_canonical_json('{"a":"é"}') == {"a": "é"}
    with pytest.raises(EntryFormatError, match="lone surrogate U\\+D800 at character 6"):
        parse_canonical_json('{"a":"\ud800"}')
    with pytest.raises(TypeError):
        parse_canonical_json(1)  # type: ignore[arg-type]


def test_parse_reports_byte_offsets_after_multibyte_text() -> None:
    with pytest.raises(EntryFormatError, match="at byte 9: fractions"):
        parse_canonical_json('["éé",1.5]')


# --- properties ---------------------------------------------------------------

_SAFE_INTS = st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)  # no surrogates
# What JSON is built from, and bytes that are never valid in it.
_JSON_PIECES = (*(bytes([b]) for b in b'"\\,:[]{}0123456789-.eEu \x00\x7f\xff'), b"\xc3")
_VALUES = st.recursive(
    st.none() | st.booleans() | _SAFE_INTS | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_VALUES)
def test_round_trip(value: Any) -> None:
    encoded = canonical_json(value)
    parsed = parse_canonical_json(encoded)
    assert parsed == value
    assert canonical_json(parsed) == encoded
    assert json.loads(encoded) == value  # it is JSON, and the same JSON
    assert _parse_strict(encoded.decode("utf-8"), encoded) == value


_BMP_TEXT = st.text(st.characters(codec="utf-8", max_codepoint=0xFFFF), max_size=12)
_BMP_VALUES = st.recursive(
    st.none() | st.booleans() | _SAFE_INTS | _BMP_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_BMP_TEXT, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_BMP_VALUES)
def test_matches_python_json_for_bmp_keys(value: Any) -> None:
    # For names within the BMP, UTF-16 order is code point order, and Python's
    # json escapes exactly like RFC 8785 with ensure_ascii=False.
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    assert canonical_json(value) == expected.encode()


@settings(max_examples=200, deadline=None)
@given(_VALUES.map(canonical_json).flatmap(lambda v: mutated(v, pieces=_JSON_PIECES)))
def test_fuzz_mutated_pieces(data: bytes) -> None:
    try:
        value = parse_canonical_json(data)
    except EntryFormatError:
        return
    assert canonical_json(value) == data


def _outcome(data: bytes) -> tuple[str, Any]:
    try:
        return ("ok", parse_canonical_json(data))
    except EntryFormatError as exc:
        return ("error", str(exc))


def _strict_outcome(data: bytes) -> tuple[str, Any]:
    try:
        return ("ok", _parse_strict(data.decode("utf-8"), data))
    except UnicodeDecodeError:
        return _outcome(data)  # rejected before either path runs
    except EntryFormatError as exc:
        return ("error", str(exc))


@settings(max_examples=300, deadline=None)
@given(_VALUES, st.data())
def test_fuzz_mutated(value: Any, data: st.DataObject) -> None:
    encoded = bytearray(canonical_json(value))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(encoded)))
        op = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = data.draw(st.sampled_from(b' \t\n"\\,:[]{}0123456789-.eEaAu\x00\x7f\xc3\xff'))
        if op == "insert":
            encoded[at:at] = bytes([byte])
        elif at < len(encoded):
            encoded[at : at + 1] = b"" if op == "delete" else bytes([byte])
    # The C fast path and the strict reference parser agree, errors included.
    outcome = _outcome(bytes(encoded))
    assert outcome == _strict_outcome(bytes(encoded))
    if outcome[0] == "ok":
        assert canonical_json(outcome[1]) == bytes(encoded)


@pytest.mark.parametrize(
    "data",
    [
        '{"\U0001f600":1,"\ue000":2}'.encode(),  # canonical; json.dumps orders it otherwise
        '{"\ue000":2,"\U0001f600":1}'.encode(),  # json.dumps order; not canonical
        '["\U0001f600",{"\ufffd":1,"a":2}]'.encode(),
        b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
        b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1),
        b'"\\ud800"',
        b"9007199254740992",
        b"-9007199254740991",
        b'{"a":1,"a":1}',
        b"NaN",
        b"[1.0]",
    ],
)
def test_fast_path_agrees_with_strict_parser(data: bytes) -> None:
    assert _outcome(data) == _strict_outcome(data)
