"""c2sp.org/tlog-proof@v1 bundles: exact format, round trips, every malformation."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.mutations import mutated

from firmlog.client.bundle import DEFAULT_MAX_BUNDLE_SIZE, HEADER, MAX_PROOF_HASHES, ProofBundle
from firmlog.client.errors import BundleFormatError, FirmlogError
from firmlog.client.keys import generate_key
from firmlog.client.merkle import inclusion_proof, leaf_hash, root_hash, verify_inclusion
from firmlog.client.note import sign_note

LOG_KEY = generate_key("log.example/firmlog")
CHECKPOINT = sign_note(
    f"log.example/firmlog\n2\n{base64.b64encode(b'r' * 32).decode()}\n", [LOG_KEY]
)
H1 = bytes(range(32))
H2 = b"\xff" * 32
B1 = base64.b64encode(H1).decode()
B2 = base64.b64encode(H2).decode()


def bundle_bytes(*lines: str, checkpoint: bytes = CHECKPOINT) -> bytes:
    return "".join(line + "\n" for line in lines).encode() + checkpoint


GOOD = bundle_bytes(HEADER, "extra ZW50cnk=", "index 1", B1, B2, "")


def test_format_exact() -> None:
    bundle = ProofBundle(index=1, proof=(H1, H2), checkpoint=CHECKPOINT, extra=b"entry")
    assert bundle.format() == GOOD
    assert ProofBundle.parse(GOOD) == bundle


def test_without_extra_and_proof() -> None:
    raw = bundle_bytes(HEADER, "index 0", "")
    bundle = ProofBundle.parse(raw)
    assert bundle == ProofBundle(index=0, proof=(), checkpoint=CHECKPOINT, extra=None)
    assert bundle.format() == raw


def test_limits_inclusive() -> None:
    proof = tuple(bytes([i]) * 32 for i in range(MAX_PROOF_HASHES))
    bundle = ProofBundle(index=2**64 - 1, proof=proof, checkpoint=CHECKPOINT, extra=b"\x00")
    raw = bundle.format()
    assert b"\nindex 18446744073709551615\n" in raw
    assert ProofBundle.parse(raw) == bundle
    assert ProofBundle.parse(raw, max_size=len(raw)) == bundle


def _proof_for(leaves: Sequence[bytes], index: int) -> list[bytes]:
    hashes = [leaf_hash(e) for e in leaves]

    class Reader:
        def read_hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
            return [root_hash(hashes[i << level : (i + 1) << level]) for level, i in coords]

    return inclusion_proof(index, len(leaves), Reader())


def test_real_checkpoint_from_trillian_tessera(vectors_dir: Path) -> None:
    # A checkpoint written by another implementation, carried verbatim.
    meta = json.loads((vectors_dir / "tessera-testdata-log.json").read_text())
    entries = [e.encode() for e in meta["entries_in_order"]]
    checkpoint = (vectors_dir / "tessera-testdata-log" / "checkpoint").read_bytes()
    origin, size, root = checkpoint.decode().split("\n")[:3]
    assert origin == meta["origin"]
    assert int(size) == len(entries)
    for index in (0, 7, 14):
        proof = _proof_for(entries, index)
        raw = ProofBundle(index, tuple(proof), checkpoint, extra=entries[index]).format()
        bundle = ProofBundle.parse(raw)
        assert bundle.checkpoint == checkpoint
        assert bundle.extra == entries[index]
        assert bundle.format() == raw
        verify_inclusion(
            leaf_hash(entries[index]), bundle.index, int(size), bundle.proof, base64.b64decode(root)
        )


# --- malformed bundles -------------------------------------------------------------

_CHECKPOINT_TEXT = CHECKPOINT.decode()

MALFORMED: list[tuple[str, bytes, str]] = [
    ("empty", b"", "line 1: expected the header 'c2sp.org/tlog-proof@v1', got end of file"),
    (
        "missing-header",
        bundle_bytes("index 1", B1, ""),
        "line 1: expected the header 'c2sp.org/tlog-proof@v1', got 'index 1'",
    ),
    ("header-v2", bundle_bytes("c2sp.org/tlog-proof@v2", "index 1", ""), "line 1: expected the"),
    ("header-space", bundle_bytes(HEADER + " ", "index 1", ""), "line 1: expected the header"),
    ("header-bom", b"\xef\xbb\xbf" + GOOD, "line 1: expected the header"),
    ("header-only", HEADER.encode(), "line 1: expected the header 'c2sp.org/tlog-proof@v1' end"),
    (
        "header-then-eof",
        (HEADER + "\n").encode(),
        "line 2: expected 'extra <base64>' or 'index <decimal>', got end of file",
    ),
    (
        "extra-bad-base64",
        bundle_bytes(HEADER, "extra ZW50cnk", "index 1", ""),
        "line 2: extra: expected standard padded base64, got 'ZW50cnk'",
    ),
    (
        "extra-pad-bits",
        bundle_bytes(HEADER, "extra ZW50cnl=", "index 1", ""),
        "line 2: extra: expected standard padded base64",
    ),
    (
        "extra-urlsafe",
        bundle_bytes(HEADER, "extra _-8=", "index 1", ""),
        "line 2: extra: expected standard padded base64",
    ),
    (
        "extra-space-inside",
        bundle_bytes(HEADER, "extra ZW50 cnk=", "index 1", ""),
        "line 2: extra: expected standard padded base64",
    ),
    (
        "extra-double-space",
        bundle_bytes(HEADER, "extra  ZW50cnk=", "index 1", ""),
        "line 2: extra: expected standard padded base64",
    ),
    ("extra-empty", bundle_bytes(HEADER, "extra ", "index 1", ""), "line 2: extra: expected the"),
    ("extra-bare", bundle_bytes(HEADER, "extra", "index 1", ""), "line 2: expected 'extra <bas"),
    ("extra-tab", bundle_bytes(HEADER, "extra\tZW50cnk=", "index 1", ""), "line 2: expected 'ex"),
    (
        "extra-twice",
        bundle_bytes(HEADER, "extra ZW50cnk=", "extra ZW50cnk=", "index 1", ""),
        "line 3: expected 'index <decimal>' (no leading zeros, at most 18446744073709551615), "
        "got 'extra ZW50cnk='",
    ),
    (
        "extra-after-index",
        bundle_bytes(HEADER, "index 1", "extra ZW50cnk=", ""),
        "line 3: expected a proof hash (32 bytes in standard padded base64, or the empty line",
    ),
    ("index-missing", bundle_bytes(HEADER, B1, ""), "line 2: expected 'index <decimal>'"),
    ("index-leading-zero", bundle_bytes(HEADER, "index 01", ""), "line 2: expected 'index <dec"),
    ("index-00", bundle_bytes(HEADER, "index 00", ""), "got 'index 00'"),
    ("index-negative", bundle_bytes(HEADER, "index -1", ""), "got 'index -1'"),
    ("index-plus", bundle_bytes(HEADER, "index +1", ""), "got 'index +1'"),
    ("index-2**64", bundle_bytes(HEADER, f"index {2**64}", ""), "got 'index 18446744073709551616'"),
    ("index-huge", bundle_bytes(HEADER, "index " + "9" * 30, ""), "line 2: expected 'index <de"),
    ("index-hex", bundle_bytes(HEADER, "index 0x10", ""), "got 'index 0x10'"),
    ("index-exp", bundle_bytes(HEADER, "index 1e3", ""), "got 'index 1e3'"),
    ("index-space", bundle_bytes(HEADER, "index  1", ""), "got 'index  1'"),
    ("index-trailing", bundle_bytes(HEADER, "index 1 ", ""), "got 'index 1 '"),
    ("index-empty", bundle_bytes(HEADER, "index ", ""), "got 'index '"),
    ("index-unicode-digit", bundle_bytes(HEADER, "index ١", ""), "line 2: expected 'index <dec"),
    ("index-case", bundle_bytes(HEADER, "Index 1", ""), "got 'Index 1'"),
    (
        "hash-short",
        bundle_bytes(HEADER, "index 1", base64.b64encode(b"x" * 31).decode(), ""),
        "line 3: expected a proof hash (32 bytes in standard padded base64, or the empty line "
        "before the checkpoint), got 'eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eA==' (31 bytes)",
    ),
    (
        "hash-long",
        bundle_bytes(HEADER, "index 1", B1, base64.b64encode(b"x" * 33).decode(), ""),
        "line 4: expected a proof hash",
    ),
    (
        "hash-unpadded",
        bundle_bytes(HEADER, "index 1", B1.rstrip("="), ""),
        "(not canonical base64)",
    ),
    ("hash-garbage", bundle_bytes(HEADER, "index 1", "not base64!", ""), "line 3: expected a"),
    ("hash-space", bundle_bytes(HEADER, "index 1", " " + B1, ""), "line 3: expected a proof hash"),
    (
        "too-many-hashes",
        bundle_bytes(HEADER, "index 1", *[B1] * 64, ""),
        "line 66: expected the empty line before the checkpoint (at most 63 proof hashes), got",
    ),
    (
        "missing-blank-line",
        bundle_bytes(HEADER, "index 1", B1, checkpoint=CHECKPOINT),
        "line 4: expected a proof hash",
    ),
    (
        "no-blank-line-at-eof",
        bundle_bytes(HEADER, "index 1", B1, checkpoint=b""),
        "line 4: expected a base64 proof hash or the empty line before the checkpoint, got end",
    ),
    (
        "unterminated-hash",
        bundle_bytes(HEADER, "index 1", checkpoint=B1.encode()),
        "line 3: expected a base64 proof hash or the empty line before the checkpoint ending in "
        "a newline, got",
    ),
    (
        "missing-checkpoint",
        bundle_bytes(HEADER, "index 1", B1, "", checkpoint=b""),
        "line 5: expected the checkpoint, got end of file",
    ),
    (
        "two-blank-lines",
        bundle_bytes(HEADER, "index 1", "", ""),
        "line 4: expected the checkpoint's first line, got an empty line",
    ),
    (
        "checkpoint-unsigned",
        bundle_bytes(HEADER, "index 1", "", checkpoint=b"log.example/firmlog\n2\nAAAA\n"),
        "line 4: the checkpoint from here on is not a signed note: note has no blank line",
    ),
    (
        "trailing-garbage",
        GOOD + b"garbage",
        "line 7: the checkpoint from here on is not a signed note: note does not end in a newline",
    ),
    (
        "trailing-line",
        GOOD + b"garbage\n",
        "line 7: the checkpoint from here on is not a signed note: signature line",
    ),
    (
        "trailing-blank-line",
        GOOD + b"\n",
        "line 7: the checkpoint from here on is not a signed note",
    ),
    ("crlf", GOOD.replace(b"\n", b"\r\n"), "line 1: carriage return (lines end in \\n alone)"),
    ("cr-in-checkpoint", GOOD[:-1] + b"\r\n", "line 11: carriage return"),
    ("cr-alone", GOOD.replace(b"index 1\n", b"index 1\r"), "line 3: carriage return"),
    (
        "not-utf8",
        GOOD.replace(b"log.example", b"log.\xffxample", 1),
        "line 7: not UTF-8 (byte 0xff at offset 141)",
    ),
    ("nul", GOOD.replace(b"index 1", b"index 1\x00"), "line 3: expected 'index <decimal>'"),
]


@pytest.mark.parametrize(("data", "message"), [pytest.param(d, m, id=n) for n, d, m in MALFORMED])
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(BundleFormatError) as info:
        ProofBundle.parse(data)
    assert message in str(info.value)


def test_size_limit() -> None:
    with pytest.raises(BundleFormatError) as info:
        ProofBundle.parse(GOOD, max_size=len(GOOD) - 1)
    assert str(info.value) == f"bundle is {len(GOOD)} bytes: the limit is {len(GOOD) - 1}"
    big = ProofBundle(0, (), CHECKPOINT, extra=b"x" * DEFAULT_MAX_BUNDLE_SIZE).format()
    with pytest.raises(BundleFormatError, match="the limit is 1048576"):
        ProofBundle.parse(big)


def test_parse_takes_bytes() -> None:
    with pytest.raises(TypeError):
        ProofBundle.parse(GOOD.decode())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bundle", "message"),
    [
        (ProofBundle(-1, (), CHECKPOINT), "index: expected an integer 0..2**64-1, got -1"),
        (ProofBundle(2**64, (), CHECKPOINT), "index: expected an integer"),
        (ProofBundle(1, (b"x" * 31,), CHECKPOINT), "proof[0]: expected 32 bytes, got 31"),
        (ProofBundle(1, (H1,) * 64, CHECKPOINT), "proof: expected at most 63 hashes, got 64"),
        (ProofBundle(1, (), CHECKPOINT, extra=b""), "extra: expected None or non-empty bytes"),
        (ProofBundle(1, (), b""), "checkpoint: expected a signed note, got b''"),
        (ProofBundle(1, (), b"\n" + CHECKPOINT), "checkpoint: expected a signed note"),
        (ProofBundle(1, (), CHECKPOINT[:-1]), "checkpoint: not a signed note"),
        (ProofBundle(1, (), CHECKPOINT.replace(b"\n", b"\r\n")), "checkpoint: expected no carr"),
    ],
)
def test_format_refuses_what_parse_would_reject(bundle: ProofBundle, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        bundle.format()
    assert not isinstance(info.value, FirmlogError)


# --- properties -------------------------------------------------------------------

_BUNDLES = st.builds(
    ProofBundle,
    index=st.integers(0, 2**64 - 1),
    proof=st.lists(st.binary(min_size=32, max_size=32), max_size=MAX_PROOF_HASHES).map(tuple),
    checkpoint=st.just(CHECKPOINT),
    extra=st.none() | st.binary(min_size=1, max_size=100),
)


@settings(max_examples=200, deadline=None)
@given(_BUNDLES)
def test_round_trip(bundle: ProofBundle) -> None:
    raw = bundle.format()
    assert ProofBundle.parse(raw) == bundle
    assert ProofBundle.parse(raw).format() == raw


@settings(max_examples=200, deadline=None)
@given(_BUNDLES.map(ProofBundle.format).flatmap(mutated))
def test_fuzz_mutated_lines(data: bytes) -> None:
    try:
        bundle = ProofBundle.parse(data)
    except BundleFormatError:
        return
    assert bundle.format() == data  # whatever parses has one encoding


@settings(max_examples=400, deadline=None)
@given(_BUNDLES.map(ProofBundle.format), st.data())
def test_fuzz_mutated(raw: bytes, data: st.DataObject) -> None:
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(mutated) - 1))
        op = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = data.draw(st.integers(0, 255) | st.sampled_from(b"\n\r =+/0123456789Aaex"))
        if op == "insert":
            mutated[at:at] = bytes([byte])
        elif op == "delete":
            del mutated[at]
        else:
            mutated[at] = byte
    try:
        bundle = ProofBundle.parse(bytes(mutated))
    except BundleFormatError:
        return
    assert bundle.format() == bytes(mutated)  # whatever parses has one encoding
