"""The fast paths of device verification agree with the strict parsers they stand in for.

Each fast path returns None for anything it does not handle, and the strict
(reference) path then decides and explains. So for any input: where a fast
path returns a value, the strict path returns the same; and the public
function's outcome, value or error message, is the strict path's. Inputs are
generated well-formed and then mutated byte by byte.
"""

from __future__ import annotations

import base64
import datetime
import itertools
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.entries import release

from firmlog.client import entries
from firmlog.client import keys as keys_module
from firmlog.client.bundle import (
    MAX_PROOF_HASHES,
    ProofBundle,
    _parse_fast,
    _proof_hashes,
    format_bundles,
)
from firmlog.client.canonjson import MAX_SAFE_INTEGER, canonical_json
from firmlog.client.checkpoint import MAX_TREE_SIZE, Checkpoint, sign_checkpoint
from firmlog.client.cosignature import cosign, generate_witness_key
from firmlog.client.encoding import b64decode_canonical, b64decode_strict
from firmlog.client.entries import (
    Build,
    Image,
    Release,
    _release_from_json,
    check_signature_lines,
    entry_json,
    parse_entry_text,
    sign_entry,
    verify_entry_signatures,
)
from firmlog.client.errors import FirmlogError, KeyFormatError
from firmlog.client.keys import Ed25519Signer, Ed25519Verifier, generate_key, parse_verifier_key
from firmlog.client.note import _split_fast, _split_strict, sign_note, split_note
from firmlog.client.policy import parse_policy
from firmlog.client.verify import PinnedVendorKeys

LOG_KEY = generate_key("log.example/firmlog")
WITNESS_KEY = generate_witness_key("w1.example")
VENDOR_KEYS = [generate_key(f"acme.example/k{i}") for i in range(3)]


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """What ``fn`` returns, or the type and message of the error it raises."""
    try:
        return ("ok", fn())
    except (FirmlogError, ValueError) as exc:
        return ("error", f"{type(exc).__name__}: {exc}")


def mutate(data: bytes, draw: st.DrawFn, alphabet: bytes) -> bytes:
    """1 to 4 random replacements, insertions or deletions."""
    mutated = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(mutated) - 1)))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.integers(0, 255) | st.sampled_from(alphabet))
        if op == "insert" or not mutated:
            mutated[at:at] = bytes([byte])
        elif op == "delete":
            del mutated[at]
        else:
            mutated[at] = byte
    return bytes(mutated)


# --- canonical base64 --------------------------------------------------------------


def _reference_b64(data: bytes) -> bytes | None:
    return b64decode_strict(data.decode("latin-1"))  # non-ASCII: not base64


def test_canonical_base64_exhaustive_short() -> None:
    # Every string of up to 6 characters over an alphabet with both padding
    # cases, non-zero pad bits, a newline, a space and a non-ASCII byte.
    for size in range(7):
        for chars in itertools.product(b"AQgw/=\n \xff", repeat=size):
            data = bytes(chars)
            assert b64decode_canonical(data) == _reference_b64(data), data


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40), st.data())
def test_canonical_base64_mutated(raw: bytes, data: st.DataObject) -> None:
    encoded = base64.b64encode(raw)
    assert b64decode_canonical(encoded) == raw
    mutated = mutate(encoded, data.draw, b"=AQgw/+\n ")
    assert b64decode_canonical(mutated) == _reference_b64(mutated)


# --- signed notes ------------------------------------------------------------------

# Key names: mostly plain, else with one character a name may not hold (or may).
_ODD_NAME_CHARS = st.sampled_from(list("+ \u3000\u2028\x85\xa0\x7fé\u200b"))
_NAMES = st.builds(
    lambda head, odd, tail: head + odd + tail,
    st.text(st.characters(codec="ascii", categories=["L", "N", "P"]), max_size=6),
    st.just("") | _ODD_NAME_CHARS,
    st.text(st.characters(codec="ascii", categories=["L", "N"]), max_size=3),
)
_TEXTS = st.text(st.characters(codec="utf-8") | st.just("\n"), max_size=30)


@st.composite
def notes(draw: st.DrawFn) -> bytes:
    text = draw(_TEXTS)
    lines = []
    for _ in range(draw(st.integers(0, 3))):
        payload = draw(st.binary(max_size=80))
        lines.append(f"— {draw(_NAMES)} {base64.b64encode(payload).decode()}\n")
    return (text + "\n\n" + "".join(lines)).encode()


@settings(max_examples=400, deadline=None)
@given(notes(), st.data())
@example(sign_note("a\n", [LOG_KEY]), None)
def test_split_note_fast_path_agrees(note: bytes, data: st.DataObject | None) -> None:
    for candidate in (note, mutate(note, data.draw, "—\n =+é".encode()) if data else note):
        try:
            split_note(candidate)  # the checks before either path
        except FirmlogError as exc:
            if "control character" in str(exc) or "too large" in str(exc):
                continue
        strict = outcome(lambda c=candidate: _split_strict(c))
        fast = _split_fast(candidate)
        if fast is not None:
            assert strict == ("ok", fast)
        assert outcome(lambda c=candidate: split_note(c)) == strict


def test_split_note_fast_path_is_taken() -> None:
    note = cosign(sign_checkpoint(Checkpoint(LOG_KEY.name, 5, bytes(32)), LOG_KEY), WITNESS_KEY, 7)
    assert _split_fast(note) == _split_strict(note)
    unusual = "tëxt\n\n".encode() + note.partition(b"\n\n")[2].replace(b"log", "lög".encode())
    assert _split_fast(unusual) == _split_strict(unusual)


# --- proof bundles -------------------------------------------------------------------

CHECKPOINT_NOTE = sign_checkpoint(Checkpoint(LOG_KEY.name, 9, b"\x07" * 32), LOG_KEY)
_BUNDLES = st.builds(
    ProofBundle,
    index=st.integers(0, 2**64 - 1),
    proof=st.lists(st.binary(min_size=32, max_size=32), max_size=MAX_PROOF_HASHES).map(tuple),
    checkpoint=st.just(CHECKPOINT_NOTE),
    extra=st.none() | st.binary(min_size=1, max_size=60),
).map(ProofBundle.format)


@settings(max_examples=400, deadline=None)
@given(_BUNDLES, st.data())
def test_bundle_fast_path_agrees(raw: bytes, data: st.DataObject) -> None:
    fast = _parse_fast(raw)
    assert fast is not None
    assert fast == ProofBundle._parse_strict(raw)
    mutated = mutate(raw, data.draw, b"\n\r =+/0123456789Aaexw")
    strict = outcome(lambda: ProofBundle._parse_strict(mutated))
    fast = _parse_fast(mutated)
    if fast is not None:
        assert strict == ("ok", fast)
    assert outcome(lambda: ProofBundle.parse(mutated)) == (
        (strict[0], strict[1][0]) if strict[0] == "ok" else strict
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=4), st.data())
def test_proof_hashes_agree_with_line_by_line(hashes: list[bytes], data: st.DataObject) -> None:
    block = b"".join(base64.b64encode(h) + b"\n" for h in hashes)
    assert _proof_hashes(block) == tuple(hashes)
    mutated = mutate(block, data.draw, b"=\nAQgw/+ \x00") if block else block
    lines = mutated[:-1].split(b"\n") if mutated.endswith(b"\n") else None
    decoded = [_reference_b64(line) for line in lines] if lines is not None else [None]
    expected = None if any(h is None or len(h) != 32 for h in decoded) else tuple(decoded)
    if not mutated:
        expected = ()
    assert _proof_hashes(mutated) == expected


# --- checkpoints -----------------------------------------------------------------------


@st.composite
def checkpoint_texts(draw: st.DrawFn) -> str:
    origin = draw(_NAMES | st.sampled_from(["log.example/a", "", "lög\x7f", "a\tb", "a\rb"]))
    size = draw(
        st.integers(0, MAX_TREE_SIZE).map(str)
        | st.sampled_from([str(MAX_TREE_SIZE), str(MAX_TREE_SIZE + 1), "1" * 21, "01", "-1", "١"])
    )
    root = base64.b64encode(draw(st.binary(min_size=32, max_size=32) | st.binary(max_size=33)))
    extensions = draw(st.just([]) | st.lists(st.sampled_from(["ext", "", "é x"]), max_size=2))
    end = draw(st.sampled_from(["\n", "\n", ""]))
    return "\n".join([origin, size, root.decode(), *extensions]) + end


@settings(max_examples=500, deadline=None)
@given(checkpoint_texts(), st.data())
def test_checkpoint_fast_path_agrees(text: str, data: st.DataObject) -> None:
    for candidate in (text, mutate(text.encode(), data.draw, b"\n=+/0A").decode("latin-1")):
        strict = outcome(lambda c=candidate: Checkpoint._parse_strict(c))
        parsed = outcome(lambda c=candidate: Checkpoint.parse(c))
        assert parsed == strict
        if parsed[0] == "ok":
            checkpoint = parsed[1]
            assert type(checkpoint) is Checkpoint
            # The fast path sets the fields without the constructor: they pass it.
            assert checkpoint == Checkpoint(
                checkpoint.origin, checkpoint.tree_size, checkpoint.root_hash, checkpoint.extensions
            )


# --- release entries -------------------------------------------------------------------

# Mostly valid fields, each now and then something a rule refuses or an
# escape the fast path leaves to the general one.
_TRICKY = st.sampled_from(list(' "\\\n\t\x00\x7f\u2028\u202eé😀,+/'))
_STR = st.text(st.characters(codec="utf-8", max_codepoint=0x7F) | _TRICKY, max_size=12)
_PLAIN = st.text(
    st.characters(codec="ascii", categories=["L", "N"]) | st.sampled_from("-.,_:"),
    min_size=1,
    max_size=10,
)
_PRINTABLE = st.text(
    st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), min_size=1, max_size=10
)
_ODD_NAMES = [
    "",
    " x",
    "x ",
    "a b",
    "x" * 128,
    "x" * 129,
    "a\x7f",
    "a\u2028b",
    "\u202ex",
    "a\u200bb",
]
_NAME = st.one_of(_PLAIN, _PLAIN, _PRINTABLE, st.sampled_from(_ODD_NAMES), _STR)
_TIME = st.datetimes(
    min_value=datetime.datetime(1970, 1, 1), max_value=datetime.datetime(2199, 12, 31)
).map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"))
_ODD_TIME = st.sampled_from(
    ["2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "2024-01-01T24:00:00Z", "2024-1-1"]
)
_HEX = st.binary(min_size=32, max_size=32).map(bytes.hex)
_ODD_HEX = st.sampled_from(["AB" * 32, "0", ""])
_SIZES = st.integers(1, MAX_SAFE_INTEGER)
_ODD_INTS = st.sampled_from([-1, 0, MAX_SAFE_INTEGER + 1])
_CHANGELOG = st.text(
    st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]) | st.sampled_from("\n\t"),
    max_size=30,
)
_PLAIN_RELEASES = st.builds(
    Release,
    vendor=st.sampled_from(["acme.example", "a", "x-1.y-2"]),
    product=_PLAIN,
    hardware_revisions=st.lists(_PLAIN, unique=True, max_size=3).map(tuple),
    version=_PLAIN,
    security_version=st.integers(0, MAX_SAFE_INTEGER),
    channel=_PLAIN,
    image=st.builds(Image, sha256=_HEX, size=_SIZES),
    build=st.one_of(
        st.builds(
            Build,
            time=_TIME,
            source_uri=st.none(),
            source_commit=st.none(),
            builder=_PLAIN,
            reproducible=st.booleans(),
        ),
        st.builds(
            Build,
            time=_TIME,
            source_uri=st.just("https://git.acme.example/r.git"),
            source_commit=_PLAIN,
            builder=_PLAIN,
            reproducible=st.booleans(),
        ),
    ),
    sbom_sha256=st.none() | _HEX,
    fixes=st.lists(st.sampled_from(["CVE-2024-3094", "CVE-2021-44228"]), unique=True).map(tuple),
    changelog=_CHANGELOG,
)


_GIT = "https://git.acme.example/r.git"
_ODD_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "vendor": st.sampled_from(
        [
            "-a",
            "A.example",
            "a..b",
            "a_b",
            "x" * 64,
            ".".join(["x" * 63] * 4),
            "x" * 61 + "." + ".".join(["x" * 63] * 3),
        ]
    ),
    "product": _NAME,
    "hardware_revisions": st.lists(_NAME, max_size=3).map(tuple)
    | _PLAIN.map(lambda name: (name, name))
    | st.just(tuple(f"r{i}" for i in range(65))),
    "version": _NAME,
    "security_version": _ODD_INTS,
    "channel": _NAME,
    "image": st.builds(Image, sha256=_HEX | _ODD_HEX, size=_SIZES | _ODD_INTS),
    "time": _ODD_TIME,
    "source": st.one_of(
        st.tuples(st.just(_GIT), _NAME | st.sampled_from(["a b", "x" * 256, "x" * 257])),
        st.tuples(
            st.sampled_from(["no scheme", "a:%zz", "a:" + "x" * 2047, "a:" + "x" * 2046]),
            st.just("4f2a9c1e"),
        ),
        st.tuples(st.none(), st.just("4f2a9c1e")),
        st.tuples(st.just(_GIT), st.none()),
    ),
    "builder": _NAME | st.just("x" * 257),
    "sbom_sha256": _ODD_HEX,
    "fixes": st.lists(st.sampled_from(["CVE-2024-3094", "CVE-2024-1", "cve-2024-3094"])).map(tuple),
    "changelog": _STR | st.just("x" * 8193) | st.just("é" * 4097),
}


@st.composite
def releases(draw: st.DrawFn) -> Release:
    """A valid release with, most of the time, one field changed to something odd."""
    release = draw(_PLAIN_RELEASES)
    field = draw(st.sampled_from([None, *_ODD_FIELDS]))
    if field is None:
        return release
    value = draw(_ODD_FIELDS[field])
    if field in ("time", "builder"):
        return replace(release, build=replace(release.build, **{field: value}))
    if field == "source":
        build = replace(release.build, source_uri=value[0], source_commit=value[1])
        return replace(release, build=build)
    return replace(release, **{field: value})


def _json(release: Release) -> str:
    """The canonical JSON of the release's fields, integers out of range too
    (json.dumps so sorts and escapes ASCII member names and BMP strings)."""
    return json.dumps(
        entry_json(release), ensure_ascii=False, separators=(",", ":"), sort_keys=True
    )


def _general(line: str) -> tuple[str, Any]:
    """parse_entry_text without the release fast path: the general path's outcome."""
    with mock.patch.object(entries, "_release_from_json", return_value=None):
        return outcome(lambda: parse_entry_text(f"firmlog/release/v1\n{line}\n"))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(releases(), st.data())
def test_release_fast_path_agrees(release: Release, data: st.DataObject) -> None:
    line = _json(release)
    mutated = mutate(line.encode(), data.draw, b'"\\,:{}[]0-.aAn ').decode("utf-8", "replace")
    for candidate in (line, mutated):
        general = _general(candidate)
        fast = _release_from_json(candidate)
        if fast is not None:
            assert general == ("ok", fast)
        assert outcome(lambda c=candidate: parse_entry_text(f"firmlog/release/v1\n{c}\n")) == (
            general
        )


@settings(max_examples=200, deadline=None)
@given(_PLAIN_RELEASES)
def test_release_fast_path_is_taken_for_plain_releases(release: Release) -> None:
    line = _json(release)
    assert _release_from_json(line) == release
    assert _general(line) == ("ok", release)


_BASE = Release(
    vendor="acme.example",
    product="router-9000",
    hardware_revisions=("A", "B"),
    version="2.4.1",
    security_version=7,
    channel="stable",
    image=Image(sha256="ab" * 32, size=64),
    build=Build("2024-06-01T08:00:00Z", _GIT, "4f2a9c1e", "ci.acme.example", True),
    fixes=("CVE-2024-3094",),
    changelog="Fixes a backdoor.",
)
_LONG_VENDOR = ".".join(["x" * 63] * 3) + "." + "x" * 61  # 253 characters


def _build(**changes: Any) -> dict[str, Build]:
    return {"build": replace(_BASE.build, **changes)}


# Each rule at its edge, one field at a time: (changes, whether the release is valid).
_EDGES: list[tuple[dict[str, Any], bool]] = [
    *[({"vendor": v}, ok) for v, ok in ((_LONG_VENDOR, True), (_LONG_VENDOR + "x", False))],
    *[
        ({"product": name}, ok)
        for name, ok in (
            ("x" * 128, True),
            ("x" * 129, False),
            ("", False),
            (" x", False),
            ("x ", False),
            ("a b", True),
            ('q"t', True),
            ("a\\b", True),
            ("a\x7f", False),
            ("a\u2028b", False),
            ("\u202ex", False),
            ("a\u200bb", False),
        )
    ],
    ({"version": ""}, False),
    ({"channel": "\u00a0x"}, False),
    ({"hardware_revisions": ("A", "A")}, False),
    ({"hardware_revisions": ("a,b", "c")}, True),
    ({"hardware_revisions": tuple(f"r{i}" for i in range(64))}, True),
    ({"hardware_revisions": tuple(f"r{i}" for i in range(65))}, False),
    ({"hardware_revisions": ("",)}, False),
    ({"security_version": MAX_SAFE_INTEGER}, True),
    ({"security_version": MAX_SAFE_INTEGER + 1}, False),
    ({"security_version": -1}, False),
    ({"image": Image("ab" * 32, 1)}, True),
    ({"image": Image("ab" * 32, 0)}, False),
    ({"image": Image("ab" * 32, MAX_SAFE_INTEGER + 1)}, False),
    ({"image": Image("AB" * 32, 1)}, False),
    (_build(time="2024-02-29T23:59:59Z"), True),
    (_build(time="2023-02-29T00:00:00Z"), False),
    (_build(time="2024-01-01T24:00:00Z"), False),
    (_build(time="2024-12-31T23:59:60Z"), False),
    (_build(source_commit="x" * 256), True),
    (_build(source_commit="x" * 257), False),
    (_build(source_commit="a b"), False),
    (_build(source_commit=" a"), False),
    (_build(source_commit="a\x7f"), False),
    (_build(source_commit=""), False),
    (_build(source_commit=None), False),
    (_build(source_uri=None), False),
    (_build(source_uri=None, source_commit=None), True),
    (_build(source_uri="a:" + "x" * 2046), True),
    (_build(source_uri="a:" + "x" * 2047), False),
    (_build(source_uri="a:%zz"), False),
    (_build(source_uri="no scheme"), False),
    (_build(builder="x" * 256), True),
    (_build(builder="x" * 257), False),
    (_build(builder="x "), False),
    (_build(builder="a\u2028"), False),
    ({"sbom_sha256": "cd" * 32}, True),
    ({"sbom_sha256": "CD" * 32}, False),
    ({"sbom_sha256": ""}, False),
    ({"fixes": ("CVE-2024-3094", "CVE-2024-3094")}, False),
    ({"fixes": ("CVE-2024-1",)}, False),
    ({"fixes": tuple(f"CVE-2024-{i:04}" for i in range(512))}, True),
    ({"fixes": tuple(f"CVE-2024-{i:04}" for i in range(513))}, False),
    ({"changelog": "x" * 8192}, True),
    ({"changelog": "x" * 8193}, False),
    ({"changelog": "é" * 4096}, True),
    ({"changelog": "é" * 4097}, False),
    ({"changelog": 'a\nb\tc "d" \\ e'}, True),
    ({"changelog": "a\rb"}, False),
    ({"changelog": "a\x7fb"}, False),
    ({"changelog": "a\u2028b"}, False),
    ({"changelog": "a\u202eb"}, False),
]


@pytest.mark.parametrize(("changes", "valid"), _EDGES)
def test_release_fast_path_edges(changes: dict[str, Any], valid: bool) -> None:
    release = replace(_BASE, **changes)
    line = _json(release)
    general = _general(line)
    assert general[0] == ("ok" if valid else "error")
    fast = _release_from_json(line)
    if fast is not None:
        assert general == ("ok", fast)
    assert outcome(lambda: parse_entry_text(f"firmlog/release/v1\n{line}\n")) == general


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"product":"router-9000"', '"product":"router-\ud800"'),  # lone surrogate (a str)
        ('"size":64', '"size":' + "9" * 5000),  # beyond int()'s 4300 digits
        ('"size":64', '"size":' + "9" * 17),  # beyond 2**53-1
        ('"changelog":"Fixes a backdoor."', '"changelog":"a\\rb"'),  # an escape it leaves
        ('"changelog":"Fixes a backdoor."', '"changelog":"a\\u0041"'),  # not canonical
    ],
)
def test_release_fast_path_leaves_to_the_general_path(old: str, new: str) -> None:
    # The layout pattern knows no field rule; what it does not recognise, or
    # _release_of refuses, the general path decides and explains.
    line = _json(_BASE)
    assert old in line
    line = line.replace(old, new)
    assert _release_from_json(line) is None
    general = _general(line)
    assert general[0] == "error"
    assert outcome(lambda: parse_entry_text(f"firmlog/release/v1\n{line}\n")) == general


def test_release_fast_path_is_taken() -> None:
    release = Release(
        vendor="acme.example",
        product="router-9000",
        hardware_revisions=("A", "B,2"),
        version="2.4.1",
        security_version=MAX_SAFE_INTEGER,
        channel="stable",
        image=Image(sha256="ab" * 32, size=1),
        build=Build("2024-02-29T23:59:59Z", None, None, "ci.acme.example", False),
        sbom_sha256="cd" * 32,
        fixes=("CVE-2024-3094", "CVE-2021-44228"),
        changelog='Fixes:\n\t"quoted" \\ and ünïcödé',
    )
    line = canonical_json(entry_json(release)).decode()
    assert _release_from_json(line) == release
    assert _general(line) == ("ok", release)


# --- vendor keys, verifier keys, checkpoints split once ---------------------------------


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(VENDOR_KEYS), min_size=1, max_size=3, unique=True),
    st.lists(st.sampled_from([*VENDOR_KEYS, generate_key("other.example")]), min_size=1),
    st.integers(1, 3),
)
def test_pinned_keys_index_agrees(pinned: list[Any], signers: list[Any], threshold: int) -> None:
    entry = entries.parse_entry(sign_entry(release(), signers))
    keys = tuple(k.verifier for k in pinned)
    if threshold > len(keys):
        with pytest.raises(ValueError, match="threshold"):
            PinnedVendorKeys(keys, threshold)
        return
    ring = PinnedVendorKeys(keys, threshold).ring
    assert ring is not None
    assert outcome(lambda: verify_entry_signatures(entry, ring, threshold)) == (
        outcome(lambda: verify_entry_signatures(entry, keys, threshold))
    )


def test_vkey_is_computed_once_and_right() -> None:
    verifier = VENDOR_KEYS[0].verifier
    material = base64.b64encode(b"\x01" + verifier.public_key).decode()
    assert verifier.vkey == f"{verifier.name}+{verifier.key_id:08x}+{material}"
    assert Ed25519Verifier(verifier.name, verifier.key_id, verifier.public_key).vkey == (
        verifier.vkey
    )


def test_verify_split_agrees_with_verify_checkpoint() -> None:
    policy = parse_policy(
        f"log {LOG_KEY.verifier.vkey}\nwitness W1 {WITNESS_KEY.verifier.vkey}\nquorum W1\n"
    )
    note = cosign(CHECKPOINT_NOTE, WITNESS_KEY, 100)
    split = split_note(note)
    assert policy.verify_checkpoint(note, now=200, split=split) == policy.verify_checkpoint(
        note, now=200
    )
    for now, max_age in ((50, None), (200, 10), (200, -1)):
        assert outcome(
            lambda now=now, max_age=max_age: policy.verify_checkpoint(
                note, now=now, max_age=max_age, split=split
            )
        ) == outcome(
            lambda now=now, max_age=max_age: policy.verify_checkpoint(
                note, now=now, max_age=max_age
            )
        )


def test_boundaries() -> None:
    # Pad bits of a proof hash, the largest tree size, an index too large.
    line = base64.b64encode(b"\x01" * 32)
    assert _proof_hashes(line + b"\n") == (b"\x01" * 32,)
    for pad in b"BRhx":  # 43rd character with non-zero pad bits
        odd = line[:42] + bytes([pad]) + b"=\n"
        assert _proof_hashes(odd) is None
        assert _reference_b64(odd[:-1]) is None
    root = base64.b64encode(bytes(32)).decode()
    for size in (MAX_TREE_SIZE, MAX_TREE_SIZE + 1, 10**20):
        text = f"log.example/a\n{size}\n{root}\n"
        assert outcome(lambda t=text: Checkpoint.parse(t)) == outcome(
            lambda t=text: Checkpoint._parse_strict(t)
        )
    bundle = ProofBundle(2**64 - 1, (), CHECKPOINT_NOTE).format()
    assert _parse_fast(bundle) == ProofBundle._parse_strict(bundle)
    too_large = bundle.replace(b"index 18446744073709551615", b"index 18446744073709551616")
    assert _parse_fast(too_large) is None
    assert outcome(lambda: ProofBundle.parse(too_large)) == outcome(
        lambda: ProofBundle._parse_strict(too_large)
    )


# --- bundles of a batch: one checkpoint, shared proof hashes --------------------------------


def _reference_format(bundle: ProofBundle) -> bytes:
    """ProofBundle.format as it was written first: every check, then the lines joined."""
    if isinstance(bundle.index, bool) or not 0 <= bundle.index <= 2**64 - 1:
        raise ValueError(f"index: expected an integer 0..2**64-1, got {bundle.index!r}")
    if len(bundle.proof) > MAX_PROOF_HASHES:
        raise ValueError(
            f"proof: expected at most {MAX_PROOF_HASHES} hashes, got {len(bundle.proof)}"
        )
    for i, h in enumerate(bundle.proof):
        if len(h) != 32:
            raise ValueError(f"proof[{i}]: expected 32 bytes, got {len(h)}")
    if bundle.extra is not None and not bundle.extra:
        raise ValueError("extra: expected None or non-empty bytes, got b''")
    if not bundle.checkpoint:
        raise ValueError("checkpoint: expected a signed note, got b''")
    if bundle.checkpoint.startswith(b"\n"):
        raise ValueError("checkpoint: expected a signed note, got an empty first line")
    if b"\r" in bundle.checkpoint:
        raise ValueError("checkpoint: expected no carriage returns")
    try:
        split_note(bundle.checkpoint, max_size=len(bundle.checkpoint))
    except FirmlogError as exc:
        raise ValueError(f"checkpoint: not a signed note: {exc}") from exc
    lines = [b"c2sp.org/tlog-proof@v1"]
    if bundle.extra is not None:
        lines.append(b"extra " + base64.b64encode(bundle.extra))
    lines.append(b"index %d" % bundle.index)
    lines.extend(base64.b64encode(h) for h in bundle.proof)
    return b"\n".join(lines) + b"\n\n" + bundle.checkpoint


_HASHES = st.sampled_from([bytes([i]) * 32 for i in range(6)]) | st.binary(min_size=31, max_size=33)
_ITEMS = st.tuples(
    st.integers(0, 2**64 - 1) | st.sampled_from([-1, 2**64, True, False]),
    st.lists(_HASHES, max_size=MAX_PROOF_HASHES + 1),
    st.none() | st.binary(max_size=40),
)
_CHECKPOINTS = st.just(CHECKPOINT_NOTE) | st.sampled_from(
    [b"", b"\n" + CHECKPOINT_NOTE, CHECKPOINT_NOTE.replace(b"\n", b"\r\n", 1), b"not a note\n"]
)


@settings(max_examples=400, deadline=None)
@given(_CHECKPOINTS, st.lists(_ITEMS, max_size=6))
def test_format_bundles_agrees_with_formatting_each(
    checkpoint: bytes, items: list[tuple[int, list[bytes], bytes | None]]
) -> None:
    """format_bundles gives each bundle's bytes, or the error that formatting the
    bundles one by one meets first."""
    expected: tuple[str, Any] = ("ok", [])
    for index, proof, extra in items:
        one = outcome(
            lambda i=index, p=proof, e=extra: _reference_format(
                ProofBundle(i, tuple(p), checkpoint, e)
            )
        )
        if one[0] == "error":
            expected = one
            break
        expected[1].append(one[1])
    assert outcome(lambda: format_bundles(checkpoint, items)) == expected
    formatted = expected[1] if expected[0] == "ok" else []
    for (index, proof, extra), one in zip(items, formatted, strict=False):
        assert ProofBundle(index, tuple(proof), checkpoint, extra).format() == one


def test_format_bundles_shares_the_upper_hashes() -> None:
    shared = [bytes([7]) * 32, bytes([8]) * 32]
    items = [(i, [bytes([i]) * 32, *shared], b"entry %d" % i) for i in range(3)]
    formatted = format_bundles(CHECKPOINT_NOTE, items)
    assert formatted == [
        _reference_format(ProofBundle(i, tuple(p), CHECKPOINT_NOTE, e)) for i, p, e in items
    ]
    assert [ProofBundle.parse(b) for b in formatted] == [
        ProofBundle(i, tuple(p), CHECKPOINT_NOTE, e) for i, p, e in items
    ]
    assert format_bundles(b"", []) == []  # nothing to check without a bundle


# --- the log's exact signature rule -----------------------------------------------------


def _reference_exact(entry: entries.Entry, keys: Any, threshold: int) -> tuple[str, ...]:
    """verify_entry_signatures(exact=True) as it was written first: the line check,
    then signed-note's rules of verify_note_signatures."""
    if not 1 <= threshold <= len({k.public_key for k in keys}):
        return verify_entry_signatures(entry, keys, threshold)  # the ValueError
    check_signature_lines(entry, keys)
    return verify_entry_signatures(entry, keys, threshold)


_OTHER_KEY = generate_key("other.example")
_SAME_PUBLIC_KEY = Ed25519Signer.from_seed("acme.example/alias", VENDOR_KEYS[0].seed)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from([*VENDOR_KEYS, _SAME_PUBLIC_KEY]), min_size=1, max_size=4, unique=True
    ),
    st.lists(st.sampled_from([*VENDOR_KEYS, _OTHER_KEY, _SAME_PUBLIC_KEY]), min_size=1, max_size=4),
    st.integers(0, 4),
    st.sampled_from(["none", "corrupt", "swap", "repeat"]),
    st.data(),
)
def test_exact_signature_rule_agrees(
    keys: list[Ed25519Signer],
    signers: list[Ed25519Signer],
    threshold: int,
    damage: str,
    data: st.DataObject,
) -> None:
    raw = sign_entry(release(), signers)
    entry = entries.parse_entry(raw)
    sigs = list(entry.signatures)
    at = data.draw(st.integers(0, len(sigs) - 1))
    if damage == "corrupt":  # a signature by the right key over other bytes
        bad = bytearray(sigs[at].signature)
        bad[data.draw(st.integers(0, len(bad) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        sigs[at] = replace(sigs[at], signature=bytes(bad))
    elif damage == "swap" and len(sigs) > 1:  # a signature under another line's name
        sigs[at] = replace(sigs[at], signature=sigs[at - 1].signature)
    elif damage == "repeat":
        sigs.insert(at, sigs[at])
    entry = replace(entry, signatures=tuple(sigs))
    verifiers = [k.verifier for k in keys]
    try:
        ring: Any = entries.KeyRing(verifiers)
    except ValueError:
        return  # two keys with one name and key ID: not a key set
    expected = outcome(lambda: _reference_exact(entry, verifiers, threshold))
    assert outcome(lambda: verify_entry_signatures(entry, verifiers, threshold, exact=True)) == (
        expected
    )
    assert outcome(lambda: verify_entry_signatures(entry, ring, threshold, exact=True)) == (
        expected
    )


# --- parsed verifier keys are kept ---------------------------------------------------------


def test_parse_verifier_key_keeps_what_it_parsed() -> None:
    vkey = VENDOR_KEYS[1].verifier.vkey
    first = parse_verifier_key(vkey)
    assert first == VENDOR_KEYS[1].verifier
    assert parse_verifier_key(vkey) is first  # looked up, not parsed again
    assert parse_verifier_key(str(vkey + " ")[:-1]) is first  # an equal string
    bad = vkey[:-2] + "A="  # another key, not canonical base64, or a wrong key ID
    for _ in range(2):  # an error is never kept: the same error again
        with pytest.raises(KeyFormatError) as raised:
            parse_verifier_key(bad)
        assert (
            str(raised.value)
            == str(outcome(lambda: keys_module._parse_verifier_key(bad))[1])[
                len("KeyFormatError: ") :
            ]
        )

    class Vkey(str):
        pass

    assert parse_verifier_key(Vkey(vkey)) == first  # a str subclass: parsed, not looked up
    with pytest.raises(TypeError, match="must be a str, got list"):
        parse_verifier_key([vkey])  # type: ignore[arg-type]


# --- key sets in their canonical layout ---------------------------------------------------

_VKEYS = [k.verifier.vkey for k in VENDOR_KEYS]
_ODD_VKEYS = st.sampled_from(
    [
        _VKEYS[0].replace("+", "+0", 1),  # not a key
        _VKEYS[0][:-4] + "AAA=",  # another key: the key ID does not match
        _SAME_PUBLIC_KEY.verifier.vkey,  # the public key of _VKEYS[0] under another name
        'a"b+00000000+' + _VKEYS[0].rsplit("+", 1)[1],  # a name that JSON escapes
        "é.example+00000000+" + _VKEYS[0].rsplit("+", 1)[1],
    ]
)
_KEY_SET_VALUES = st.fixed_dictionaries(
    {
        "vendor": st.sampled_from(["acme.example", "Acme.example", "a" * 64, "", "é.example"]),
        "keys": st.lists(st.sampled_from(_VKEYS) | _ODD_VKEYS, max_size=4),
        "threshold": st.integers(0, 4)
        | st.sampled_from([MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1, 10**17, -1, True, None]),
    },
    optional={
        "serial": st.integers(0, 4)
        | st.sampled_from([MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1, 10**17, -1, "2"]),
    },
)


def _key_set_general(type_: str, line: str) -> tuple[str, Any]:
    """parse_entry_text without the key set fast path: the general path's outcome."""
    with mock.patch.object(entries, "_key_set_from_json", return_value=None):
        return outcome(lambda: parse_entry_text(f"{type_}\n{line}\n"))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_KEY_SET_VALUES, st.sampled_from([entries.KEYS_V1, entries.VENDOR_V1]), st.data())
def test_key_set_fast_path_agrees(value: dict[str, Any], type_: str, data: st.DataObject) -> None:
    line = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    mutated = mutate(line.encode(), data.draw, b'"\\,:{}[]0-+aAn ').decode("utf-8", "replace")
    for candidate in (line, mutated):
        general = _key_set_general(type_, candidate)
        fast = entries._key_set_from_json(type_, candidate)
        if fast is not None:
            assert general == ("ok", fast)
        assert outcome(lambda c=candidate: parse_entry_text(f"{type_}\n{c}\n")) == general


@pytest.mark.parametrize(
    ("type_", "body"),
    [
        (entries.VENDOR_V1, entries.VendorAdmission("acme.example", (_VKEYS[0],), 1)),
        (entries.VENDOR_V1, entries.VendorAdmission("acme.example", tuple(_VKEYS), 2)),
        (entries.KEYS_V1, entries.KeySet("acme.example", (_VKEYS[1], _VKEYS[2]), 2, 7)),
        (entries.KEYS_V1, entries.KeySet("acme.example", (_VKEYS[0],), 1, MAX_SAFE_INTEGER)),
    ],
)
def test_key_set_fast_path_is_taken(type_: str, body: Any) -> None:
    line = canonical_json(entry_json(body)).decode()
    assert entries._key_set_from_json(type_, line) == body
    assert _key_set_general(type_, line) == ("ok", body)
    other = entries.KEYS_V1 if type_ == entries.VENDOR_V1 else entries.VENDOR_V1
    assert entries._key_set_from_json(other, line) is None  # serial where none belongs, or none
    assert _key_set_general(other, line)[0] == "error"


def test_format_bundles_takes_any_bytes_like_hash() -> None:
    proof = (bytearray(b"\x01" * 32), memoryview(b"\x02" * 32), b"\x01" * 32)
    bundle = ProofBundle(3, proof, CHECKPOINT_NOTE, b"entry")  # type: ignore[arg-type]
    assert bundle.format() == _reference_format(bundle)
