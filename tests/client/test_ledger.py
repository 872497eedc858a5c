"""The ledger's acceptance rules: every rule and every refusal."""

from __future__ import annotations

import pytest

from firmlog.client.entries import (
    Build,
    Entry,
    EntryBody,
    Image,
    KeySet,
    Release,
    Revocation,
    VendorAdmission,
    parse_entry,
    sign_entry,
)
from firmlog.client.errors import EntryPolicyError, SignatureError
from firmlog.client.ledger import LedgerState, UnknownVendorError, VendorKeys, authorize
from firmlog.client.note import Ed25519Signer, generate_key

OPERATOR = generate_key("log.example/operator")
RELEASE_KEY = generate_key("acme.example/release")
SECURITY_KEY = generate_key("acme.example/security")
SPARE_KEY = generate_key("acme.example/spare")
OTHER_VENDOR_KEY = generate_key("other.example/release")


def release(version: str = "1.0", vendor: str = "acme.example") -> Release:
    return Release(
        vendor=vendor,
        product="thermo-x1",
        hardware_revisions=("rev-a",),
        version=version,
        security_version=3,
        channel="stable",
        image=Image(sha256="ab" * 32, size=1024),
        build=Build(
            time="2026-01-02T03:04:05Z",
            source_uri="https://git.acme.example/fw.git",
            source_commit="0123abc",
            builder="acme-ci",
            reproducible=True,
        ),
    )


def entry(body: EntryBody, *signers: Ed25519Signer) -> Entry:
    return parse_entry(sign_entry(body, signers))


def admitted(*keys: Ed25519Signer, threshold: int = 1) -> LedgerState:
    state = LedgerState(operator_keys=(OPERATOR.verifier,))
    body = VendorAdmission("acme.example", tuple(k.verifier.vkey for k in keys), threshold)
    state.apply(entry(body, OPERATOR))
    return state


def test_admission_needs_the_operator() -> None:
    state = LedgerState(operator_keys=(OPERATOR.verifier,))
    body = VendorAdmission("acme.example", (RELEASE_KEY.verifier.vkey,), 1)
    with pytest.raises(EntryPolicyError, match="signed by 0 of the operator"):
        state.apply(entry(body, RELEASE_KEY))
    state.apply(entry(body, OPERATOR))
    assert state.vendors["acme.example"] == VendorKeys(
        "acme.example", (RELEASE_KEY.verifier.vkey,), 1, 0
    )


def test_a_vendor_is_admitted_once() -> None:
    state = admitted(RELEASE_KEY)
    again = VendorAdmission("acme.example", (SPARE_KEY.verifier.vkey,), 1)
    with pytest.raises(EntryPolicyError, match=r"already admitted .* log index 0"):
        state.apply(entry(again, OPERATOR))
    assert state.vendors["acme.example"].keys == (RELEASE_KEY.verifier.vkey,)


def test_release_by_current_keys_at_threshold() -> None:
    state = admitted(RELEASE_KEY, SECURITY_KEY, threshold=2)
    with pytest.raises(EntryPolicyError, match=r"signed by 1 .* threshold is 2"):
        state.apply(entry(release(), RELEASE_KEY))
    state.apply(entry(release(), RELEASE_KEY, SECURITY_KEY))
    assert state.size == 2


def test_release_of_an_unknown_vendor() -> None:
    state = admitted(RELEASE_KEY)
    with pytest.raises(UnknownVendorError, match=r"other.example is not admitted"):
        state.apply(entry(release(vendor="other.example"), OTHER_VENDOR_KEY))


def test_the_operator_cannot_sign_releases() -> None:
    state = admitted(RELEASE_KEY)
    with pytest.raises(EntryPolicyError, match="signed by 0"):
        state.apply(entry(release(), OPERATOR))


def test_rotation_replaces_the_key_set() -> None:
    state = admitted(RELEASE_KEY)
    rotate = KeySet("acme.example", (SPARE_KEY.verifier.vkey, SECURITY_KEY.verifier.vkey), 2)
    with pytest.raises(EntryPolicyError, match="signed by 0"):
        state.apply(entry(rotate, SPARE_KEY))  # new keys can't rotate
    state.apply(entry(rotate, RELEASE_KEY))
    assert state.vendors["acme.example"].since_index == 1
    # the old key is no longer current
    with pytest.raises(
        EntryPolicyError, match=r"current key set of acme.example is from log index 1"
    ):
        state.apply(entry(release(), RELEASE_KEY))
    state.apply(entry(release(), SPARE_KEY, SECURITY_KEY))


def test_rotation_of_an_unknown_vendor() -> None:
    state = LedgerState(operator_keys=(OPERATOR.verifier,))
    rotate = KeySet("acme.example", (SPARE_KEY.verifier.vkey,), 1)
    with pytest.raises(UnknownVendorError):
        state.apply(entry(rotate, RELEASE_KEY))


def test_a_forged_signature_by_a_current_key_is_a_signature_error() -> None:
    state = admitted(RELEASE_KEY)
    raw = bytearray(sign_entry(release(), [RELEASE_KEY]))
    sig_start = raw.rindex(b" ") + 1
    raw[sig_start + 10] = ord("A") if raw[sig_start + 10] != ord("A") else ord("B")
    with pytest.raises(SignatureError):
        state.apply(parse_entry(bytes(raw)))


def test_revocations() -> None:
    state = admitted(RELEASE_KEY)
    rel = entry(release(), RELEASE_KEY)
    state.apply(rel)
    rel_hash = rel.leaf_hash.hex()
    unknown = Revocation("acme.example", "cd" * 32, "bricks devices")
    with pytest.raises(EntryPolicyError, match="not in this log"):
        state.apply(entry(unknown, RELEASE_KEY))
    state.apply(entry(Revocation("acme.example", rel_hash, "bricks devices"), RELEASE_KEY))
    assert state.size == 3


def test_a_vendor_revokes_only_its_own_releases() -> None:
    state = admitted(RELEASE_KEY)
    other = VendorAdmission("other.example", (OTHER_VENDOR_KEY.verifier.vkey,), 1)
    state.apply(entry(other, OPERATOR))
    rel = entry(release(), RELEASE_KEY)
    state.apply(rel)
    body = Revocation("other.example", rel.leaf_hash.hex(), "hostile")
    with pytest.raises(EntryPolicyError, match="revokes only its own releases"):
        state.apply(entry(body, OTHER_VENDOR_KEY))


def test_a_revocation_must_name_a_release() -> None:
    state = admitted(RELEASE_KEY)
    admission_hash = next(iter(state.entries))
    body = Revocation("acme.example", admission_hash.hex(), "oops")
    with pytest.raises(EntryPolicyError, match="firmlog/vendor/v1 entry, not a firmlog/release/v1"):
        state.apply(entry(body, RELEASE_KEY))


def test_authorize_is_pure() -> None:
    rel = entry(release(), RELEASE_KEY)
    keys = VendorKeys("acme.example", (RELEASE_KEY.verifier.vkey,), 1, 0)
    assert authorize(rel, 5, (OPERATOR.verifier,), keys) is None
    assert authorize(rel, 5, (OPERATOR.verifier,), keys) is None
