"""c2sp.org/signed-note: public vectors, key and note parsers, opening rules, fuzzing."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import pickle
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.mutations import mutated, mutated_text
from vectors import load_vector

from firmlog.client.errors import FirmlogError, KeyFormatError, NoteFormatError, SignatureError
from firmlog.client.note import (
    MAX_SIGNATURES,
    Ed25519Signer,
    Ed25519Verifier,
    Signature,
    add_signatures,
    check_key_name,
    generate_key,
    key_id,
    open_note,
    parse_signer_key,
    parse_verifier_key,
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


@pytest.mark.parametrize("case", VECTORS["verifier_key_cases"], ids=case_id)
def test_verifier_key_vectors(case: dict[str, Any]) -> None:
    if case["want_ok"]:
        verifier = parse_verifier_key(case["vkey"])
        assert verifier.vkey == case["vkey"]
    else:
        with pytest.raises(KeyFormatError):
            parse_verifier_key(case["vkey"])


@pytest.mark.parametrize("case", VECTORS["sign_cases"], ids=case_id)
def test_sign_vectors(case: dict[str, Any]) -> None:
    key = parse_signer_key(case["skey"])
    assert key.verifier.vkey == case["vkey"]
    note = sign_note(case["text"], [key])
    assert note == case["want_note"].encode("utf-8")
    assert open_note(note, [parse_verifier_key(case["vkey"])]).text == case["text"]


@pytest.mark.parametrize("case", VECTORS["test_key_pairs"], ids=case_id)
def test_key_pair_vectors(case: dict[str, Any]) -> None:
    key = parse_signer_key(case["skey"])
    assert key.name == case["name"]
    assert key.skey == case["skey"]
    assert key.verifier.vkey == case["vkey"]
    assert parse_verifier_key(case["vkey"]) == key.verifier
    note = sign_note("hello\n", [key])
    assert open_note(note, [parse_verifier_key(case["vkey"])]).verified[0].name == case["name"]


# --- key IDs and names ---


def test_key_id_is_sha256_prefix() -> None:
    verifier = parse_verifier_key(PETER_VKEY)
    material = b"\x01" + verifier.public_key
    assert key_id("PeterNeumann", material) == 0xC74F20A3
    digest = hashlib.sha256(b"PeterNeumann\n" + material).digest()
    assert key_id("PeterNeumann", material) == int.from_bytes(digest[:4], "big")


@pytest.mark.parametrize("name", ["a", "example.com/log", "quasimodo.example/salvatore", "é日本"])
def test_valid_key_names(name: str) -> None:
    check_key_name(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must not be empty"),
        ("a+b", r"must not contain '\+'"),
        ("a b", "must not contain spaces"),
        ("a\u00a0b", r"must not contain spaces \(found U\+00A0\)"),
        ("a\u3000b", r"must not contain spaces \(found U\+3000\)"),
        ("a\u2028b", r"must not contain spaces \(found U\+2028\)"),
        ("a\tb", "must not contain control characters"),
        ("a\x01b", "must not contain control characters"),
        ("a\ud800", "must be valid UTF-8"),
    ],
)
def test_invalid_key_names(name: str, message: str) -> None:
    with pytest.raises(KeyFormatError, match=f"invalid key name: {message}"):
        check_key_name(name)


# --- verifier and signer keys ---


def _vkey(name: str, hex_id: str, raw: bytes) -> str:
    return f"{name}+{hex_id}+{base64.b64encode(raw).decode()}"


PETER_PUB = base64.b64decode(PETER_VKEY.split("+", 2)[2])[1:]


@pytest.mark.parametrize(
    ("vkey", "message"),
    [
        ("PeterNeumann", r"expected 'name\+hexid\+base64key', got 'PeterNeumann'"),
        ("PeterNeumann+c74f20a3", r"expected 'name\+hexid\+base64key'"),
        ("+c74f20a3+AAAA", "key name must not be empty"),
        ("Peter Neumann+c74f20a3+AAAA", "key name must not contain spaces"),
        (
            "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "key ID must be 8 lowercase hex digits, got 'C74F20A3'",
        ),
        ("PeterNeumann+c74f20+AAAA", "key ID must be 8 lowercase hex digits, got 'c74f20'"),
        ("PeterNeumann+c74f20a3+not base64!", "key is not canonical standard base64"),
        (
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW\n",
            "not canonical standard base64",
        ),
        (
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
            "not canonical standard base64",
        ),
        ("PeterNeumann+c74f20a3+AQ==", "expected a type byte and key material, got 1 byte"),
        (
            _vkey("PeterNeumann", "c74f20a3", b"\x04" + PETER_PUB),
            "expected key type 0x01, got 0x04",
        ),
        (
            _vkey("PeterNeumann", "c74f20a3", b"\x01" + PETER_PUB[:31]),
            "expected a 32-byte Ed25519 key, got 31 bytes",
        ),
        (
            _vkey("PeterNeumann", "c74f20a4", b"\x01" + PETER_PUB),
            "key ID does not match the key: expected c74f20a3, got c74f20a4",
        ),
        (
            _vkey("PeterNeumanm", "c74f20a3", b"\x01" + PETER_PUB),
            "'PeterNeumanm': key ID does not match the key",
        ),
    ],
)
def test_verifier_key_errors(vkey: str, message: str) -> None:
    with pytest.raises(KeyFormatError, match=message):
        parse_verifier_key(vkey)


def test_non_canonical_base64_is_refused() -> None:
    # 5 bytes take 7 base64 characters and one '='; the last character carries
    # 2 unused bits. Setting them spells the same bytes differently.
    assert base64.b64decode("AAAAAAB=") == base64.b64decode("AAAAAAA=")
    split_note("x\n\n— a AAAAAAA=\n".encode())
    with pytest.raises(NoteFormatError, match="not canonical standard base64, got 'AAAAAAB='"):
        split_note("x\n\n— a AAAAAAB=\n".encode())
    with pytest.raises(KeyFormatError, match="not canonical standard base64, got 'AQB='"):
        parse_verifier_key("a+00000000+AQB=")


def test_key_parsers_want_str() -> None:
    with pytest.raises(TypeError, match="must be a str, got bytes"):
        parse_verifier_key(PETER_VKEY.encode())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a str, got bytes"):
        parse_signer_key(PETER_SKEY.encode())  # type: ignore[arg-type]


SEED_B64 = PETER_SKEY.split("+", 4)[4]


@pytest.mark.parametrize(
    ("skey", "message"),
    [
        ("PeterNeumann+c74f20a3+" + SEED_B64, "expected a key starting with 'PRIVATE\\+KEY\\+'"),
        (PETER_VKEY, "expected a key starting with 'PRIVATE\\+KEY\\+'"),
        ("PRIVATE+KEY+PeterNeumann", r"expected 'name\+hexid\+base64key'$"),
        ("PRIVATE+KEY+PeterNeumann+" + SEED_B64, "key ID must be 8 lowercase hex digits"),
        ("PRIVATE+KEY+PeterNeumann+c74f20a3+" + SEED_B64[:-1], "not canonical standard base64$"),
        (
            "PRIVATE+KEY+PeterNeumann+c74f20a3+" + base64.b64encode(b"\x04" + b"k" * 32).decode(),
            "expected key type 0x01, got 0x04",
        ),
        (
            "PRIVATE+KEY+PeterNeumann+c74f20a3+" + base64.b64encode(b"\x01" + b"k" * 31).decode(),
            "expected a 32-byte Ed25519 key, got 31 bytes",
        ),
        (
            "PRIVATE+KEY+PeterNeumann+c74f20a4+" + SEED_B64,
            "key ID does not match the key: expected c74f20a3, got c74f20a4",
        ),
    ],
)
def test_signer_key_errors(skey: str, message: str) -> None:
    with pytest.raises(KeyFormatError, match=message) as info:
        parse_signer_key(skey)
    assert SEED_B64 not in str(info.value)
    assert SEED_B64[:-1] not in str(info.value)


def test_key_objects_check_their_fields() -> None:
    key = parse_signer_key(PETER_SKEY)
    with pytest.raises(ValueError, match="key ID mismatch for 'PeterNeumann'"):
        Ed25519Verifier("PeterNeumann", 1, key.verifier.public_key)
    with pytest.raises(ValueError, match="32-byte Ed25519 public key, got 3"):
        Ed25519Verifier("PeterNeumann", 1, b"abc")
    with pytest.raises(KeyFormatError, match="invalid key name"):
        Ed25519Verifier("Peter Neumann", key.key_id, key.verifier.public_key)
    with pytest.raises(ValueError, match="key ID mismatch"):
        Ed25519Signer("PeterNeumann", key.key_id + 1, key.seed)
    with pytest.raises(ValueError, match="32-byte Ed25519 seed, got 31"):
        Ed25519Signer("PeterNeumann", key.key_id, key.seed[:31])


def test_generated_keys_round_trip_and_hide_the_seed() -> None:
    key = generate_key("example.com/log")
    assert parse_signer_key(key.skey) == key
    assert parse_verifier_key(key.verifier.vkey) == key.verifier
    assert key.seed.hex() not in repr(key)
    assert base64.b64encode(key.seed).decode() not in repr(key)
    assert repr(key) == f"Ed25519Signer(name='example.com/log', key_id={key.key_id:08x})"
    assert pickle.loads(pickle.dumps(key)) == key
    assert pickle.loads(pickle.dumps(key.verifier)) == key.verifier
    with pytest.raises(KeyFormatError):
        generate_key("bad name")


def test_verifier_rejects_wrong_length_signature() -> None:
    key = signer("a", 1)
    sig = key.sign(b"m")
    assert key.verifier.verify(b"m", sig)
    assert not key.verifier.verify(b"m", sig[:63])
    assert not key.verifier.verify(b"m", sig + b"\x00")
    assert not key.verifier.verify(b"n", sig)


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
