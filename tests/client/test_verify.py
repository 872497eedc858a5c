"""Offline device verification: every refusal step, in order, with its own test.

Fixtures are built with the library itself: a small in-memory tree, a
checkpoint signed by the log key and cosigned by witnesses, a release signed
by the vendor's keys. No server.
"""

from __future__ import annotations

import base64
import hashlib
import io
import pickle
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.entries import release as any_release
from support.mutations import mutated

import firmlog.client.verify as verify_module
from firmlog.client.bundle import ProofBundle
from firmlog.client.checkpoint import Checkpoint, sign_checkpoint
from firmlog.client.cosignature import CosignatureSigner, cosign
from firmlog.client.entries import (
    Release,
    Revocation,
    parse_entry,
    sign_entry,
)
from firmlog.client.errors import (
    EntryFormatError,
    EntryPolicyError,
    InclusionProofError,
    QuorumError,
    SignatureError,
    SplitViewError,
    StateFormatError,
    UpdateRefused,
    VerificationError,
)
from firmlog.client.keys import Ed25519Signer
from firmlog.client.merkle import inclusion_proof, leaf_hash, root_hash
from firmlog.client.note import Signature, add_signatures, sign_note, split_note
from firmlog.client.policy import parse_policy
from firmlog.client.verify import (
    STEPS,
    DeviceState,
    PinnedVendorKeys,
    VerifiedUpdate,
    check_revocations,
    verify_update,
)

ORIGIN = "log.firmlog.example/main"
NOW = 1_700_000_000
LOG = Ed25519Signer.from_seed(ORIGIN, b"\x01" * 32)
IMPOSTOR_LOG = Ed25519Signer.from_seed(ORIGIN, b"\x02" * 32)  # same name, other key
W1 = CosignatureSigner.from_seed("w1.witness.example", b"\x11" * 32)
W2 = CosignatureSigner.from_seed("w2.witness.example", b"\x12" * 32)
W3 = CosignatureSigner.from_seed("w3.witness.example", b"\x13" * 32)
STRANGER = CosignatureSigner.from_seed("stranger.witness.example", b"\x14" * 32)
RELEASE_KEY = Ed25519Signer.from_seed("acme.example/release", b"\x21" * 32)
SECURITY_KEY = Ed25519Signer.from_seed("acme.example/security", b"\x22" * 32)
OPERATOR = Ed25519Signer.from_seed("log.firmlog.example/operator", b"\x23" * 32)

POLICY_TEXT = f"""\
log {LOG.verifier.vkey}
witness W1 {W1.verifier.vkey}
witness W2 {W2.verifier.vkey}
witness W3 {W3.verifier.vkey}
group two-of-three 2 W1 W2 W3
quorum two-of-three
"""
POLICY = parse_policy(POLICY_TEXT)
VENDOR = PinnedVendorKeys(
    (RELEASE_KEY.verifier, SECURITY_KEY.verifier), threshold=2, vendor="acme.example"
)
DEVICE = DeviceState(product="router-9000", installed_security_version=4, hardware_revision="B")
IMAGE = bytes(range(256)) * 40 + b"firmware"


def release(**changes: object) -> Release:
    """The shared release as DEVICE sees it: 2.1.0 for boards A and B, security version 5."""
    fields = {
        "version": "2.1.0",
        "security_version": 5,
        "hardware_revisions": ("A", "B"),
        "fixes": ("CVE-2024-12345",),
        "changelog": "Fixes a buffer overflow.",
        **changes,
    }
    return any_release(image=IMAGE, **fields)


ENTRY = sign_entry(release(), [OPERATOR, RELEASE_KEY, SECURITY_KEY])


class _Tree:
    """An in-memory tree: ``size`` leaves, ``entry`` at ``index``."""

    def __init__(self, entry: bytes, index: int = 5, size: int = 9) -> None:
        self.leaves = [leaf_hash(b"other entry %d" % i) for i in range(size)]
        self.leaves[index] = leaf_hash(entry)

    def read_hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        return [root_hash(self.leaves[i << lv : (i + 1) << lv]) for lv, i in coords]

    def proof(self, index: int, size: int) -> list[bytes]:
        return inclusion_proof(index, size, self)

    def root(self, size: int) -> bytes:
        return root_hash(self.leaves[:size])


def checkpoint_note(
    size: int,
    root: bytes,
    *,
    log: Ed25519Signer = LOG,
    origin: str = ORIGIN,
    cosigners: Sequence[tuple[CosignatureSigner, int]] = ((W1, NOW - 60), (W2, NOW - 30)),
) -> bytes:
    note = sign_note(Checkpoint(origin, size, root).to_text(), [log])
    for witness, when in cosigners:
        note = cosign(note, witness, when)
    return note


def make_bundle(
    entry: bytes = ENTRY,
    *,
    index: int = 5,
    size: int = 9,
    note: bytes | None = None,
    proof: Sequence[bytes] | None = None,
    with_extra: bool = True,
    **note_options: object,
) -> bytes:
    tree = _Tree(entry, index, size)
    if note is None:
        note = checkpoint_note(size, tree.root(size), **note_options)  # type: ignore[arg-type]
    if proof is None:
        proof = tree.proof(index, size)
    return ProofBundle(
        index=index,
        proof=tuple(proof),
        checkpoint=note,
        extra=entry if with_extra else None,
    ).format()


BUNDLE = make_bundle()


def verify(
    bundle: bytes = BUNDLE,
    image: object = IMAGE,
    *,
    policy: object = POLICY,
    vendor: PinnedVendorKeys = VENDOR,
    device: DeviceState = DEVICE,
    now: int = NOW,
    max_cosignature_age: int | None = None,
) -> VerifiedUpdate:
    return verify_update(
        image,  # type: ignore[arg-type]
        bundle,
        policy,  # type: ignore[arg-type]
        vendor,
        device,
        now=now,
        max_cosignature_age=max_cosignature_age,
    )


def refused(step: str, **kwargs: object) -> UpdateRefused:
    with pytest.raises(UpdateRefused) as info:
        verify(**kwargs)  # type: ignore[arg-type]
    assert info.value.step == step, str(info.value)
    assert step in str(info.value)
    assert str(info.value).startswith(f"update refused at step {step!r}: ")
    return info.value


# -- the happy path ------------------------------------------------------------------


def test_a_good_update_is_verified() -> None:
    update = verify()
    assert update.release == release()
    assert update.leaf_index == 5
    assert update.tree_size == 9
    assert update.leaf_hash == leaf_hash(ENTRY)
    assert update.entry.raw == ENTRY
    assert update.witnesses == ("W1", "W2")
    assert update.vendor_keys == (RELEASE_KEY.verifier.vkey, SECURITY_KEY.verifier.vkey)
    assert update.checkpoint_note == ProofBundle.parse(BUNDLE).checkpoint
    assert update.checkpoint.timestamps == {"W1": NOW - 60, "W2": NOW - 30}


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "path", "str", "file"])
def test_the_image_can_be_given_in_every_form(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "image.bin"
    path.write_bytes(IMAGE)
    image: object = {
        "bytes": IMAGE,
        "bytearray": bytearray(IMAGE),
        "memoryview": memoryview(IMAGE),
        "path": path,
        "str": str(path),
        "file": io.BytesIO(IMAGE),
    }[kind]
    assert verify(image=image).leaf_index == 5


def test_the_image_is_read_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_module, "_CHUNK_SIZE", 100)
    reads: list[int] = []

    class Spy(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            reads.append(-1 if n is None else n)
            return super().read(n)

    verify(image=Spy(IMAGE))
    assert max(reads) <= 100
    assert len(reads) > len(IMAGE) // 100


def test_one_vendor_key_of_one_is_enough_when_pinned_so() -> None:
    entry = sign_entry(release(), [RELEASE_KEY])
    vendor = PinnedVendorKeys((RELEASE_KEY.verifier,))
    assert verify(make_bundle(entry), vendor=vendor).vendor_keys == (RELEASE_KEY.verifier.vkey,)


def test_quorum_none_needs_no_cosignatures() -> None:
    policy = parse_policy(f"log {LOG.verifier.vkey}\nquorum none\n")
    update = verify(make_bundle(cosigners=()), policy=policy)
    assert update.witnesses == ()


def test_the_same_security_version_may_be_reinstalled() -> None:
    assert verify(device=replace_device(installed_security_version=5)).release.security_version == 5


def test_a_release_for_any_hardware_revision_fits_every_device() -> None:
    entry = sign_entry(release(hardware_revisions=()), [RELEASE_KEY, SECURITY_KEY])
    assert verify(make_bundle(entry), device=replace_device(hardware_revision="Z"))


def test_a_device_that_does_not_know_its_revision_skips_that_check() -> None:
    assert verify(device=replace_device(hardware_revision=None))


def replace_device(**changes: object) -> DeviceState:
    fields: dict[str, object] = {
        "product": DEVICE.product,
        "installed_security_version": DEVICE.installed_security_version,
        "checkpoint": DEVICE.checkpoint,
        "hardware_revision": DEVICE.hardware_revision,
    }
    fields.update(changes)
    return DeviceState(**fields)  # type: ignore[arg-type]


def test_an_older_or_equal_stored_checkpoint_is_fine() -> None:
    tree = _Tree(ENTRY)
    older = checkpoint_note(7, tree.root(7))
    same = ProofBundle.parse(BUNDLE).checkpoint
    assert verify(device=replace_device(checkpoint=older))
    assert verify(device=replace_device(checkpoint=same))


def test_a_stored_checkpoint_of_another_log_is_not_compared() -> None:
    other = Ed25519Signer.from_seed("other.example/log", b"\x07" * 32)
    stored = sign_checkpoint(Checkpoint("other.example/log", 100, b"\x00" * 32), other)
    assert verify(device=replace_device(checkpoint=stored))


# -- refusals, in step order -------------------------------------------------------------


MALFORMED_BUNDLES = {
    "empty": b"",
    "not-utf8": BUNDLE.replace(b"index 5", b"index \xff"),
    "wrong-header": BUNDLE.replace(b"c2sp.org/tlog-proof@v1", b"c2sp.org/tlog-proof@v2"),
    "crlf": BUNDLE.replace(b"\n", b"\r\n"),
    "no-index": b"\n".join(ln for ln in BUNDLE.split(b"\n") if not ln.startswith(b"index ")),
    "index-leading-zero": BUNDLE.replace(b"index 5", b"index 05"),
    "index-negative": BUNDLE.replace(b"index 5", b"index -5"),
    "index-too-big": BUNDLE.replace(b"index 5", b"index 18446744073709551616"),
    "extra-not-base64": BUNDLE.replace(b"extra ", b"extra !"),
    "extra-empty": BUNDLE.replace(b"extra " + base64.b64encode(ENTRY), b"extra "),
    "hash-not-base64": BUNDLE.replace(base64.b64encode(_Tree(ENTRY).proof(5, 9)[0]), b"not*base64"),
    "hash-too-short": BUNDLE.replace(
        base64.b64encode(_Tree(ENTRY).proof(5, 9)[0]), base64.b64encode(b"\x00" * 31)
    ),
    "no-blank-line": BUNDLE.replace(b"\n\n" + ORIGIN.encode(), b"\n" + ORIGIN.encode(), 1),
    "no-checkpoint": BUNDLE[: BUNDLE.index(b"\n\n") + 2],
    "checkpoint-not-a-note": BUNDLE[: BUNDLE.index(b"\n\n") + 2] + b"just some text\n",
    "checkpoint-unsigned": BUNDLE[: BUNDLE.index(ORIGIN.encode() + b"\n9\n") + 200].split(
        "—".encode()
    )[0],
    "truncated": BUNDLE[:-10],
    "too-many-hashes": BUNDLE.replace(
        b"index 5\n", b"index 5\n" + (base64.b64encode(b"\x00" * 32) + b"\n") * 64
    ),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED_BUNDLES))
def test_malformed_bundles_are_refused_at_the_bundle_step(kind: str) -> None:
    exc = refused("bundle", bundle=MALFORMED_BUNDLES[kind])
    assert "tlog-proof" in exc.detail or "checkpoint" in exc.detail


def test_a_checkpoint_whose_text_is_not_a_checkpoint_is_refused_at_the_bundle_step() -> None:
    note = sign_note("not a checkpoint\n", [LOG])
    exc = refused("bundle", bundle=make_bundle(note=note))
    assert "checkpoint" in exc.detail
    assert isinstance(exc.__cause__, ValueError)


def test_wrong_log_key() -> None:
    exc = refused("log-signature", bundle=make_bundle(log=IMPOSTOR_LOG))
    assert isinstance(exc.__cause__, SignatureError)
    assert LOG.verifier.key_id.to_bytes(4, "big").hex() in exc.detail  # expected
    assert f"{IMPOSTOR_LOG.key_id:08x}" in exc.detail  # found


def test_checkpoint_signed_only_by_a_log_the_policy_does_not_know() -> None:
    other = Ed25519Signer.from_seed("other.example/log", b"\x07" * 32)
    refused("log-signature", bundle=make_bundle(log=other, origin="other.example/log"))


@pytest.mark.parametrize("field", ["size", "root"])
def test_tampered_checkpoint(field: str) -> None:
    text, sigs = split_note(ProofBundle.parse(BUNDLE).checkpoint)
    cp = Checkpoint.parse(text)
    changed = (
        replace(cp, tree_size=cp.tree_size + 1)
        if field == "size"
        else replace(cp, root_hash=hashlib.sha256(b"other").digest())
    )
    note = changed.to_text().encode() + b"\n" + "".join(s.line() for s in sigs).encode()
    exc = refused("log-signature", bundle=make_bundle(note=note))
    assert "invalid signature" in exc.detail


def test_wrong_origin() -> None:
    # The log key signs a checkpoint that claims another origin.
    tree = _Tree(ENTRY)
    note = sign_note(Checkpoint("evil.example/log", 9, tree.root(9)).to_text(), [LOG])
    note = cosign(cosign(note, W1, NOW), W2, NOW)
    exc = refused("origin", bundle=make_bundle(note=note))
    assert "'evil.example/log'" in exc.detail
    assert repr(ORIGIN) in exc.detail


def test_cosignatures_missing() -> None:
    exc = refused("cosignatures", bundle=make_bundle(cosigners=()))
    assert isinstance(exc.__cause__, QuorumError)
    assert "two-of-three" in exc.detail
    assert "no witness" in exc.detail


def test_cosignatures_below_quorum() -> None:
    exc = refused("cosignatures", bundle=make_bundle(cosigners=((W3, NOW),)))
    assert "['W3']" in exc.detail


def test_cosignatures_by_unknown_witnesses_do_not_count() -> None:
    exc = refused("cosignatures", bundle=make_bundle(cosigners=((W1, NOW), (STRANGER, NOW))))
    assert "['W1']" in exc.detail


def test_forged_cosignature() -> None:
    note = checkpoint_note(9, _Tree(ENTRY).root(9), cosigners=((W1, NOW),))
    forged = Signature(W2.name, W2.key_id, NOW.to_bytes(8, "big") + b"\x00" * 64)
    exc = refused("cosignatures", bundle=make_bundle(note=add_signatures(note, [forged])))
    assert isinstance(exc.__cause__, SignatureError)
    assert W2.name in exc.detail


def test_cosignature_dated_in_the_future() -> None:
    future = NOW + 3600
    exc = refused("cosignatures", bundle=make_bundle(cosigners=((W1, NOW), (W2, future))))
    assert str(future) in exc.detail
    assert "after now" in exc.detail


def test_stale_cosignature() -> None:
    old = NOW - 90 * 86400
    bundle = make_bundle(cosigners=((W1, NOW), (W2, old)))
    assert verify(bundle)  # without a maximum age it counts
    exc = refused("cosignatures", bundle=bundle, max_cosignature_age=30 * 86400)
    assert str(old) in exc.detail
    assert "older than" in exc.detail


def test_no_entry_in_the_bundle() -> None:
    exc = refused("entry", bundle=make_bundle(with_extra=False))
    assert "no entry" in exc.detail


def test_extra_that_is_not_an_entry() -> None:
    exc = refused("entry", bundle=make_bundle(b"hello, world\n"))
    assert isinstance(exc.__cause__, EntryFormatError)


def test_entry_of_the_wrong_type() -> None:
    revocation = Revocation(vendor="acme.example", release_id="ab" * 32, reason="bad build")
    entry = sign_entry(revocation, [RELEASE_KEY, SECURITY_KEY])
    exc = refused("entry", bundle=make_bundle(entry))
    assert "expected a firmlog/release/v1 entry, got firmlog/revocation/v1" in exc.detail


def test_release_not_signed_by_the_vendor_keys() -> None:
    entry = sign_entry(release(), [OPERATOR])
    exc = refused("vendor-signatures", bundle=make_bundle(entry))
    assert isinstance(exc.__cause__, EntryPolicyError)
    assert "signed by 0" in exc.detail
    assert "threshold is 2" in exc.detail


def test_release_signed_below_the_vendor_threshold() -> None:
    entry = sign_entry(release(), [OPERATOR, RELEASE_KEY])
    exc = refused("vendor-signatures", bundle=make_bundle(entry))
    assert "signed by 1" in exc.detail
    assert RELEASE_KEY.name in exc.detail


def test_forged_vendor_signature() -> None:
    good = sign_entry(release(), [SECURITY_KEY])
    bad = Signature(RELEASE_KEY.name, RELEASE_KEY.key_id, b"\x01" * 64)
    exc = refused("vendor-signatures", bundle=make_bundle(add_signatures(good, [bad])))
    assert isinstance(exc.__cause__, SignatureError)


def test_release_of_another_vendor() -> None:
    vendor = PinnedVendorKeys(VENDOR.keys, 2, vendor="other.example")
    exc = refused("vendor-signatures", vendor=vendor)
    assert "'acme.example'" in exc.detail
    assert "'other.example'" in exc.detail


def test_wrong_product() -> None:
    exc = refused("product", device=replace_device(product="toaster-1"))
    assert "'router-9000'" in exc.detail
    assert "'toaster-1'" in exc.detail


def test_wrong_hardware_revision() -> None:
    exc = refused("hardware-revision", device=replace_device(hardware_revision="C"))
    assert "['A', 'B']" in exc.detail
    assert "'C'" in exc.detail


def test_security_version_rollback() -> None:
    exc = refused("security-version", device=replace_device(installed_security_version=6))
    assert "security_version 5" in exc.detail
    assert "at least 6" in exc.detail


def test_image_digest_differs() -> None:
    tampered = bytearray(IMAGE)
    tampered[100] ^= 1
    exc = refused("image-digest", image=bytes(tampered))
    assert hashlib.sha256(tampered).hexdigest() in exc.detail
    assert hashlib.sha256(IMAGE).hexdigest() in exc.detail


@pytest.mark.parametrize("kind", ["bytes", "file", "path"])
@pytest.mark.parametrize("delta", [-1, +1, +5000])
def test_image_size_differs(kind: str, delta: int, tmp_path: Path) -> None:
    data = IMAGE[:delta] if delta < 0 else IMAGE + b"x" * delta
    path = tmp_path / "image"
    path.write_bytes(data)
    image = {"bytes": data, "file": io.BytesIO(data), "path": path}[kind]
    exc = refused("image-size", image=image)
    assert f"expected {len(IMAGE)}" in exc.detail
    if kind == "file" and delta > 0:
        assert f"more than {len(IMAGE)}" in exc.detail  # a stream is not read to its end
    else:
        assert f"image is {len(data)} bytes" in exc.detail


def test_tampered_proof_hash() -> None:
    proof = _Tree(ENTRY).proof(5, 9)
    proof[1] = hashlib.sha256(b"tampered").digest()
    exc = refused("inclusion", bundle=make_bundle(proof=proof))
    assert isinstance(exc.__cause__, InclusionProofError)
    assert "leads to root" in exc.detail


def test_wrong_index() -> None:
    tree = _Tree(ENTRY)
    bundle = ProofBundle(
        index=4,
        proof=tuple(tree.proof(5, 9)),
        checkpoint=ProofBundle.parse(BUNDLE).checkpoint,
        extra=ENTRY,
    ).format()
    refused("inclusion", bundle=bundle)


def test_index_beyond_the_tree() -> None:
    bundle = ProofBundle.parse(BUNDLE)
    exc = refused("inclusion", bundle=replace(bundle, index=9).format())
    assert "not in a tree of size 9" in exc.detail


def test_tree_size_mismatch() -> None:
    # A proof for the tree of 9 leaves against a checkpoint of its first 8.
    tree = _Tree(ENTRY)
    note = checkpoint_note(8, tree.root(8))
    exc = refused("inclusion", bundle=make_bundle(note=note, proof=tree.proof(5, 9)))
    assert "wrong length" in exc.detail
    assert "expected 3" in exc.detail
    assert "got 4" in exc.detail


def test_entry_not_in_the_tree() -> None:
    # A valid checkpoint and proof, but for another entry at that index.
    other = sign_entry(release(version="2.1.1"), [RELEASE_KEY, SECURITY_KEY])
    tree = _Tree(other)
    bundle = ProofBundle.parse(make_bundle(other))
    refused(
        "inclusion", bundle=replace(bundle, extra=ENTRY, proof=tuple(tree.proof(5, 9))).format()
    )


def test_checkpoint_older_than_the_stored_one() -> None:
    tree = _Tree(ENTRY, size=12)
    stored = checkpoint_note(12, tree.root(12))
    exc = refused("stored-checkpoint", device=replace_device(checkpoint=stored))
    assert "tree size 9" in exc.detail
    assert "at least 12" in exc.detail


def test_same_size_different_root_is_a_split_view_with_evidence() -> None:
    stored = checkpoint_note(9, hashlib.sha256(b"another tree").digest())
    exc = refused("stored-checkpoint", device=replace_device(checkpoint=stored))
    cause = exc.__cause__
    assert isinstance(cause, SplitViewError)
    assert cause.old_note == stored
    assert cause.new_note == ProofBundle.parse(BUNDLE).checkpoint
    assert "split view" in exc.detail


# -- revocation: the online step, decided from what the log returned ------------------


def revocation_of(
    release_entry: bytes = ENTRY,
    *,
    vendor: str = "acme.example",
    signers: Sequence[Ed25519Signer] = (RELEASE_KEY, SECURITY_KEY),
    reason: str = "bricks rev-b",
    advisory: str = "",
) -> bytes:
    identity = parse_entry(release_entry).identity.hex()
    return sign_entry(Revocation(vendor, identity, reason, advisory), signers)


def test_a_revocation_by_the_pinned_keys_refuses_the_release() -> None:
    identity = parse_entry(ENTRY).identity
    check_revocations(identity, VENDOR, [])  # nothing revoked
    ignored: list[tuple[int, Exception]] = []
    other = sign_entry(release(version="9.9.9"), [RELEASE_KEY, SECURITY_KEY])
    with pytest.raises(UpdateRefused) as info:
        check_revocations(
            identity,
            VENDOR,
            [(3, revocation_of(other)), (7, revocation_of(advisory="ADV-1")), (9, b"unseen")],
            on_ignored=lambda index, why: ignored.append((index, why)),
        )
    assert info.value.step == "revocation"
    assert info.value.detail == (
        "the vendor revoked this release at log index 7: bricks rev-b; advisory: ADV-1"
    )
    assert [(i, type(e)) for i, e in ignored] == [(3, EntryFormatError)]


def test_revocations_the_pinned_keys_did_not_sign_do_not_count() -> None:
    identity = parse_entry(ENTRY).identity
    stranger = Ed25519Signer.from_seed("acme.example/release", b"\x29" * 32)
    found = [
        (1, revocation_of(signers=(RELEASE_KEY,))),  # below the threshold of 2
        (2, revocation_of(signers=(stranger, SECURITY_KEY))),  # a key that is not pinned
        (3, revocation_of(vendor="evil.example")),  # not the pinned vendor
        (4, ENTRY),  # the release itself, not a revocation
        (5, b"not an entry"),
    ]
    ignored: list[tuple[int, Exception]] = []
    check_revocations(identity, VENDOR, found, on_ignored=lambda i, e: ignored.append((i, e)))
    assert [i for i, _ in ignored] == [1, 2, 3, 4, 5]
    assert isinstance(ignored[2][1], EntryPolicyError)
    assert "revocation by evil.example, not acme.example" in str(ignored[2][1])
    check_revocations(identity, VENDOR, found)  # no callback: skipped all the same
    with pytest.raises(ValueError, match="32 bytes"):
        check_revocations(identity.hex().encode(), VENDOR, found)


# -- order, errors, values -------------------------------------------------------------


def test_the_first_failing_step_is_reported() -> None:
    # wrong product, rollback and wrong image: product comes first.
    device = replace_device(product="toaster-1", installed_security_version=9)
    exc = refused("product", device=device, image=b"nope")
    assert exc.step == "product"
    # A bad log signature wins over everything after it.
    refused("log-signature", bundle=make_bundle(log=IMPOSTOR_LOG, cosigners=()), image=b"x")


def test_steps_are_listed_in_order_and_documented() -> None:
    assert STEPS == (
        "bundle",
        "log-signature",
        "origin",
        "cosignatures",
        "entry",
        "vendor-signatures",
        "product",
        "hardware-revision",
        "security-version",
        "image-size",
        "image-digest",
        "inclusion",
        "stored-checkpoint",
    )
    doc = verify_module.__doc__ or ""
    positions = [doc.index(f"``{step}``") for step in STEPS]
    assert positions == sorted(positions)


def test_update_refused_is_one_verification_error_that_pickles() -> None:
    exc = UpdateRefused("inclusion", "nope")
    assert isinstance(exc, VerificationError)
    back = pickle.loads(pickle.dumps(exc))
    assert (back.step, back.detail, str(back)) == (exc.step, exc.detail, str(exc))
    split = SplitViewError("split", b"a", b"b", (b"\x00" * 32,))
    again = pickle.loads(pickle.dumps(split))
    assert (again.old_note, again.new_note, again.proof) == (b"a", b"b", (b"\x00" * 32,))


def test_caller_misuse_is_not_a_refusal() -> None:
    with pytest.raises(TypeError):
        verify(bundle=BUNDLE.decode())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        verify(image=12345)
    with pytest.raises(FileNotFoundError):
        verify(image=Path("/nonexistent/image"))
    with pytest.raises(TypeError):
        verify(image=io.StringIO("text"))


def test_vendor_keys_check_their_threshold() -> None:
    with pytest.raises(ValueError, match=re.escape("threshold must be 1..2")):
        PinnedVendorKeys((RELEASE_KEY.verifier, SECURITY_KEY.verifier), threshold=3)
    with pytest.raises(ValueError, match=re.escape("threshold must be 1..1")):
        PinnedVendorKeys((RELEASE_KEY.verifier, RELEASE_KEY.verifier), threshold=2)
    with pytest.raises(TypeError):
        PinnedVendorKeys([RELEASE_KEY.verifier])  # type: ignore[arg-type]
    parsed = PinnedVendorKeys.parse([RELEASE_KEY.verifier.vkey], vendor="acme.example")
    assert parsed.keys == (RELEASE_KEY.verifier,)


def test_device_state_round_trips_through_json() -> None:
    state = replace_device(checkpoint=ProofBundle.parse(BUNDLE).checkpoint)
    assert DeviceState.from_json(state.to_json()) == state
    bare = DeviceState("p")
    assert DeviceState.from_json(bare.to_json()) == bare
    assert state.stored_checkpoint is not None
    assert state.stored_checkpoint.tree_size == 9


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "expected a JSON object"),
        (b"{}", "'product' is missing"),
        (b'{"product": ""}', "non-empty string"),
        (b'{"product": "p", "installed_security_version": -1}', ">= 0"),
        (b'{"product": "p", "installed_security_version": true}', ">= 0"),
        (b'{"product": "p", "hardware_revision": 3}', "hardware_revision"),
        (b'{"product": "p", "checkpoint": 3}', "checkpoint"),
        (b'{"product": "p", "checkpoint": "garbage"}', "not a checkpoint note"),
        (b'{"product": "p", "surprise": 1}', re.escape("unknown fields ['surprise']")),
    ],
)
def test_device_state_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(StateFormatError, match=message):
        DeviceState.from_json(data)


def test_after_install_keeps_the_newest_checkpoint_and_version() -> None:
    update = verify()
    after = DEVICE.after_install(update)
    assert after.installed_security_version == 5
    assert after.checkpoint == update.checkpoint_note
    assert after.product == DEVICE.product
    assert after.hardware_revision == "B"
    newer = checkpoint_note(12, _Tree(ENTRY, size=12).root(12))
    kept = replace_device(checkpoint=newer, installed_security_version=7).after_install(update)
    assert kept.checkpoint == newer
    assert kept.installed_security_version == 7


def test_a_smaller_stored_checkpoint_is_not_compared_offline() -> None:
    # Whether a smaller stored tree is a prefix of the new one needs a
    # consistency proof from the log's tiles: firmlog.client.online does that.
    stored = checkpoint_note(3, hashlib.sha256(b"whatever").digest())
    assert verify(device=replace_device(checkpoint=stored))


# -- fuzzing -------------------------------------------------------------------------------


@st.composite
def mutated_bundles(draw: st.DrawFn) -> bytes:
    data = bytearray(BUNDLE)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate", "lines"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[pos] = draw(st.integers(0, 255))
        elif action == "delete":
            del data[pos : pos + draw(st.integers(1, 80))]
        elif action == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=40))
        elif action == "truncate":
            del data[pos:]
        else:
            lines = bytes(data).split(b"\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_bundles(), mutated(BUNDLE)))
@example(b"")
@example(BUNDLE)
def test_fuzzed_bundles_raise_nothing_but_our_refusal(bundle: bytes) -> None:
    outcome: UpdateRefused | VerifiedUpdate
    try:
        outcome = verify(bundle)
    except UpdateRefused as exc:
        outcome = exc
    if isinstance(outcome, UpdateRefused):
        assert outcome.step in STEPS
    else:  # whatever verified must be the real thing
        assert outcome.entry.raw == ENTRY
        assert outcome.leaf_index == 5
