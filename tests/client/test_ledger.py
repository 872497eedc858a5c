"""The ledger's acceptance rules: every rule and every refusal."""

from __future__ import annotations

import pytest
from support.entries import release

from firmlog.client.entries import (
    Entry,
    EntryBody,
    KeySet,
    Revocation,
    VendorAdmission,
    parse_entry,
    sign_entry,
)
from firmlog.client.errors import EntryPolicyError, SignatureError, SignatureLineError
from firmlog.client.keys import Ed25519Signer, KeyRing, generate_key
from firmlog.client.ledger import (
    OPERATOR_KEYS,
    LedgerState,
    UnknownVendorError,
    VendorKeys,
    authorize,
    verify_ahead,
)
from firmlog.client.note import Signature

OPERATOR = generate_key("log.example/operator")
RELEASE_KEY = generate_key("acme.example/release")
SECURITY_KEY = generate_key("acme.example/security")
SPARE_KEY = generate_key("acme.example/spare")
OTHER_VENDOR_KEY = generate_key("other.example/release")


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
    with pytest.raises(SignatureLineError, match="not one of the operator's keys"):
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
    with pytest.raises(SignatureLineError, match=r"log\.example/operator.* not one of the vendor"):
        state.apply(entry(release(), OPERATOR))


def test_rotation_replaces_the_key_set() -> None:
    state = admitted(RELEASE_KEY)
    rotate = KeySet("acme.example", (SPARE_KEY.verifier.vkey, SECURITY_KEY.verifier.vkey), 2, 2)
    with pytest.raises(SignatureLineError, match="not one of the vendor's keys"):
        state.apply(entry(rotate, SPARE_KEY))  # new keys can't rotate
    state.apply(entry(rotate, RELEASE_KEY))
    assert state.vendors["acme.example"].since_index == 1
    assert state.vendors["acme.example"].serial == 2
    # the old key is no longer current
    with pytest.raises(SignatureLineError, match=r"signature line 1 is by acme.example/release"):
        state.apply(entry(release(), RELEASE_KEY))
    with pytest.raises(
        EntryPolicyError, match=r"current key set of acme.example is serial 2, from log index 1"
    ):
        state.apply(entry(release(), SPARE_KEY))
    state.apply(entry(release(), SPARE_KEY, SECURITY_KEY))


def test_rotation_of_an_unknown_vendor() -> None:
    state = LedgerState(operator_keys=(OPERATOR.verifier,))
    rotate = KeySet("acme.example", (SPARE_KEY.verifier.vkey,), 1, 2)
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
    rel_hash = rel.identity.hex()
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
    body = Revocation("other.example", rel.identity.hex(), "hostile")
    with pytest.raises(EntryPolicyError, match="revokes only its own releases"):
        state.apply(entry(body, OTHER_VENDOR_KEY))


def test_a_revocation_must_name_a_release() -> None:
    state = admitted(RELEASE_KEY)
    assert isinstance(state.entries, dict)  # the default index
    admission_hash = next(iter(state.entries))
    body = Revocation("acme.example", admission_hash.hex(), "oops")
    with pytest.raises(EntryPolicyError, match="firmlog/vendor/v1 entry, not a firmlog/release/v1"):
        state.apply(entry(body, RELEASE_KEY))


def test_authorize_is_pure() -> None:
    rel = entry(release(), RELEASE_KEY)
    keys = VendorKeys("acme.example", (RELEASE_KEY.verifier.vkey,), 1, 0)
    assert authorize(rel, 5, (OPERATOR.verifier,), keys) is None
    assert authorize(rel, 5, (OPERATOR.verifier,), keys) is None


# --- one identity per entry; ordered key sets; exact signature lines -----------------


def rotated_twice() -> tuple[LedgerState, Entry, Entry]:
    """{RELEASE} -> R1 {RELEASE, SECURITY} -> R2 {RELEASE, SPARE}: SECURITY dropped."""
    state = admitted(RELEASE_KEY)
    r1 = entry(
        KeySet("acme.example", (RELEASE_KEY.verifier.vkey, SECURITY_KEY.verifier.vkey), 1, 2),
        RELEASE_KEY,
    )
    state.apply(r1)
    r2 = entry(
        KeySet("acme.example", (RELEASE_KEY.verifier.vkey, SPARE_KEY.verifier.vkey), 1, 3),
        RELEASE_KEY,
    )
    state.apply(r2)
    return state, r1, r2


def test_an_old_rotation_never_applies_again() -> None:
    state, r1, _ = rotated_twice()
    # Replayed as it was logged (same text: the same entry).
    with pytest.raises(EntryPolicyError, match="already in the log"):
        state.apply(r1)
    # The same key set re-signed as a new text cannot carry serial 2 any more.
    again = KeySet("acme.example", (SECURITY_KEY.verifier.vkey, RELEASE_KEY.verifier.vkey), 1, 2)
    with pytest.raises(EntryPolicyError) as info:
        state.apply(entry(again, RELEASE_KEY))
    assert str(info.value) == (
        "key set of acme.example carries serial 2, but the current key set (log index 2) is "
        "serial 3: a rotation creates serial 4, and an old rotation can never be applied again"
    )
    assert state.vendors["acme.example"].keys == (
        RELEASE_KEY.verifier.vkey,
        SPARE_KEY.verifier.vkey,
    )
    # A serial that skips ahead is refused too.
    ahead = KeySet("acme.example", (RELEASE_KEY.verifier.vkey,), 1, 5)
    with pytest.raises(EntryPolicyError, match=r"carries serial 5.* creates serial 4$"):
        state.apply(entry(ahead, RELEASE_KEY))


@pytest.mark.parametrize("how", ["unknown line", "repeated line"])
def test_replayed_rotation_with_other_signature_lines_is_refused(how: str) -> None:
    """Defect 1 of the hardening review, at the rules: R1 re-submitted with one
    extra signature line (or its own line twice) is not a new rotation."""
    state, r1, _ = rotated_twice()
    extra = (
        generate_key("mallory.example/x").sign(r1.text.encode())
        if how == "unknown line"
        else r1.signatures[0].signature
    )
    name, key_id = (
        ("mallory.example/x", generate_key("mallory.example/x").key_id)
        if how == "unknown line"
        else (r1.signatures[0].name, r1.signatures[0].key_id)
    )
    replayed = parse_entry(r1.raw + Signature(name, key_id, extra).line().encode())
    assert replayed.identity == r1.identity
    assert replayed.leaf_hash != r1.leaf_hash
    with pytest.raises(EntryPolicyError, match="already in the log"):
        state.apply(replayed)
    with pytest.raises(SignatureLineError):
        authorize(replayed, 3, (OPERATOR.verifier,), state.vendors["acme.example"])


def test_signature_lines_must_be_exactly_the_required_keys() -> None:
    state = admitted(RELEASE_KEY, SECURITY_KEY, threshold=1)
    rel = entry(release(), RELEASE_KEY)
    stranger = generate_key("mallory.example/x")
    unknown = parse_entry(
        rel.raw
        + Signature(stranger.name, stranger.key_id, stranger.sign(rel.text.encode()))
        .line()
        .encode()
    )
    with pytest.raises(SignatureLineError) as info:
        state.apply(unknown)
    assert str(info.value).startswith(
        f"release: signature line 2 is by mallory.example/x+{stranger.key_id:08x}, which is "
        "not one of the vendor's keys (acme.example/release+"
    )
    twice = parse_entry(rel.raw + rel.signatures[0].line().encode())
    with pytest.raises(SignatureLineError) as info:
        state.apply(twice)
    assert str(info.value) == (
        f"release: signature line 2 is a second signature by {rel.signatures[0].key} "
        "(line 1 is the first): each key signs once; the current key set of acme.example "
        "is serial 1, from log index 0"
    )
    # Both required keys signing is fine (threshold 1 of 2), each once.
    state.apply(entry(release(), RELEASE_KEY, SECURITY_KEY))
    # A revocation names a release by identity, whatever its signature lines.
    logged = entry(release("2.0"), RELEASE_KEY)
    state.apply(logged)
    revocation = entry(Revocation("acme.example", logged.identity.hex(), "bad"), RELEASE_KEY)
    state.apply(revocation)


def test_an_admission_without_operator_keys_is_refused_not_a_crash() -> None:
    """A replay that trusts no operator key (a monitor started without
    --operator-key) refuses admissions with a reason, never a ValueError."""
    state = LedgerState(operator_keys=())
    body = VendorAdmission("acme.example", (RELEASE_KEY.verifier.vkey,), 1)
    with pytest.raises(EntryPolicyError, match="no operator key is trusted"):
        state.apply(entry(body, OPERATOR))
    assert state.size == 0


# --- verifying ahead of the replay (a monitor's worker threads) -----------------------


def test_verify_ahead_says_what_apply_may_skip() -> None:
    state = LedgerState(operator_keys=(OPERATOR.verifier,))
    ring = KeyRing.of(state.operator_keys)
    admission = entry(VendorAdmission("acme.example", (RELEASE_KEY.verifier.vkey,), 1), OPERATOR)
    assert verify_ahead(admission, ring, state.vendors) == OPERATOR_KEYS
    rel = entry(release(), RELEASE_KEY)
    assert verify_ahead(rel, ring, state.vendors) is None  # vendor not admitted yet
    state.apply(admission, verified_with=OPERATOR_KEYS)
    assert verify_ahead(rel, ring, state.vendors) == 0
    assert verify_ahead(entry(release("2.0"), SPARE_KEY), ring, state.vendors) is None
    forged = bytearray(sign_entry(release("3.0"), [RELEASE_KEY]))
    forged[-5] = ord("A") if forged[-5] != ord("A") else ord("B")
    assert verify_ahead(parse_entry(bytes(forged)), ring, state.vendors) is None
    with pytest.raises(SignatureError):
        state.apply(parse_entry(bytes(forged)), verified_with=None)
    state.apply(rel, verified_with=0)
    assert state.size == 2


def test_an_entry_verified_ahead_with_keys_rotated_since_is_verified_again() -> None:
    state = admitted(RELEASE_KEY)
    ring = KeyRing.of(state.operator_keys)
    old_keys = dict(state.vendors)
    late = entry(release("2.0"), RELEASE_KEY)
    verified_with = verify_ahead(late, ring, old_keys)
    assert verified_with == 0
    state.apply(entry(KeySet("acme.example", (SPARE_KEY.verifier.vkey,), 1, 2), RELEASE_KEY))
    with pytest.raises(SignatureLineError, match="not one of the vendor's keys"):
        state.apply(late, verified_with=verified_with)
    assert state.size == 2
