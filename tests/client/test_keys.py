"""c2sp.org/signed-note keys: public vectors, names, key IDs, key parsers, key rings."""

from __future__ import annotations

import base64
import hashlib
import pickle
from typing import Any

import pytest
from vectors import load_vector

from firmlog.client.errors import KeyFormatError, NoteFormatError, SignatureError
from firmlog.client.keys import (
    Ed25519Signer,
    Ed25519Verifier,
    KeyRing,
    check_key_name,
    generate_key,
    key_id,
    parse_signer_key,
    parse_verifier_key,
)
from firmlog.client.note import open_note, sign_note, split_note

VECTORS = load_vector("signed-note.json")

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"


def signer(name: str, n: int) -> Ed25519Signer:
    return Ed25519Signer.from_seed(name, bytes([n]) * 32)


def case_id(case: dict[str, Any]) -> str:
    return str(case.get("desc") or case.get("vkey") or case.get("name"))


# --- public vectors ---


@pytest.mark.parametrize("case", VECTORS["verifier_key_cases"], ids=case_id)
def test_verifier_key_vectors(case: dict[str, Any]) -> None:
    if case["want_ok"]:
        verifier = parse_verifier_key(case["vkey"])
        assert verifier.vkey == case["vkey"]
    else:
        with pytest.raises(KeyFormatError):
            parse_verifier_key(case["vkey"])


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


# --- key rings ---


def test_key_ring_indexes_by_name_and_key_id() -> None:
    a, b = signer("a", 1), signer("b", 2)
    ring = KeyRing([a.verifier, b.verifier, a.verifier])
    assert list(ring) == [a.verifier, b.verifier]  # the same verifier twice is kept once
    assert len(ring) == 2
    assert ring.by_id[("a", a.key_id)] is a.verifier
    assert ("a", b.key_id) not in ring.by_id
    assert dict(ring.by_id) == {("a", a.key_id): a.verifier, ("b", b.key_id): b.verifier}
    assert ring.key_names() == [f"a+{a.key_id:08x}", f"b+{b.key_id:08x}"]
    assert KeyRing.of(ring) is ring
    assert list(KeyRing.of([b.verifier])) == [b.verifier]


def test_key_ring_refuses_two_keys_with_one_name_and_key_id() -> None:
    a = signer("a", 1)

    class Other:
        name = "a"
        key_id = a.key_id

        def verify(self, message: bytes, signature: bytes) -> bool:
            return True

    with pytest.raises(ValueError, match=f"share key name 'a' and key ID {a.key_id:08x}"):
        KeyRing([a.verifier, Other()])


def test_key_ring_distinct_public_keys() -> None:
    # One public key under two names is one key: the first name, in order.
    a = signer("a", 1)
    also_a = Ed25519Signer.from_seed("also-a", bytes([1]) * 32)
    b = signer("b", 2)
    ring = KeyRing([a.verifier, also_a.verifier, b.verifier])
    assert len(ring) == 3
    assert ring.distinct() == {
        a.verifier.public_key: a.verifier,
        b.verifier.public_key: b.verifier,
    }


def test_notes_open_with_a_ring_as_with_its_verifiers() -> None:
    a, b = signer("a", 1), signer("b", 2)
    note = sign_note("x\n", [a, b])
    ring = KeyRing([a.verifier])
    assert open_note(note, ring) == open_note(note, [a.verifier])
    with pytest.raises(SignatureError, match="invalid signature by known key a"):
        open_note(b"y" + note[1:], ring)
