"""Split-view evidence (firmlog.client.evidence): its JSON form and what it proves."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from support.merkle import LevelsReader

from firmlog.client.checkpoint import Checkpoint, sign_checkpoint
from firmlog.client.errors import (
    EvidenceFormatError,
    ProofError,
    SignatureError,
    VerificationError,
)
from firmlog.client.evidence import DIFFERENT_SIZES, SAME_SIZE, SplitViewEvidence
from firmlog.client.keys import generate_key
from firmlog.client.merkle import consistency_proof, leaf_hash, root_hash, tree_hash

LOG = generate_key("example.com/log")
HONEST = [leaf_hash(f"entry {i}".encode()) for i in range(12)]
FORKED = HONEST[:5] + [leaf_hash(f"forked {i}".encode()) for i in range(5, 12)]


def note(leaves: list[bytes], size: int) -> bytes:
    return sign_checkpoint(Checkpoint(LOG.name, size, root_hash(leaves[:size])), LOG)


def same_size() -> SplitViewEvidence:
    return SplitViewEvidence(SAME_SIZE, note(HONEST, 9), note(FORKED, 9), (), None, "")


def different_sizes() -> SplitViewEvidence:
    """The log signed size 7 of one tree and size 12 of another."""
    larger = LevelsReader(FORKED)
    smaller_root = tree_hash(7, larger.at(12))
    proof = tuple(consistency_proof(7, 12, larger.at(12)))
    return SplitViewEvidence(
        DIFFERENT_SIZES, note(HONEST, 7), note(FORKED, 12), proof, smaller_root, "forked"
    )


@pytest.mark.parametrize("make", [same_size, different_sizes])
def test_evidence_round_trips_and_verifies(make: Any) -> None:
    evidence = make()
    assert SplitViewEvidence.from_json(evidence.to_json()) == evidence
    assert "signed" in evidence.verify(LOG.verifier)


def test_consistent_checkpoints_prove_nothing() -> None:
    larger = LevelsReader(HONEST)
    honest = SplitViewEvidence(
        DIFFERENT_SIZES,
        note(HONEST, 7),
        note(HONEST, 12),
        tuple(consistency_proof(7, 12, larger.at(12))),
        tree_hash(7, larger.at(12)),
    )
    with pytest.raises(VerificationError, match="are consistent: no split view"):
        honest.verify(LOG.verifier)
    twice = SplitViewEvidence(SAME_SIZE, note(HONEST, 9), note(HONEST, 9), (), None)
    with pytest.raises(VerificationError, match="the same root: no split view"):
        twice.verify(LOG.verifier)


def test_a_made_up_root_needs_a_proof_that_verifies() -> None:
    evidence = different_sizes()
    forged = SplitViewEvidence(
        DIFFERENT_SIZES, evidence.old_note, evidence.new_note, evidence.proof, b"\x01" * 32
    )
    with pytest.raises(ProofError):
        forged.verify(LOG.verifier)


def test_notes_the_log_key_did_not_sign_prove_nothing() -> None:
    with pytest.raises(SignatureError):
        same_size().verify(generate_key("example.com/log").verifier)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(kind="other"), "evidence kind must be"),
        (lambda d: d.update(notes=["AA=="]), "notes must be a list of two"),
        (lambda d: d["notes"].__setitem__(0, "not base64!"), r"notes\[0\] is not standard base64"),
        (lambda d: d["notes"].__setitem__(1, 7), r"notes\[1\] must be a base64 string"),
        (lambda d: d.update(proof="AA=="), "proof must be a list"),
        (lambda d: d.update(smaller_root=5), "smaller_root must be a base64 string"),
    ],
)
def test_malformed_evidence_says_what_is_wrong(change: Any, message: str) -> None:
    item = copy.deepcopy(different_sizes().to_json())
    change(item)
    with pytest.raises(EvidenceFormatError, match=message):
        SplitViewEvidence.from_json(item)
    with pytest.raises(EvidenceFormatError, match="must be a JSON object"):
        SplitViewEvidence.from_json([item])


def test_the_kind_must_match_the_sizes() -> None:
    evidence = same_size()
    with pytest.raises(EvidenceFormatError, match="holds two checkpoints of one size"):
        SplitViewEvidence(
            DIFFERENT_SIZES, evidence.old_note, evidence.new_note, (), b"x" * 32
        ).verify(LOG.verifier)
    other = different_sizes()
    with pytest.raises(EvidenceFormatError, match="holds checkpoints of two sizes"):
        SplitViewEvidence(SAME_SIZE, other.old_note, other.new_note, (), None).verify(LOG.verifier)
