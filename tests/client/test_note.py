"""c2sp.org/signed-note: public vectors, splitting, signing and opening notes, fuzzing.

Key formats are tests/client/test_keys.py; the fuzzing of the key parsers is
here, next to the note fuzzing whose mutator it shares.
"""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.mutations import mutated, mutated_text
from vectors import load_vector

from firmlog.client.errors import FirmlogError, KeyFormatError, NoteFormatError, SignatureError
from firmlog.client.keys import Ed25519Signer, parse_signer_key, parse_verifier_key
from firmlog.client.note import (
    MAX_SIGNATURES,
    Signature,
    add_signatures,
    open_note,
    sign_note,
    split_note,
)

VECTORS = load_vector("signed-note.json")
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=60, deadline=None)

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)


def signer(name: str, n: int) -> Ed25519Signer:
    return Ed25519Signer.from_seed(name, bytes([n]) * 32)


def case_id(case: dict[str, Any]) -> str:
    return str(case.get("desc") or case.get("vkey") or case.get("name"))


# --- public vectors ---


def _note_bytes(case: dict[str, Any]) -> bytes:
    if "note" in case:
        return str(case["note"]).encode("utf-8")
    return bytes.fromhex(case["note_hex"])


@pytest.mark.parametrize("case", VECTORS["open_cases"], ids=case_id)
def test_open_vectors(case: dict[str, Any]) -> None:
    verifiers = [parse_verifier_key(v) for v in case["vkeys"]]
    data = _note_bytes(case)
    if case["want_ok"]:
        note = open_note(data, verifiers)
        assert note.text == case["want_text"]
        assert [sig.key for sig in note.verified] == case["want_verified"]
        verified = {(s.name, s.key_id) for s in note.verified}
        assert not verified & {(s.name, s.key_id) for s in note.unverified}
    else:
        # A bad signature is a verification failure; everything else is malformed.
        desc = case["desc"]
        expected = SignatureError if ("reject" in desc or "must not verify" in desc) else None
        with pytest.raises(FirmlogError) as info:
            open_note(data, verifiers)
        if expected is not None:
            assert isinstance(info.value, SignatureError)
        else:
            assert isinstance(info.value, NoteFormatError)


@pytest.mark.parametrize("case", VECTORS["sign_cases"], ids=case_id)
def test_sign_vectors(case: dict[str, Any]) -> None:
    key = parse_signer_key(case["skey"])
    assert key.verifier.vkey == case["vkey"]
    note = sign_note(case["text"], [key])
    assert note == case["want_note"].encode("utf-8")
    assert open_note(note, [parse_verifier_key(case["vkey"])]).text == case["text"]


# --- signing ---


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no newline", "must end in a newline"),
        ("", "must end in a newline"),
        ("tab\there\n", "control characters other than newline, found 0x09 at offset 3"),
        ("cr\r\n", "found 0x0d"),
        ("nul\x00\n", "found 0x00"),
        ("bad \ud800\n", "not valid UTF-8"),
    ],
)
def test_sign_note_rejects_bad_text(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sign_note(text, [signer("a", 1)])


def test_sign_note_needs_signers() -> None:
    with pytest.raises(ValueError, match="at least one signer"):
        sign_note("x\n", [])
    with pytest.raises(ValueError, match="at most 100 signatures per note, got 101"):
        sign_note("x\n", [signer("a", 1)] * 101)


@pytest.mark.parametrize(
    "text",
    ["\n", "a\n\n", "a\n\n\n", "a\n\nb\n", "— looks like a signature\n", "x\n\n— a AAAAAAA=\n"],
)
def test_sign_open_round_trip_tricky_texts(text: str) -> None:
    key = signer("a", 1)
    note = sign_note(text, [key])
    opened = open_note(note, [key.verifier])
    assert opened.text == text
    assert opened.verified == (Signature("a", key.key_id, key.sign(text.encode())),)


def test_sign_note_multiple_signers_in_order() -> None:
    a, b = signer("a", 1), signer("b", 2)
    note = sign_note("x\n", [a, b])
    text, sigs = split_note(note)
    assert text == "x\n"
    assert [s.name for s in sigs] == ["a", "b"]
    assert [s.name for s in open_note(note, [b.verifier, a.verifier]).verified] == ["a", "b"]


def test_signature_line_format() -> None:
    sig = Signature("name", 0x01020304, b"\xff" * 3)
    assert sig.line() == "— name AQIDBP///w==\n"
    assert sig.key == "name+01020304"


# --- splitting: every malformation has its own message ---


GOOD = sign_note("hello\n", [signer("a", 1)])
GOOD_LINE = GOOD.decode().split("\n")[2]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello\n", "no blank line"),
        (b"hello\n\n", "no signature lines after the blank line"),
        (GOOD[:-1], "does not end in a newline after its last signature line"),
        (GOOD + b"trailer\n", r"signature line 2: expected '— <name> <base64>', got 'trailer'"),
        (b"hello\n\n- a AAAAAAAA\n", r"signature line 1: expected '— <name> <base64>'"),
        ("hello\n\n—a AAAAAAAA\n".encode(), "signature line 1: expected"),
        ("hello\n\n— AAAAAAAA\n".encode(), "signature line 1: expected"),
        ("hello\n\n—  AAAAAAAA\n".encode(), "signature line 1: key name must not be empty"),
        ("hello\n\n— a+b AAAAAAAA\n".encode(), r"signature line 1: key name must not contain '\+'"),
        ("hello\n\n— a AAAAAAA\n".encode(), r"signature line 1 \('a'\): signature is not"),
        ("hello\n\n— a AAAAAAAA \n".encode(), "signature is not canonical"),
        ("hello\n\n— a  AAAAAAAA\n".encode(), "signature is not canonical"),
        ("hello\n\n— a \n".encode(), "expected a 4-byte key ID and a signature, got 0 bytes"),
        ("hello\n\n— a AAAAAA==\n".encode(), "expected a 4-byte key ID and a signature, got 4"),
        (b"\x01hello\n\n" + GOOD[7:], "control character 0x01 on line 1"),
        (b"hel\rlo\n\n" + GOOD[7:], "control character 0x0d on line 1"),
        (b"\xffhello\n\n" + GOOD[7:], "not valid UTF-8: invalid start byte at byte 0"),
        (b"hello\xc3\n\n" + GOOD[7:], "not valid UTF-8"),
        (b"hello\n\n" + "— a AAAAAAAA\n".encode() * 101, "expected at most 100, got 101"),
    ],
)
def test_split_note_errors(data: bytes, message: str) -> None:
    with pytest.raises(NoteFormatError, match=message):
        split_note(data)
    with pytest.raises(NoteFormatError, match=message):
        open_note(data, [signer("a", 1).verifier])


def test_split_note_size_limit() -> None:
    split_note(GOOD, max_size=len(GOOD))
    with pytest.raises(NoteFormatError, match=f"expected at most 10 bytes, got {len(GOOD)}"):
        split_note(GOOD, max_size=10)
    with pytest.raises(NoteFormatError, match="note too large"):
        open_note(GOOD, [signer("a", 1).verifier], max_size=len(GOOD) - 1)


def test_split_note_wants_bytes() -> None:
    with pytest.raises(TypeError, match="must be bytes, got str"):
        split_note(GOOD.decode())  # type: ignore[arg-type]
    assert split_note(bytearray(GOOD)) == split_note(GOOD)  # type: ignore[arg-type]


def test_split_note_last_blank_line_separates() -> None:
    text, sigs = split_note(b"a\n\nb\n\n" + GOOD.split(b"\n\n")[1])
    assert text == "a\n\nb\n"
    assert len(sigs) == 1


# --- opening rules ---


def test_hundred_signatures_accepted() -> None:
    keys = [signer(f"k{i}", i + 1) for i in range(MAX_SIGNATURES)]
    note = sign_note("x\n", keys)
    assert len(open_note(note, [keys[0].verifier]).unverified) == MAX_SIGNATURES - 1
    with pytest.raises(NoteFormatError, match="at most 100"):
        open_note(note + Signature("extra", 1, b"x").line().encode(), [keys[0].verifier])
    more = Signature("extra", 1, b"x")
    with pytest.raises(ValueError, match="at most 100 signatures per note, would have 101"):
        add_signatures(note, [more])


def test_unknown_keys_sharing_name_or_id_are_ignored() -> None:
    known = signer("known", 1)
    same_name = signer("known", 2)  # same name, other key (other ID)
    note = sign_note("x\n", [known, same_name])
    # Same key ID as the known key but another name.
    forged = Signature("other", known.key_id, b"\x00" * 64)
    note = add_signatures(note, [forged])
    opened = open_note(note, [known.verifier])
    assert [s.key for s in opened.verified] == [f"known+{known.key_id:08x}"]
    assert {(s.name, s.key_id) for s in opened.unverified} == {
        ("known", same_name.key_id),
        ("other", known.key_id),
    }


def test_bad_signature_by_known_key_rejects_even_with_a_good_one() -> None:
    a, b = signer("a", 1), signer("b", 2)
    note = sign_note("x\n", [a])
    bad = Signature("b", b.key_id, b.sign(b"something else\n"))
    with pytest.raises(SignatureError, match=f"invalid signature by known key b\\+{b.key_id:08x}"):
        open_note(add_signatures(note, [bad]), [a.verifier, b.verifier])
    # Unknown to this verifier set: ignored.
    assert open_note(add_signatures(note, [bad]), [a.verifier]).unverified == (bad,)


def test_duplicate_signatures() -> None:
    a, u = signer("a", 1), signer("u", 2)
    note = sign_note("x\n", [a, a, u, u])
    opened = open_note(note, [a.verifier])
    assert len(opened.verified) == 1
    assert len(opened.unverified) == 1
    # A second, different signature by the known key is verified too: a bad one rejects.
    bad = Signature("a", a.key_id, bytes(64))
    with pytest.raises(SignatureError, match="invalid signature by known key"):
        open_note(add_signatures(note, [bad]), [a.verifier])


def test_no_trusted_signature_message() -> None:
    a, b = signer("a", 1), signer("b", 2)
    with pytest.raises(
        SignatureError,
        match=(
            rf"no valid signature by a trusted key: expected one of \['b\+{b.key_id:08x}'\], "
            rf"found signatures by \['a\+{a.key_id:08x}'\]"
        ),
    ):
        open_note(sign_note("x\n", [a]), [b.verifier])
    with pytest.raises(SignatureError, match=r"expected one of \[\]"):
        open_note(sign_note("x\n", [a]), [])


def test_ambiguous_verifiers_are_caller_misuse() -> None:
    a = signer("a", 1)
    open_note(sign_note("x\n", [a]), [a.verifier, a.verifier])

    class Fake:
        name = "a"
        key_id = a.key_id

        def verify(self, message: bytes, signature: bytes) -> bool:
            return True

    with pytest.raises(ValueError, match="share key name 'a'"):
        open_note(sign_note("x\n", [a]), [a.verifier, Fake()])


def test_add_signatures_checks_input() -> None:
    with pytest.raises(NoteFormatError):
        add_signatures(b"not a note", [Signature("a", 1, b"x")])
    with pytest.raises(ValueError, match="key name must not contain"):
        add_signatures(GOOD, [Signature("a b", 1, b"x")])
    with pytest.raises(ValueError, match="uint32"):
        add_signatures(GOOD, [Signature("a", 1 << 32, b"x")])
    with pytest.raises(ValueError, match="non-empty bytes"):
        add_signatures(GOOD, [Signature("a", 1, b"")])


# --- property tests ---

names = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), blacklist_characters="+\x85"
    ),
    min_size=1,
    max_size=30,
)
note_texts = st.lists(
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs", "Cc"]),
        max_size=40,
    ),
    min_size=1,
    max_size=6,
).map(lambda lines: "\n".join(lines) + "\n")
seeds = st.binary(min_size=32, max_size=32)


@ROUND_TRIP
@given(name=names, seed=seeds)
def test_key_round_trip(name: str, seed: bytes) -> None:
    key = Ed25519Signer.from_seed(name, seed)
    assert parse_signer_key(key.skey) == key
    assert parse_verifier_key(key.verifier.vkey) == key.verifier
    assert parse_verifier_key(key.verifier.vkey).vkey == key.verifier.vkey


@ROUND_TRIP
@given(text=note_texts, name=names)
@example(text="\n", name="a")
def test_note_round_trip(text: str, name: str) -> None:
    key = Ed25519Signer.from_seed(name, b"\x07" * 32)
    note = sign_note(text, [key])
    assert split_note(note)[0] == text
    opened = open_note(note, [key.verifier])
    assert opened.text == text
    assert [s.name for s in opened.verified] == [name]


SIGNED_BY_PETER = sign_note(TEXT, [parse_signer_key(PETER_SKEY), signer("w.example", 9)])


@FUZZ
@given(data=mutated(SIGNED_BY_PETER, VECTORS["open_cases"][2]["note"].encode()))
@example(data=b"\n\n\xe2\x80\x94 a AAAAAAAA\n")
def test_fuzz_split_and_open_mutated_notes(data: bytes) -> None:
    verifier = parse_verifier_key(PETER_VKEY)
    with contextlib.suppress(NoteFormatError):
        text, sigs = split_note(data)
        assert data.startswith(text.encode())
        assert data.endswith("".join(sig.line() for sig in sigs).encode())
        assert data == f"{text}\n{''.join(sig.line() for sig in sigs)}".encode()
    try:
        note = open_note(data, [verifier])
    except FirmlogError:
        return
    assert note.text == TEXT  # whatever still opens was signed by Peter


INSERTIONS = [b"\n", b" ", b"+", b"=", "— ".encode(), b"\x00", b"\xff"]


def _mutate(data: bytes, draw: st.DrawFn) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            buf[pos:pos] = draw(
                st.sampled_from([b"\n", b" ", b"+", b"=", b"\xe2\x80\x94 ", b"\x00"])
            )
        elif op == "delete" and buf:
            del buf[pos : pos + draw(st.integers(1, 5))]
        else:
            buf[pos:pos] = buf[pos : pos + draw(st.integers(1, 20))]
    return bytes(buf)


@st.composite
def mutated_notes(draw: st.DrawFn) -> bytes:
    return _mutate(VECTORS["open_cases"][2]["note"].encode(), draw)


@FUZZ
@given(data=mutated_notes())
def test_fuzz_open_note_mutations(data: bytes) -> None:
    verifiers = [parse_verifier_key(v) for v in VECTORS["open_cases"][2]["vkeys"]]
    with contextlib.suppress(NoteFormatError):
        split_note(data)
    try:
        note = open_note(data, verifiers)
    except FirmlogError:
        return
    # Whatever still opens was signed: the text is the original.
    assert note.text == TEXT


@st.composite
def mutated_keys(draw: st.DrawFn) -> str:
    key = draw(st.sampled_from([PETER_VKEY, PETER_SKEY]))
    return _mutate(key.encode(), draw).decode("utf-8", errors="replace")


@FUZZ
@given(text=st.one_of(mutated_text(PETER_VKEY, PETER_SKEY), mutated_keys()))
@example(text="a+00000000+" + base64.b64encode(b"\x01" + b"\x00" * 32).decode())
def test_fuzz_key_parsers(text: str) -> None:
    with contextlib.suppress(KeyFormatError):
        assert parse_verifier_key(text).vkey == text  # whatever parses is canonical
    with contextlib.suppress(KeyFormatError):
        assert parse_signer_key(text).skey == text
