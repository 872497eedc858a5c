"""c2sp.org/tlog-cosignature: cosignature/v1 keys, signing, verification, interop vectors."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import pickle
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from firmlog.client.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from firmlog.client.cosignature import (
    MAX_TIMESTAMP,
    CosignatureSigner,
    CosignatureVerifier,
    cosign,
    cosignature_message,
    cosignature_timestamp,
    generate_witness_key,
    parse_witness_signer_key,
    parse_witness_verifier_key,
)
from firmlog.client.errors import (
    CheckpointFormatError,
    KeyFormatError,
    NoteFormatError,
    SignatureError,
)
from firmlog.client.keys import Ed25519Signer, key_id, parse_verifier_key
from firmlog.client.note import Signature, add_signatures, open_note, sign_note, split_note

ORIGIN = "example.com/log"
ROOT = hashlib.sha256(b"root").digest()
TS = 1_700_000_000
LOG = Ed25519Signer.from_seed(ORIGIN, b"\x01" * 32)
WITNESS = CosignatureSigner.from_seed("witness.example/w1", b"\x02" * 32)


def checkpoint_note(size: int = 7) -> bytes:
    return sign_checkpoint(Checkpoint(ORIGIN, size, ROOT), LOG)


# --- the message and the key ID ---


def test_signed_message_layout() -> None:
    text = Checkpoint(ORIGIN, 7, ROOT).to_text()
    assert cosignature_message(text.encode(), 1679315147) == (
        b"cosignature/v1\ntime 1679315147\n" + text.encode()
    )
    assert cosignature_message(b"x\n", 0) == b"cosignature/v1\ntime 0\nx\n"


def test_key_id_uses_type_0x04() -> None:
    public = WITNESS.verifier.public_key
    assert WITNESS.key_id == key_id(WITNESS.name, b"\x04" + public)
    assert WITNESS.key_id != key_id(WITNESS.name, b"\x01" + public)


def test_sign_at_layout() -> None:
    text = Checkpoint(ORIGIN, 7, ROOT).to_text()
    sig = WITNESS.sign_at(text, TS)
    assert len(sig) == 72
    assert sig[:8] == TS.to_bytes(8, "big")
    assert cosignature_timestamp(sig) == TS
    assert WITNESS.verifier.verify(text.encode(), sig)


# --- round trips through notes ---


def test_cosign_and_open_round_trip() -> None:
    data = cosign(checkpoint_note(), WITNESS, TS)
    _, sigs = split_note(data)
    assert [s.name for s in sigs] == [ORIGIN, WITNESS.name]
    signed = open_checkpoint(data, LOG.verifier, [WITNESS.verifier])
    cosig = signed.note.verified[1]
    assert (cosig.name, cosig.key_id) == (WITNESS.name, WITNESS.key_id)
    assert cosignature_timestamp(cosig.signature) == TS
    # The cosignature verifies on its own in open_note too (it is a note Verifier).
    assert open_note(data, [WITNESS.verifier]).verified == (cosig,)


def test_wrong_timestamp_fails() -> None:
    data = cosign(checkpoint_note(), WITNESS, TS)
    text, sigs = split_note(data)
    cosig = sigs[1]
    moved = Signature(cosig.name, cosig.key_id, (TS + 1).to_bytes(8, "big") + cosig.signature[8:])
    forged = add_signatures(sign_note(text, [LOG]), [moved])
    with pytest.raises(
        SignatureError, match=re.escape(f"invalid signature by known key {moved.key}")
    ):
        open_checkpoint(forged, LOG.verifier, [WITNESS.verifier])


def test_cosignature_over_other_checkpoint_fails() -> None:
    cosig = split_note(cosign(checkpoint_note(7), WITNESS, TS))[1][1]
    other = add_signatures(checkpoint_note(8), [cosig])
    with pytest.raises(SignatureError, match="invalid signature by known key"):
        open_checkpoint(other, LOG.verifier, [WITNESS.verifier])


def test_timestamp_limits() -> None:
    text = Checkpoint(ORIGIN, 7, ROOT).to_text()
    assert cosignature_timestamp(WITNESS.sign_at(text, MAX_TIMESTAMP)) == MAX_TIMESTAMP
    assert cosignature_timestamp(WITNESS.sign_at(text, 0)) == 0
    with pytest.raises(ValueError, match="between 0 and 2\\^63-1, got -1"):
        WITNESS.sign_at(text, -1)
    with pytest.raises(ValueError, match="got 9223372036854775808"):
        WITNESS.sign_at(text, MAX_TIMESTAMP + 1)
    with pytest.raises(TypeError, match="timestamp must be an int, got bool"):
        cosign(checkpoint_note(), WITNESS, True)
    with pytest.raises(ValueError, match="a cosignature/v1 signature is 72 bytes, got 64"):
        cosignature_timestamp(bytes(64))


def test_timestamp_above_2_63_does_not_verify() -> None:
    text = Checkpoint(ORIGIN, 7, ROOT).to_text().encode()
    ts = MAX_TIMESTAMP + 1
    raw = Ed25519PrivateKey.from_private_bytes(WITNESS.seed).sign(cosignature_message(text, ts))
    assert not WITNESS.verifier.verify(text, ts.to_bytes(8, "big") + raw)


def test_cosign_input_checks() -> None:
    with pytest.raises(NoteFormatError):
        cosign(b"not a note", WITNESS, TS)
    with pytest.raises(CheckpointFormatError):
        cosign(sign_note("hello\n", [LOG]), WITNESS, TS)


# --- Ed25519 log signatures and cosignatures never stand in for each other ---


def test_cosignature_and_note_signature_are_not_interchangeable() -> None:
    seed = b"\x05" * 32
    plain = Ed25519Signer.from_seed("same.example", seed)
    witness = CosignatureSigner.from_seed("same.example", seed)
    assert plain.verifier.public_key == witness.verifier.public_key
    assert plain.key_id != witness.key_id
    text = Checkpoint(ORIGIN, 7, ROOT).to_text()

    plain_note = sign_note(text, [plain])
    with pytest.raises(SignatureError, match="no valid signature by a trusted key"):
        open_note(plain_note, [witness.verifier])

    cosigned = cosign(plain_note, witness, TS)
    only_cosig = add_signatures(sign_note(text, [LOG]), [split_note(cosigned)[1][1]])
    with pytest.raises(SignatureError, match="no valid signature by a trusted key"):
        open_note(only_cosig, [plain.verifier])

    # Even handed the other's bytes directly, neither verifier accepts them.
    assert not witness.verifier.verify(text.encode(), plain.sign(text.encode()))
    assert not plain.verifier.verify(text.encode(), witness.sign_at(text, TS))
    assert not plain.verifier.verify(text.encode(), witness.sign_at(text, TS)[8:])


# --- keys ---


def test_generated_witness_key_round_trips() -> None:
    key = generate_witness_key("witness.example/w9")
    assert parse_witness_signer_key(key.skey) == key
    assert parse_witness_verifier_key(key.verifier.vkey) == key.verifier
    assert key.verifier.vkey.split("+")[2].startswith("B")  # 0x04
    assert key.skey.startswith(f"PRIVATE+KEY+witness.example/w9+{key.key_id:08x}+B")
    assert base64.b64encode(key.seed).decode() not in repr(key)
    assert pickle.loads(pickle.dumps(key)) == key
    assert pickle.loads(pickle.dumps(key.verifier)) == key.verifier


def test_type_0x01_witness_vkey_is_accepted() -> None:
    as_log_key = Ed25519Signer.from_seed("witness.example/w1", b"\x02" * 32)
    vkey01 = as_log_key.verifier.vkey  # what standard note tooling publishes
    verifier = parse_witness_verifier_key(vkey01)
    assert verifier == WITNESS.verifier
    assert verifier.key_id == key_id("witness.example/w1", b"\x04" + verifier.public_key)
    assert verifier.vkey == WITNESS.verifier.vkey  # formatted as canonical 0x04
    data = cosign(checkpoint_note(), WITNESS, TS)
    assert open_checkpoint(data, LOG.verifier, [verifier]).note.verified[1].name == verifier.name
    # A type 0x01 witness signer key works the same way.
    assert parse_witness_signer_key(as_log_key.skey) == WITNESS


def test_public_witness_vkeys() -> None:
    # transparency-dev/formats note tests: a type 0x01 vkey converted to a
    # cosignature verifier, and a native type 0x04 vkey.
    converted = parse_witness_verifier_key(
        "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"
    )
    assert converted.key_id == 0xFDD2DBC7
    assert converted.vkey.startswith("TEST+fdd2dbc7+B")
    native = parse_witness_verifier_key(
        "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
    )
    assert native.key_id == 0xDA77ADE7
    assert native.vkey == "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
    with pytest.raises(KeyFormatError, match="expected key type 0x01, got 0x04"):
        parse_verifier_key(native.vkey)


def test_real_world_cosignature() -> None:
    # A cosignature from a public witness over a Google binary transparency
    # checkpoint (transparency-dev/formats issue example): public key from its
    # PEM, signature line payload as published.
    public = bytes.fromhex("a533cf2b246ee90dcfa0c91e63efec3678b46e2178be75536111db54d037d666")
    text = (
        b"developers.google.com/android/binary_transparency/google1p/0\n5\n"
        b"xqaCEZhTGZUuKNA7MpSyxe1WXiiESB2p+crAyzM+Vxo=\n"
    )
    payload = base64.b64decode(
        "r0xBJQAAAABnkyoLuHgN5KlIUUpZV9hulwsFcgqV5v1CyeIhBZWdkfOJT0ims1LqbYygO5MEl91CGha5"
        "sP79K57P7lIGrz7Qtx8eBw=="
    )
    verifier = CosignatureVerifier("witness", key_id("witness", b"\x04" + public), public)
    assert cosignature_timestamp(payload[4:]) == 1737697803
    assert verifier.verify(text, payload[4:])
    assert not verifier.verify(text.replace(b"\n5\n", b"\n6\n"), payload[4:])


@pytest.mark.parametrize(
    ("vkey", "message"),
    [
        ("w", r"expected 'name\+hexid\+base64key', got 'w'"),
        (
            "w+00000000+" + base64.b64encode(b"\x02" + bytes(32)).decode(),
            "witness verifier key 'w': expected key type 0x04 or 0x01, got 0x02",
        ),
        (
            "w+00000000+" + base64.b64encode(b"\x04" + bytes(31)).decode(),
            "expected a 32-byte Ed25519 key, got 31 bytes",
        ),
        (
            "witness.example/w1+00000000+"
            + base64.b64encode(b"\x04" + WITNESS.verifier.public_key).decode(),
            f"key ID does not match the type 0x04 key: expected {WITNESS.key_id:08x}, got 00000000",
        ),
        (
            # A type 0x01 vkey carries the ID its own type gives; the 0x04 ID there is wrong.
            f"witness.example/w1+{WITNESS.key_id:08x}+"
            + base64.b64encode(b"\x01" + WITNESS.verifier.public_key).decode(),
            "key ID does not match the type 0x01 key",
        ),
    ],
)
def test_witness_verifier_key_errors(vkey: str, message: str) -> None:
    with pytest.raises(KeyFormatError, match=message):
        parse_witness_verifier_key(vkey)


def test_witness_signer_key_errors() -> None:
    seed_b64 = base64.b64encode(b"\x04" + WITNESS.seed).decode()
    with pytest.raises(KeyFormatError, match="expected a key starting with") as info:
        parse_witness_signer_key(f"witness.example/w1+{WITNESS.key_id:08x}+{seed_b64}")
    assert seed_b64 not in str(info.value)
    with pytest.raises(KeyFormatError, match="key ID does not match the key") as info:
        parse_witness_signer_key(f"PRIVATE+KEY+witness.example/w1+00000000+{seed_b64}")
    assert seed_b64 not in str(info.value)
    bad_type = base64.b64encode(b"\x02" + WITNESS.seed).decode()
    with pytest.raises(KeyFormatError, match="expected key type 0x04 or 0x01, got 0x02"):
        parse_witness_signer_key(f"PRIVATE+KEY+w+00000000+{bad_type}")


def test_witness_key_objects_check_their_fields() -> None:
    public = WITNESS.verifier.public_key
    with pytest.raises(ValueError, match="key ID mismatch"):
        CosignatureVerifier(WITNESS.name, key_id(WITNESS.name, b"\x01" + public), public)
    with pytest.raises(ValueError, match="key ID mismatch"):
        CosignatureSigner(WITNESS.name, LOG.key_id, WITNESS.seed)
    with pytest.raises(KeyFormatError, match="invalid key name"):
        generate_witness_key("a b")


# --- property tests ---

names = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), blacklist_characters="+\x85"
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=50, deadline=None)
@given(name=names, seed=st.binary(min_size=32, max_size=32), ts=st.integers(0, MAX_TIMESTAMP))
def test_witness_key_and_cosignature_round_trip(name: str, seed: bytes, ts: int) -> None:
    key = CosignatureSigner.from_seed(name, seed)
    assert parse_witness_signer_key(key.skey) == key
    assert parse_witness_verifier_key(key.verifier.vkey) == key.verifier
    data = cosign(checkpoint_note(), key, ts)
    cosig = open_checkpoint(data, LOG.verifier, [key.verifier]).note.verified[1]
    assert cosignature_timestamp(cosig.signature) == ts


@st.composite
def mutated_witness_keys(draw: st.DrawFn) -> str:
    chars = list(draw(st.sampled_from([WITNESS.verifier.vkey, WITNESS.skey, LOG.verifier.vkey])))
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(chars) - 1))
        new = draw(st.sampled_from(["+", "=", "A", "B", "/", " ", "é", ""]))
        chars[pos] = new
    return "".join(chars)


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.text(max_size=120), mutated_witness_keys()))
def test_fuzz_witness_key_parsers(text: str) -> None:
    for parse in (parse_witness_verifier_key, parse_witness_signer_key):
        with contextlib.suppress(KeyFormatError):
            parse(text)


@settings(max_examples=100, deadline=None)
@given(signature=st.binary(max_size=100))
def test_fuzz_cosignature_verify(signature: bytes) -> None:
    assert not WITNESS.verifier.verify(b"x\n", signature)
