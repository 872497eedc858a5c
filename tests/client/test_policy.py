"""c2sp.org/tlog-policy: parsing, every rejection rule, quorum evaluation, verify_checkpoint."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.mutations import mutated, mutated_text

from firmlog.client.checkpoint import Checkpoint, sign_checkpoint
from firmlog.client.cosignature import CosignatureSigner, cosign
from firmlog.client.errors import (
    CheckpointFormatError,
    FirmlogError,
    NoteFormatError,
    PolicyFormatError,
    QuorumError,
    SignatureError,
)
from firmlog.client.keys import Ed25519Signer
from firmlog.client.note import Signature, add_signatures, sign_note, split_note
from firmlog.client.policy import (
    MAX_POLICY_GROUPS,
    MAX_POLICY_LOGS,
    MAX_POLICY_WITNESSES,
    Policy,
    PolicyGroup,
    PolicyLog,
    PolicyWitness,
    parse_policy,
)

ORIGIN = "example.com/log"
ROOT = hashlib.sha256(b"root").digest()
NOW = 1_700_000_000
LOG = Ed25519Signer.from_seed(ORIGIN, b"\x01" * 32)
OTHER_LOG = Ed25519Signer.from_seed("other.example/log", b"\x02" * 32)
W = {
    name: CosignatureSigner.from_seed(f"{name.lower()}.witness.example", bytes([16 + i]) * 32)
    for i, name in enumerate(["X1", "X2", "X3", "Y1", "Y2", "Y3"])
}


def vk(name: str) -> str:
    return W[name].verifier.vkey


SPEC_EXAMPLE = f"""\
log {LOG.verifier.vkey}

witness X1 {vk("X1")}
witness X2 {vk("X2")}
witness X3 {vk("X3")}
group X-witnesses 2 X1 X2 X3

witness Y1 {vk("Y1")}
witness Y2 {vk("Y2")}
witness Y3 {vk("Y3")}
group Y-witnesses any Y1 Y2 Y3

group X-and-Y all X-witnesses Y-witnesses
quorum X-and-Y
"""


def checkpoint_note(size: int = 7, key: Ed25519Signer = LOG, origin: str = ORIGIN) -> bytes:
    return sign_checkpoint(Checkpoint(origin, size, ROOT), key)


def cosigned(*names: str, ts: int = NOW, data: bytes | None = None) -> bytes:
    data = checkpoint_note() if data is None else data
    for name in names:
        data = cosign(data, W[name], ts)
    return data


# --- parsing ---


def test_spec_example_structure() -> None:
    policy = parse_policy(SPEC_EXAMPLE)
    assert [log.verifier for log in policy.logs] == [LOG.verifier]
    assert [w.name for w in policy.witnesses] == ["X1", "X2", "X3", "Y1", "Y2", "Y3"]
    assert [w.verifier for w in policy.witnesses] == [W[n].verifier for n in W]
    assert policy.groups == (
        PolicyGroup("X-witnesses", 2, ("X1", "X2", "X3")),
        PolicyGroup("Y-witnesses", 1, ("Y1", "Y2", "Y3")),
        PolicyGroup("X-and-Y", 2, ("X-witnesses", "Y-witnesses")),
    )
    assert policy.quorum == "X-and-Y"
    assert policy.describe_quorum() == (
        "X-and-Y = all of (X-witnesses = 2 of (X1, X2, X3), Y-witnesses = any of (Y1, Y2, Y3))"
    )
    assert policy.satisfied_by({"X1", "X3", "Y2"})
    assert not policy.satisfied_by({"X1", "Y1", "Y2", "Y3"})
    assert not policy.satisfied_by({"X1", "X2", "X3"})
    assert not policy.satisfied_by(set())
    assert parse_policy(SPEC_EXAMPLE.encode()) == policy


def test_comments_whitespace_urls_and_last_line() -> None:
    text = (
        "# a trust policy\n"
        "\n"
        f"  \t log\t{LOG.verifier.vkey}   https://log.example/  \n"
        "   # indented comment\n"
        " \t \n"
        f"witness X1 {vk('X1')} https://x1.example/witness\n"
        f"witness\tX2\t{vk('X2')}\n"
        "group\tG  any X1\t\tX2   \n"
        "quorum G"  # no final newline
    )
    policy = parse_policy(text)
    assert policy.logs == (PolicyLog(LOG.verifier, "https://log.example/"),)
    assert policy.witnesses == (
        PolicyWitness("X1", W["X1"].verifier, "https://x1.example/witness"),
        PolicyWitness("X2", W["X2"].verifier),
    )
    assert policy.groups == (PolicyGroup("G", 1, ("X1", "X2")),)
    assert parse_policy(policy.to_text()) == policy


def test_quorum_none_and_single_witness() -> None:
    none = parse_policy(f"log {LOG.verifier.vkey}\nquorum none\n")
    assert none.witnesses == ()
    assert none.satisfied_by(set())
    single = parse_policy(f"witness W {vk('X1')}\nquorum W\n")
    assert single.logs == ()
    assert single.satisfied_by({"W"})
    assert not single.satisfied_by({"X1"})
    assert parse_policy("quorum none").to_text() == "quorum none\n"


def test_lines_may_come_in_any_order_and_after_the_quorum() -> None:
    text = f"witness X1 {vk('X1')}\nquorum X1\nlog {LOG.verifier.vkey}\nwitness X2 {vk('X2')}\n"
    policy = parse_policy(text)
    assert len(policy.logs) == 1
    assert [w.name for w in policy.witnesses] == ["X1", "X2"]


def test_names_are_opaque_octets() -> None:
    kelvin = "\u212a".encode()
    raw = (
        b"witness K " + vk("X1").encode() + b"\n"
        b"witness " + kelvin + b" " + vk("X2").encode() + b"\n"
        b"witness \xff\xfe " + vk("X3").encode() + b"\n"
        b"# comment with \x80 high octets\n"
        b"group G all K " + kelvin + b" \xff\xfe\n"
        b"quorum G\n"
    )
    policy = parse_policy(raw)
    names = [w.name for w in policy.witnesses]
    assert names[0] == "K"
    assert names[1] == "\u212a"
    assert names[2].encode("utf-8", errors="surrogateescape") == b"\xff\xfe"
    assert policy.satisfied_by({"K", "\u212a", names[2]})
    assert not policy.satisfied_by({"K", "\u212a"})
    assert parse_policy(policy.to_text().encode("utf-8", errors="surrogateescape")) == policy


def test_group_thresholds_round_trip_as_all_any_k() -> None:
    text = (
        f"witness A {vk('X1')}\nwitness B {vk('X2')}\nwitness C {vk('X3')}\n"
        f"witness D {vk('Y1')}\n"
        "group G1 2 A B C\ngroup G2 1 D\ngroup G3 2 G1 G2\nquorum G3\n"
    )
    policy = parse_policy(text)
    assert [g.threshold for g in policy.groups] == [2, 1, 2]
    out = policy.to_text()
    assert "group G1 2 A B C\n" in out
    assert "group G2 all D\n" in out
    assert "group G3 all G1 G2\n" in out
    assert parse_policy(out) == policy


LOG2 = OTHER_LOG.verifier.vkey
SAME_KEY_OTHER_NAME = Ed25519Signer.from_seed("renamed.example/log", b"\x01" * 32).verifier.vkey
X1_AS_0x01 = Ed25519Signer.from_seed("x1.witness.example", bytes([16]) * 32).verifier.vkey
X1_RENAMED = CosignatureSigner.from_seed("renamed", bytes([16]) * 32).verifier.vkey
WITNESSES = f"witness X1 {vk('X1')}\nwitness X2 {vk('X2')}\nwitness X3 {vk('X3')}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "policy has no quorum line: expected exactly one"),
        ("# only a comment\n", "no quorum line"),
        (f"log {LOG.verifier.vkey}\n", "no quorum line"),
        (
            "quorum none\nquorum none\n",
            "policy line 2: second quorum line \\(the first is on line 1\\)",
        ),
        ("quorum\n", "policy line 1: expected 'quorum <name>', got 0 items"),
        ("quorum a b\n", "expected 'quorum <name>', got 2 items"),
        ("quorum X1\n", "quorum 'X1' is not 'none' or a witness or group defined on a preceding"),
        (f"quorum X1\nwitness X1 {vk('X1')}\n", "policy line 1: quorum 'X1' is not"),
        ("Quorum none\n", "policy line 1: unknown keyword 'Quorum': expected log, witness, group"),
        ("logs x\nquorum none\n", "unknown keyword 'logs'"),
        ("log\nquorum none\n", "policy line 1: expected 'log <vkey> \\[<url>\\]', got 0 items"),
        (f"log {LOG.verifier.vkey} url extra\n", "expected 'log <vkey> \\[<url>\\]', got 3 items"),
        (
            f"log {LOG.verifier.vkey} url # comment\n",
            "expected 'log <vkey> \\[<url>\\]', got 4 items",
        ),
        ("log not-a-key\n", "policy line 1: invalid log key: verifier key: expected"),
        (f"log {vk('X1')}\n", "invalid log key: .*expected key type 0x01, got 0x04"),
        (
            f"log {LOG.verifier.vkey}\nlog {SAME_KEY_OTHER_NAME}\n",
            "policy line 2: duplicate log: same public key as the log on line 1",
        ),
        (
            f"log {LOG.verifier.vkey}\nlog {LOG.verifier.vkey}\n",
            "policy line 2: duplicate log",
        ),
        ("witness X1\n", "expected 'witness <name> <vkey> \\[<url>\\]', got 1 items"),
        (f"witness X1 {vk('X1')} u v\n", "got 4 items after 'witness'"),
        ("witness X1 nope\n", "policy line 1: invalid key for witness 'X1': witness verifier key"),
        (
            f"witness X1 {vk('X1')}\nwitness X2 {X1_RENAMED}\n",
            "policy line 2: duplicate witness 'X2': same public key as the witness on line 1",
        ),
        (
            f"witness X1 {vk('X1')}\nwitness X2 {X1_AS_0x01}\n",
            "duplicate witness 'X2': same public key",
        ),
        (
            f"witness X1 {vk('X1')}\nwitness X1 {vk('X2')}\n",
            "policy line 2: name 'X1' is already defined on line 1",
        ),
        (f"witness none {vk('X1')}\n", "'none' is reserved and cannot name a witness"),
        (
            WITNESSES + "group G any X1\ngroup G any X2\n",
            "policy line 5: name 'G' is already defined on line 4",
        ),
        (WITNESSES + "group X1 any X2\n", "name 'X1' is already defined on line 1"),
        (
            WITNESSES + "group G any X1\nwitness G " + vk("Y1") + "\n",
            "policy line 5: name 'G' is already defined on line 4",
        ),
        (WITNESSES + "group none any X1\n", "'none' is reserved and cannot name a group"),
        (WITNESSES + "group G any\n", "with at least one member, got 2 items after 'group'"),
        (WITNESSES + "group G\n", "with at least one member, got 1 items"),
        (WITNESSES + "group G any none\n", "group 'G': 'none' cannot be a group member"),
        (WITNESSES + "group G any X4\n", "member 'X4' is not defined on a preceding line"),
        (WITNESSES + "group G any G\n", "member 'G' is not defined on a preceding line"),
        (
            WITNESSES + "group G any H\ngroup H any X1\n",
            "policy line 4: group 'G': member 'H' is not defined",
        ),
        (
            WITNESSES + "group G any X1 X1\n",
            "'X1' is already a member of this group; each name can be listed as a group "
            "member at most once",
        ),
        (
            WITNESSES + "group G any X1 X2\ngroup H any X1 X3\n",
            "policy line 5: group 'H': 'X1' is already a member of group 'G' on line 4",
        ),
        (
            WITNESSES + "group G any X1\ngroup H any G\ngroup I any G\n",
            "'G' is already a member of group 'H'",
        ),
        (WITNESSES + "group G 0 X1 X2\n", "threshold must be 'all', 'any' or a decimal k with"),
        (WITNESSES + "group G 3 X1 X2\n", "1 <= k <= 2 \\(the number of members\\), got '3'"),
        (WITNESSES + "group G 01 X1 X2\n", "got '01'"),
        (WITNESSES + "group G -1 X1 X2\n", "got '-1'"),
        (WITNESSES + "group G +1 X1 X2\n", "got '\\+1'"),
        (WITNESSES + "group G two X1 X2\n", "got 'two'"),
        (WITNESSES + "group G ALL X1 X2\n", "got 'ALL'"),
        (WITNESSES + f"group G {'9' * 5000} X1\n", "threshold must be"),
        (WITNESSES + "group G all X1 X2\nquorum X1\nquorum G\n", "second quorum line"),
        ("quorum none\r\n", "policy line 1: octet 0x0d is not allowed \\(CRLF line endings\\?\\)"),
        ("# \x00\nquorum none\n", "policy line 1: octet 0x00 is not allowed"),
        ("quorum none\n\x7f\n", "policy line 2: octet 0x7f is not allowed"),
        ("quorum\x0bnone\n", "octet 0x0b is not allowed; only tab, newline, 0x20-0x7e"),
        ("quorum\x0cnone\n", "octet 0x0c"),
    ],
)
def test_rejections(text: str, message: str) -> None:
    with pytest.raises(PolicyFormatError, match=message):
        parse_policy(text)
    with pytest.raises(PolicyFormatError, match=message):
        parse_policy(text.encode("utf-8"))


def test_key_id_collisions_are_rejected() -> None:
    # The same key name and ID twice cannot happen by accident; it would make
    # signature lines ambiguous, so the policy refuses it. Build it by hand.
    policy = parse_policy(f"witness A {vk('X1')}\nquorum A\n")
    verifier = policy.witnesses[0].verifier
    with pytest.raises(ValueError, match="duplicate witness key"):
        Policy((), (PolicyWitness("A", verifier), PolicyWitness("B", verifier)), (), "A")


def test_limits() -> None:
    # At least 32 of each are accepted (the spec's recommendation).
    logs = [Ed25519Signer.from_seed(f"log{i}.example", bytes([i]) * 32) for i in range(32)]
    witnesses = [
        CosignatureSigner.from_seed(f"w{i}.example", bytes([100 + i]) * 32) for i in range(32)
    ]
    lines = [f"log {k.verifier.vkey}" for k in logs]
    lines += [f"witness W{i} {k.verifier.vkey}" for i, k in enumerate(witnesses)]
    lines += [f"group G{i} any W{i}" for i in range(32)]
    lines += ["group ALL 32 " + " ".join(f"G{i}" for i in range(32)), "quorum ALL"]
    policy = parse_policy("\n".join(lines) + "\n")
    assert (len(policy.logs), len(policy.witnesses), len(policy.groups)) == (32, 32, 33)
    assert policy.satisfied_by({f"W{i}" for i in range(32)})
    assert not policy.satisfied_by({f"W{i}" for i in range(31)})
    assert parse_policy(policy.to_text()) == policy


def test_limits_are_enforced() -> None:
    key = LOG.verifier.vkey
    too_many_logs = "".join(
        f"log {Ed25519Signer.from_seed(f'l{i}', i.to_bytes(32, 'big')).verifier.vkey}\n"
        for i in range(MAX_POLICY_LOGS + 1)
    )
    with pytest.raises(PolicyFormatError, match=f"line {MAX_POLICY_LOGS + 1}: too many logs"):
        parse_policy(too_many_logs)
    wkeys = [
        CosignatureSigner.from_seed(f"w{i}", i.to_bytes(32, "big")).verifier.vkey
        for i in range(MAX_POLICY_WITNESSES + 1)
    ]
    with pytest.raises(PolicyFormatError, match="too many witnesses: at most 256"):
        parse_policy("".join(f"witness W{i} {k}\n" for i, k in enumerate(wkeys)))
    groups = f"witness W {wkeys[0]}\ngroup G0 any W\n" + "".join(
        f"group G{i} any G{i - 1}\n" for i in range(1, MAX_POLICY_GROUPS + 1)
    )
    with pytest.raises(PolicyFormatError, match="too many groups: at most 256"):
        parse_policy(groups)
    with pytest.raises(PolicyFormatError, match="policy too large"):
        parse_policy("#" * (1 << 20) + f"\nlog {key}\nquorum none\n")
    with pytest.raises(PolicyFormatError, match="policy too large"):
        parse_policy(b"#" * (1 << 20) + b"\nquorum none\n")
    with pytest.raises(TypeError, match="policy must be str or bytes, got int"):
        parse_policy(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("witnesses", "groups", "quorum", "message"),
    [
        (("A", "A"), (), "A", "name 'A' is defined twice"),
        (("none",), (), "none", "'none' is reserved"),
        (("A",), (PolicyGroup("G", 1, ()),), "G", "group 'G' has no members"),
        (("A",), (PolicyGroup("G", 2, ("A",)),), "G", "threshold must be between 1 and 1, got 2"),
        (("A",), (PolicyGroup("G", 1, ("B",)),), "G", "member 'B' is not a witness or an earlier"),
        (
            ("A",),
            (PolicyGroup("G", 1, ("A",)), PolicyGroup("H", 1, ("A",))),
            "H",
            "'A' is already a group member",
        ),
        (("A",), (), "B", "quorum 'B' is not a witness, a group or 'none'"),
        (("a b",), (), "none", "must not contain whitespace"),
    ],
)
def test_policy_constructor_checks(
    witnesses: tuple[str, ...], groups: tuple[PolicyGroup, ...], quorum: str, message: str
) -> None:
    keys = ["X1", "X2", "X3"][: len(witnesses)]
    ws = tuple(PolicyWitness(n, W[k].verifier) for n, k in zip(witnesses, keys, strict=True))
    with pytest.raises(ValueError, match=message):
        Policy((), ws, groups, quorum)


def test_policy_constructor_checks_logs() -> None:
    with pytest.raises(ValueError, match="duplicate log key"):
        Policy((PolicyLog(LOG.verifier), PolicyLog(LOG.verifier)), (), (), "none")
    with pytest.raises(ValueError, match="URL must not contain whitespace"):
        Policy((PolicyLog(LOG.verifier, "a b"),), (), (), "none")


# --- quorum evaluation ---


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    names = list(W)
    count = draw(st.integers(0, len(names)))
    witnesses = tuple(
        PolicyWitness(
            names[i],
            W[names[i]].verifier,
            draw(st.sampled_from([None, f"https://{names[i].lower()}.example/"])),
        )
        for i in range(count)
    )
    available = [w.name for w in witnesses]
    groups: list[PolicyGroup] = []
    for g in range(draw(st.integers(0, 4))):
        if not available:
            break
        members = draw(st.lists(st.sampled_from(available), min_size=1, unique=True))
        for m in members:
            available.remove(m)
        threshold = draw(st.integers(1, len(members)))
        groups.append(PolicyGroup(f"G{g}", threshold, tuple(members)))
        available.append(f"G{g}")
    defined = [w.name for w in witnesses] + [g.name for g in groups]
    quorum = draw(st.sampled_from(["none", *defined]))
    log_keys = draw(st.lists(st.sampled_from([LOG, OTHER_LOG]), unique=True, max_size=2))
    urls = [draw(st.sampled_from([None, "https://log.example/"])) for _ in log_keys]
    logs = tuple(PolicyLog(k.verifier, url) for k, url in zip(log_keys, urls, strict=True))
    return Policy(logs, witnesses, tuple(groups), quorum)


@settings(max_examples=150, deadline=None)
@given(policy=policies())
def test_policy_round_trip(policy: Policy) -> None:
    text = policy.to_text()
    assert parse_policy(text) == policy
    assert parse_policy(text.encode()) == policy
    assert parse_policy(text).to_text() == text
    parsed = parse_policy(text)  # built without the constructor: it verifies alike
    assert _verdict(parsed) == _verdict(policy)


_NOTE_ALL = cosigned("X1", "X2", "X3", "Y1", "Y2", "Y3")


def _verdict(policy: Policy) -> object:
    try:
        return policy.verify_checkpoint(_NOTE_ALL, now=NOW)
    except FirmlogError as exc:
        return f"{type(exc).__name__}: {exc}"


@settings(max_examples=200, deadline=None)
@given(policy=policies(), data=st.data())
def test_satisfied_by_is_monotone(policy: Policy, data: st.DataObject) -> None:
    names = sorted(W)
    smaller = data.draw(st.sets(st.sampled_from(names)))
    larger = smaller | data.draw(st.sets(st.sampled_from(names)))
    if policy.satisfied_by(smaller):
        assert policy.satisfied_by(larger)
    # Every witness cosigning always satisfies the quorum; nobody only satisfies "none".
    assert policy.satisfied_by({w.name for w in policy.witnesses})
    assert policy.satisfied_by(set()) == (policy.quorum == "none")


def test_nested_groups_evaluation() -> None:
    policy = parse_policy(
        WITNESSES
        + f"witness Y1 {vk('Y1')}\nwitness Y2 {vk('Y2')}\n"
        + "group X 2 X1 X2 X3\ngroup Y all Y1 Y2\ngroup Top any X Y\nquorum Top\n"
    )
    assert policy.satisfied_by({"X1", "X3"})
    assert policy.satisfied_by({"Y1", "Y2"})
    assert not policy.satisfied_by({"X1", "Y1"})
    assert not policy.satisfied_by({"Top", "X", "Y"})  # group names are not witnesses
    assert policy.satisfied_by({"X2", "X3", "unknown"})


# --- verify_checkpoint ---

POLICY = parse_policy(SPEC_EXAMPLE)


def test_verify_checkpoint_quorum_met() -> None:
    data = cosigned("X1", "X3", "Y2")
    verified = POLICY.verify_checkpoint(data, now=NOW)
    assert verified.witnesses == ("X1", "X3", "Y2")
    assert verified.timestamps == {"X1": NOW, "X3": NOW, "Y2": NOW}
    assert verified.signed.raw == data
    assert verified.signed.checkpoint == Checkpoint(ORIGIN, 7, ROOT)
    assert verified.signed.note.verified[0].name == ORIGIN


def test_verify_checkpoint_below_quorum() -> None:
    data = cosigned("X1", "Y1", "Y2")
    expected = (
        "checkpoint 'example.com/log' at size 7 does not meet the policy quorum: required "
        "X-and-Y = all of (X-witnesses = 2 of (X1, X2, X3), Y-witnesses = any of (Y1, Y2, Y3)); "
        "valid cosignatures from ['X1', 'Y1', 'Y2']"
    )
    with pytest.raises(QuorumError, match=re.escape(expected) + "$"):
        POLICY.verify_checkpoint(data, now=NOW)
    with pytest.raises(QuorumError, match=r"valid cosignatures from no witness$"):
        POLICY.verify_checkpoint(checkpoint_note(), now=NOW)


def test_verify_checkpoint_ignores_unknown_witnesses() -> None:
    stranger = CosignatureSigner.from_seed("stranger.example", b"\x77" * 32)
    data = cosign(cosigned("X1", "Y1"), stranger, NOW)
    with pytest.raises(QuorumError, match=re.escape("from ['X1', 'Y1']")):
        POLICY.verify_checkpoint(data, now=NOW)
    data = cosign(cosigned("X1", "X2", "Y1"), stranger, NOW)
    verified = POLICY.verify_checkpoint(data, now=NOW)
    assert [s.name for s in verified.signed.note.unverified] == ["stranger.example"]


def test_verify_checkpoint_forged_cosignature() -> None:
    _, sigs = split_note(cosigned("X1", "X2", "Y1"))
    bad = sigs[2]
    forged = Signature(bad.name, bad.key_id, bad.signature[:-1] + bytes([bad.signature[-1] ^ 1]))
    data = add_signatures(checkpoint_note(), [sigs[1], forged, sigs[3]])
    with pytest.raises(
        SignatureError,
        match=re.escape(f"invalid signature by known key {W['X2'].verifier.name}+"),
    ):
        POLICY.verify_checkpoint(data, now=NOW)
    # A witness key signing something else under its name is also a forgery here.
    other = split_note(cosign(checkpoint_note(size=8), W["X3"], NOW))[1][1]
    with pytest.raises(SignatureError, match="invalid signature by known key x3"):
        POLICY.verify_checkpoint(add_signatures(cosigned("X1", "X2", "Y1"), [other]), now=NOW)


def test_verify_checkpoint_future_dated() -> None:
    data = cosigned("X1", "Y1", ts=NOW)
    data = cosign(data, W["X2"], NOW + 301)
    with pytest.raises(
        QuorumError,
        match=re.escape(
            f"valid cosignatures from ['X1', 'Y1']; not counted: X2 (dated {NOW + 301}, "
            f"more than 300 s after now={NOW})"
        ),
    ):
        POLICY.verify_checkpoint(data, now=NOW)
    # Within the allowed skew it counts; the skew is configurable.
    assert POLICY.verify_checkpoint(data, now=NOW + 1).witnesses == ("X1", "X2", "Y1")
    far = cosign(cosigned("X1", "Y1"), W["X3"], NOW + 5000)
    with pytest.raises(QuorumError, match="more than 1000 s after"):
        POLICY.verify_checkpoint(far, now=NOW, max_future_skew=1000)
    assert POLICY.verify_checkpoint(data, now=NOW, max_future_skew=301).witnesses == (
        "X1",
        "X2",
        "Y1",
    )


def test_verify_checkpoint_stale_with_max_age() -> None:
    data = cosigned("X1", "X2", "Y1", ts=NOW - 7200)
    # No max_age: old cosignatures count.
    assert POLICY.verify_checkpoint(data, now=NOW).timestamps["X1"] == NOW - 7200
    with pytest.raises(
        QuorumError,
        match=re.escape(f"not counted: X1 (dated {NOW - 7200}, older than max_age=3600 s)"),
    ):
        POLICY.verify_checkpoint(data, now=NOW, max_age=3600)
    assert POLICY.verify_checkpoint(data, now=NOW, max_age=7200).witnesses == ("X1", "X2", "Y1")
    # A fresh cosignature from the same witness next to a stale one counts.
    fresh = cosigned("X1", "X2", "Y1", ts=NOW, data=data)
    verified = POLICY.verify_checkpoint(fresh, now=NOW, max_age=3600)
    assert verified.timestamps == {"X1": NOW, "X2": NOW, "Y1": NOW}


def test_verify_checkpoint_wrong_log_key() -> None:
    impostor = Ed25519Signer.from_seed(ORIGIN, b"\x66" * 32)
    data = cosigned("X1", "X2", "Y1", data=checkpoint_note(key=impostor))
    with pytest.raises(
        SignatureError,
        match=re.escape(
            f"checkpoint for 'example.com/log' is not signed by the log: expected a signature "
            f"by example.com/log+{LOG.key_id:08x}, verified only ['x1.witness.example+"
        ),
    ):
        POLICY.verify_checkpoint(data, now=NOW)
    with pytest.raises(SignatureError, match="no valid signature by a trusted key"):
        POLICY.verify_checkpoint(checkpoint_note(key=impostor), now=NOW)


def test_verify_checkpoint_origin_mismatch() -> None:
    data = checkpoint_note(key=OTHER_LOG, origin=OTHER_LOG.name)
    with pytest.raises(
        SignatureError,
        match=re.escape(
            "checkpoint origin 'other.example/log' is not a log of the policy: expected one of "
            "['example.com/log']"
        ),
    ):
        POLICY.verify_checkpoint(cosigned("X1", "X2", "Y1", data=data), now=NOW)


def test_verify_checkpoint_quorum_none_and_key_rotation() -> None:
    rotated = Ed25519Signer.from_seed(ORIGIN, b"\x03" * 32)
    policy = parse_policy(f"log {LOG.verifier.vkey}\nlog {rotated.verifier.vkey}\nquorum none\n")
    for key in (LOG, rotated):
        verified = policy.verify_checkpoint(checkpoint_note(key=key))
        assert verified.witnesses == ()
        assert verified.timestamps == {}


def test_verify_checkpoint_with_type_0x01_witness_vkey() -> None:
    policy = parse_policy(f"log {LOG.verifier.vkey}\nwitness X1 {X1_AS_0x01}\nquorum X1\n")
    assert policy.verify_checkpoint(cosigned("X1"), now=NOW).witnesses == ("X1",)


def test_verify_checkpoint_input_errors() -> None:
    with pytest.raises(NoteFormatError):
        POLICY.verify_checkpoint(b"nonsense", now=NOW)
    with pytest.raises(CheckpointFormatError):
        POLICY.verify_checkpoint(sign_note("not\na checkpoint\n", [LOG]), now=NOW)
    with pytest.raises(ValueError, match="max_age must be >= 0"):
        POLICY.verify_checkpoint(cosigned(), now=NOW, max_age=-1)
    with pytest.raises(ValueError, match="max_future_skew must be >= 0"):
        POLICY.verify_checkpoint(cosigned(), now=NOW, max_future_skew=-1)


def test_verify_checkpoint_uses_the_clock_by_default() -> None:
    data = cosigned("X1", "X2", "Y1", ts=int(time.time()))
    assert POLICY.verify_checkpoint(data, max_age=600).witnesses == ("X1", "X2", "Y1")
    with pytest.raises(QuorumError, match="older than max_age"):
        POLICY.verify_checkpoint(cosigned("X1", "X2", "Y1", ts=NOW), max_age=600)


# --- fuzzing ---


@st.composite
def mutated_policies(draw: st.DrawFn) -> bytes:
    buf = bytearray(SPEC_EXAMPLE.encode())
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(buf)))
        op = draw(st.sampled_from(["insert", "delete", "dup", "swap-line"]))
        if op == "insert":
            piece = draw(
                st.sampled_from([b"\n", b" ", b"\t", b"#", b"none", b"any", b"0", b"X1", b"\r"])
            )
            buf[pos:pos] = piece
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 8))]
        elif op == "dup":
            buf[pos:pos] = buf[pos : pos + draw(st.integers(1, 60))]
        else:
            lines = bytes(buf).split(b"\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            buf = bytearray(b"\n".join(lines))
    return bytes(buf)


@settings(max_examples=250, deadline=None)
@given(data=st.one_of(mutated(SPEC_EXAMPLE.encode()), mutated_policies()))
def test_fuzz_parse_policy(data: bytes) -> None:
    with contextlib.suppress(PolicyFormatError):
        policy = parse_policy(data)
        assert parse_policy(policy.to_text()) == policy
        # The parser checked the rules line by line, not through the
        # constructor: the constructor accepts what it accepted.
        assert Policy(policy.logs, policy.witnesses, policy.groups, policy.quorum) == policy
    with contextlib.suppress(PolicyFormatError):
        parse_policy(data.decode("utf-8", errors="replace"))


@settings(max_examples=100, deadline=None)
@given(text=mutated_text(SPEC_EXAMPLE))
def test_fuzz_parse_policy_text(text: str) -> None:
    with contextlib.suppress(PolicyFormatError):
        policy = parse_policy(text)
        assert parse_policy(policy.to_text()) == policy


def test_vkey_helpers_are_what_they_claim() -> None:
    raw = base64.b64decode(X1_AS_0x01.split("+", 2)[2])
    assert raw[0] == 0x01
    assert raw[1:] == W["X1"].verifier.public_key
