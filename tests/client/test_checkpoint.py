"""c2sp.org/tlog-checkpoint: public vectors, the tessera test log, strict parsing, opening."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from support.mutations import mutated, mutated_text
from vectors import VECTORS as VECTORS_DIR
from vectors import load_vector

from firmlog.client.checkpoint import (
    MAX_TREE_SIZE,
    Checkpoint,
    open_checkpoint,
    sign_checkpoint,
)
from firmlog.client.cosignature import CosignatureSigner, cosign
from firmlog.client.errors import (
    CheckpointFormatError,
    FirmlogError,
    NoteFormatError,
    SignatureError,
)
from firmlog.client.keys import Ed25519Signer, parse_signer_key, parse_verifier_key
from firmlog.client.note import open_note, sign_note

CASES = load_vector("checkpoints.json")["cases"]
TESSERA = load_vector("tessera-testdata-log.json")
NOTES = load_vector("signed-note.json")
FUZZ = settings(max_examples=200, deadline=None)
ROOT = hashlib.sha256(b"root").digest()
ORIGIN = "example.com/log"


def log_key(name: str = ORIGIN, n: int = 1) -> Ed25519Signer:
    return Ed25519Signer.from_seed(name, bytes([n]) * 32)


# --- public vectors ---


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["desc"])
def test_checkpoint_vectors(case: dict[str, Any]) -> None:
    if case["want_ok"]:
        cp = Checkpoint.parse(case["text"])
        assert cp.origin == case["want_origin"]
        assert cp.tree_size == case["want_size"]
        assert cp.root_hash == base64.b64decode(case["want_root_b64"])
        assert list(cp.extensions) == case["want_extensions"]
        assert cp.to_text() == case["text"]
    else:
        with pytest.raises(CheckpointFormatError):
            Checkpoint.parse(case["text"])


def _tessera_files() -> list[str]:
    return ["checkpoint"] + [f"checkpoint.{n}" for n in range(16)]


@pytest.mark.parametrize("filename", _tessera_files())
def test_tessera_checkpoints(filename: str) -> None:
    log_dir = Path(VECTORS_DIR) / TESSERA["dir"]
    data = (log_dir / filename).read_bytes()
    verifier = parse_verifier_key(TESSERA["vkey"])
    signed = open_checkpoint(data, verifier)
    size = 15 if filename == "checkpoint" else int(filename.split(".")[1])
    assert signed.checkpoint.origin == TESSERA["origin"]
    assert signed.checkpoint.tree_size == size
    assert signed.checkpoint.extensions == ()
    assert signed.raw == data
    assert [s.key for s in signed.note.verified] == [f"{verifier.name}+{verifier.key_id:08x}"]
    if size == 0:
        assert signed.checkpoint.root_hash == hashlib.sha256(b"").digest()
    if filename == "checkpoint":
        latest = open_checkpoint((log_dir / "checkpoint.15").read_bytes(), verifier)
        assert latest.checkpoint == signed.checkpoint


def test_tessera_checkpoint_signed_by_published_test_key() -> None:
    # The published test key pair for the tessera test log re-signs the same text.
    pair = next(p for p in NOTES["test_key_pairs"] if p["name"] == TESSERA["origin"])
    assert pair["vkey"] == TESSERA["vkey"]
    data = (Path(VECTORS_DIR) / TESSERA["dir"] / "checkpoint.7").read_bytes()
    cp = open_checkpoint(data, parse_verifier_key(TESSERA["vkey"])).checkpoint
    assert sign_checkpoint(cp, parse_signer_key(pair["skey"])) == data


def test_sum_golang_org_is_a_checkpoint_whose_key_name_is_not_the_origin() -> None:
    case = next(c for c in NOTES["open_cases"] if c["desc"].startswith("real sum.golang.org"))
    verifier = parse_verifier_key(case["vkeys"][0])
    assert open_note(case["note"].encode(), [verifier]).text == case["want_text"]
    with pytest.raises(
        SignatureError,
        match=re.escape(
            "checkpoint origin mismatch: expected 'sum.golang.org', got 'go.sum database tree'"
        ),
    ):
        open_checkpoint(case["note"].encode(), verifier)


# --- strict parsing: one message per rule ---


GOOD = f"{ORIGIN}\n5\n{base64.b64encode(ROOT).decode()}\n"
B64 = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD[:-1], "checkpoint text must end in a newline"),
        ("", "must end in a newline"),
        (f"{ORIGIN}\n5\n", r"at least 3 lines \(origin, tree size, root hash\), got 2"),
        (f"\n5\n{B64}\n", "checkpoint line 1: origin must not be empty"),
        (
            f"{ORIGIN}\n05\n{B64}\n",
            "line 2: tree size must be decimal digits without leading zeros",
        ),
        (f"{ORIGIN}\n00\n{B64}\n", "without leading zeros, got '00'"),
        (f"{ORIGIN}\n+5\n{B64}\n", "got '\\+5'"),
        (f"{ORIGIN}\n-1\n{B64}\n", "got '-1'"),
        (f"{ORIGIN}\n 5\n{B64}\n", "got ' 5'"),
        (f"{ORIGIN}\n5 \n{B64}\n", "got '5 '"),
        (f"{ORIGIN}\n\u0665\n{B64}\n", "tree size must be decimal digits"),  # Arabic-Indic 5
        (f"{ORIGIN}\n0x5\n{B64}\n", "got '0x5'"),
        (f"{ORIGIN}\n\n{B64}\n", "got ''"),
        (f"{ORIGIN}\n{1 << 64}\n{B64}\n", f"tree size must fit in 64 bits, got {1 << 64}"),
        (f"{ORIGIN}\n{'9' * 30}\n{B64}\n", "tree size must be decimal digits"),
        (f"{ORIGIN}\n5\n{B64[:-1]}\n", "line 3: root hash must be canonical standard base64"),
        (f"{ORIGIN}\n5\n{B64} \n", "root hash must be canonical standard base64"),
        (f"{ORIGIN}\n5\n{B64.replace('=', '')}\n", "canonical standard base64"),
        (f"{ORIGIN}\n5\n{B64[:-2]}9=\n", "canonical standard base64"),  # non-zero pad bits
        (f"{ORIGIN}\n5\n{base64.b64encode(ROOT[:31]).decode()}\n", "must be 32 bytes, got 31"),
        (f"{ORIGIN}\n5\n{base64.b64encode(ROOT + b'x').decode()}\n", "32 bytes, got 33"),
        (f"{ORIGIN}\n5\n\n", "root hash must be 32 bytes, got 0"),
        (GOOD + "\n", "checkpoint line 4: extension lines must not be empty"),
        (GOOD + "ext\n\n", "checkpoint line 5: extension lines must not be empty"),
        (f"{ORIGIN}\t\n5\n{B64}\n", "checkpoint line 1: control character 0x09 is not allowed"),
        (GOOD + "e\rx\n", "checkpoint line 4: control character 0x0d"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(CheckpointFormatError, match=message):
        Checkpoint.parse(text)


def test_parse_accepts_edges() -> None:
    assert Checkpoint.parse(f"{ORIGIN}\n0\n{B64}\n").tree_size == 0
    assert Checkpoint.parse(f"{ORIGIN}\n{MAX_TREE_SIZE}\n{B64}\n").tree_size == MAX_TREE_SIZE
    cp = Checkpoint.parse(GOOD + "ext one\n— not a signature\n")
    assert cp.extensions == ("ext one", "— not a signature")
    assert Checkpoint.parse(" origin with spaces+plus\n1\n" + B64 + "\n").origin == (
        " origin with spaces+plus"
    )
    with pytest.raises(TypeError, match="must be a str"):
        Checkpoint.parse(GOOD.encode())  # type: ignore[arg-type]


def test_round_trip() -> None:
    cp = Checkpoint(ORIGIN, 12345, ROOT, ("a", "b c"))
    assert cp.to_text() == f"{ORIGIN}\n12345\n{B64}\na\nb c\n"
    assert Checkpoint.parse(cp.to_text()) == cp


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"origin": ""}, ValueError, "origin must be a non-empty str"),
        ({"origin": "a\nb"}, ValueError, "must not contain control characters"),
        ({"tree_size": -1}, ValueError, "must be a uint64, got -1"),
        ({"tree_size": 1 << 64}, ValueError, "must be a uint64"),
        ({"tree_size": True}, TypeError, "tree_size must be an int, got bool"),
        ({"tree_size": "5"}, TypeError, "tree_size must be an int, got str"),
        ({"root_hash": ROOT[:31]}, ValueError, "root_hash must be 32 bytes, got 31"),
        ({"root_hash": bytearray(ROOT)}, TypeError, "root_hash must be bytes"),
        ({"extensions": ("",)}, ValueError, "extension lines must be non-empty"),
        ({"extensions": ("a\nb",)}, ValueError, "extension lines must be non-empty single"),
        ({"extensions": ["a"]}, TypeError, "extensions must be a tuple"),
    ],
)
def test_constructor_checks(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    fields: dict[str, Any] = {"origin": ORIGIN, "tree_size": 1, "root_hash": ROOT}
    fields.update(kwargs)
    with pytest.raises(error, match=message):
        Checkpoint(**fields)


# --- signing and opening ---


def test_sign_and_open() -> None:
    key = log_key()
    cp = Checkpoint(ORIGIN, 7, ROOT)
    data = sign_checkpoint(cp, key)
    assert data.startswith(cp.to_text().encode() + b"\n\xe2\x80\x94 example.com/log ")
    signed = open_checkpoint(data, key.verifier)
    assert signed.checkpoint == cp
    assert signed.raw == data
    assert signed.note.text == cp.to_text()


def test_sign_checkpoint_needs_key_named_after_origin() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "log key name must equal the checkpoint origin: expected 'example.com/log', got 'other'"
        ),
    ):
        sign_checkpoint(Checkpoint(ORIGIN, 7, ROOT), log_key("other"))


def test_open_checkpoint_origin_mismatch() -> None:
    evil = log_key("evil.example", 2)
    data = sign_checkpoint(Checkpoint("evil.example", 7, ROOT), evil)
    with pytest.raises(
        SignatureError,
        match=re.escape(
            "checkpoint origin mismatch: expected 'example.com/log', got 'evil.example'"
        ),
    ):
        open_checkpoint(data, log_key().verifier)


def test_open_checkpoint_wrong_key_same_name() -> None:
    data = sign_checkpoint(Checkpoint(ORIGIN, 7, ROOT), log_key(n=2))
    with pytest.raises(SignatureError, match="no valid signature by a trusted key"):
        open_checkpoint(data, log_key().verifier)


def test_open_checkpoint_tampered() -> None:
    data = sign_checkpoint(Checkpoint(ORIGIN, 7, ROOT), log_key())
    with pytest.raises(SignatureError, match=r"invalid signature by known key example\.com/log\+"):
        open_checkpoint(data.replace(b"\n7\n", b"\n8\n"), log_key().verifier)


def test_open_checkpoint_needs_the_log_signature_not_just_a_witness() -> None:
    witness = CosignatureSigner.from_seed("witness.example", b"\x09" * 32)
    text = Checkpoint(ORIGIN, 7, ROOT).to_text()

    class CosigningSigner:
        name = witness.name
        key_id = witness.key_id

        def sign(self, message: bytes) -> bytes:
            return witness.sign_at(message.decode(), 1_700_000_000)

    data = sign_note(text, [CosigningSigner()])
    with pytest.raises(
        SignatureError,
        match=r"not signed by the log: expected a signature by example.com/log\+[0-9a-f]{8}, "
        r"verified only \['witness.example\+",
    ):
        open_checkpoint(data, log_key().verifier, [witness.verifier])


def test_open_checkpoint_with_extra_verifiers() -> None:
    key = log_key()
    w1 = CosignatureSigner.from_seed("w1.example", b"\x11" * 32)
    w2 = CosignatureSigner.from_seed("w2.example", b"\x12" * 32)
    data = cosign(sign_checkpoint(Checkpoint(ORIGIN, 7, ROOT), key), w1, 1_700_000_000)
    data = cosign(data, w2, 1_700_000_001)
    signed = open_checkpoint(data, key.verifier, [w1.verifier])
    assert [s.name for s in signed.note.verified] == [ORIGIN, "w1.example"]
    assert [s.name for s in signed.note.unverified] == ["w2.example"]
    # Without extra verifiers the cosignatures are just unverified.
    assert len(open_checkpoint(data, key.verifier).note.unverified) == 2


def test_open_checkpoint_format_errors() -> None:
    with pytest.raises(NoteFormatError):
        open_checkpoint(b"garbage", log_key().verifier)
    note = sign_note("not a checkpoint\n", [log_key()])
    with pytest.raises(CheckpointFormatError, match="at least 3 lines"):
        open_checkpoint(note, log_key().verifier)


# --- property tests ---

origins = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40
)
extension_lines = st.lists(
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20),
    max_size=3,
)


@settings(max_examples=100, deadline=None)
@given(
    origin=origins,
    size=st.integers(0, MAX_TREE_SIZE),
    root=st.binary(min_size=32, max_size=32),
    extensions=extension_lines,
)
def test_checkpoint_round_trip(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    cp = Checkpoint(origin, size, root, tuple(extensions))
    assert Checkpoint.parse(cp.to_text()) == cp


@settings(max_examples=30, deadline=None)
@given(size=st.integers(0, MAX_TREE_SIZE), root=st.binary(min_size=32, max_size=32))
def test_signed_checkpoint_round_trip(size: int, root: bytes) -> None:
    key = log_key()
    cp = Checkpoint(ORIGIN, size, root)
    assert open_checkpoint(sign_checkpoint(cp, key), key.verifier).checkpoint == cp


@st.composite
def mutated_checkpoints(draw: st.DrawFn) -> str:
    chars = list(GOOD)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(chars)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        new = draw(st.sampled_from(["\n", " ", "0", "9", "=", "+", "A", "\x00", "é"]))
        if op == "insert":
            chars.insert(pos, new)
        elif chars and pos < len(chars):
            if op == "delete":
                del chars[pos]
            else:
                chars[pos] = new
    return "".join(chars)


@FUZZ
@given(text=st.one_of(mutated_text(GOOD, GOOD + "extension\n"), mutated_checkpoints()))
@example(text="a\n18446744073709551616\n" + B64 + "\n")
def test_fuzz_checkpoint_parse(text: str) -> None:
    with contextlib.suppress(CheckpointFormatError):
        cp = Checkpoint.parse(text)
        assert cp.to_text() == text


SIGNED = cosign(
    sign_checkpoint(Checkpoint(ORIGIN, 7, ROOT, ("extension",)), log_key()),
    CosignatureSigner.from_seed("w1.example", b"\x11" * 32),
    1_700_000_000,
)


@FUZZ
@given(data=mutated(SIGNED))
def test_fuzz_open_mutated_checkpoints(data: bytes) -> None:
    try:
        opened = open_checkpoint(data, log_key().verifier)
    except FirmlogError:
        return
    # Whatever still opens was signed by the log: it is the checkpoint it signed.
    assert opened.checkpoint == Checkpoint(ORIGIN, 7, ROOT, ("extension",))
