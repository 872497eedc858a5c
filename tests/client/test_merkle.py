"""Tests for firmlog.client.merkle: RFC 9162 2.1 hashing, proofs, CompactRange.

Sources of truth, in order: the public vectors (RFC 6962 reference tree and
the transparency-dev/merkle probes), a direct transcription of the RFC 9162
recursive definitions (MTH, PATH, PROOF) for small trees, and properties
checked by hypothesis on trees of up to 10**5 leaves.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support.merkle import LevelsReader
from vectors import load_vector

from firmlog.client.errors import (
    ConsistencyProofError,
    FirmlogError,
    InclusionProofError,
    MerkleFormatError,
    ProofError,
)
from firmlog.client.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    ProofPlan,
    consistency_proof,
    consistency_proof_plan,
    consistency_proof_size,
    inclusion_proof,
    inclusion_proof_plan,
    inclusion_proof_size,
    leaf_hash,
    node_hash,
    old_root_from_consistency,
    root_hash,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)

MAX_N = 10**5
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- test doubles --------------------------------------------------------------


class UniformReader:
    """A tree of any size whose leaves all have the same hash (one entry, repeated).

    Every complete subtree at one level then has the same hash, so a tree of
    2**62 leaves costs nothing, and proofs over it still verify.
    """

    LEVELS: ClassVar[list[bytes]] = [leaf_hash(b"same entry")]
    for _ in range(64):
        LEVELS.append(node_hash(LEVELS[-1], LEVELS[-1]))

    def __init__(self, tree_size: int) -> None:
        self.tree_size = tree_size
        self.calls = 0
        self.coords: list[tuple[int, int]] = []

    def read_hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        self.calls += 1
        self.coords.extend(coords)
        for level, index in coords:
            assert (index + 1) << level <= self.tree_size, (level, index)
        return [self.LEVELS[level] for level, _ in coords]


def leaf_hashes(n: int) -> list[bytes]:
    """Cheap distinct leaf hashes: SHA-256 of the index."""
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]


@functools.cache
def big_tree() -> tuple[list[bytes], LevelsReader]:
    leaves = leaf_hashes(MAX_N)
    return leaves, LevelsReader(leaves)


@functools.cache
def big_root(n: int) -> bytes:
    return tree_hash(n, big_tree()[1].at(n))


# -- RFC 9162 2.1 transcribed literally (the reference for small trees) -------


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class Rfc9162:
    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = list(leaves)
        self.mth = functools.cache(self._mth)

    def _mth(self, start: int, end: int) -> bytes:
        n = end - start
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n == 1:
            return self.leaves[start]
        k = _k(n)
        return node_hash(self.mth(start, start + k), self.mth(start + k, end))

    def path(self, m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = _k(n)
        if m < k:
            return [*self.path(m, start, start + k), self.mth(start + k, end)]
        return [*self.path(m - k, start + k, end), self.mth(start, start + k)]

    def subproof(self, m: int, start: int, end: int, b: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if b else [self.mth(start, end)]
        k = _k(n)
        if m <= k:
            return [*self.subproof(m, start, start + k, b), self.mth(start + k, end)]
        return [*self.subproof(m - k, start + k, end, False), self.mth(start, start + k)]


# -- the RFC 6962 reference tree ---------------------------------------------------

REF = load_vector("rfc6962-reference-tree.json")
REF_LEAVES = [leaf_hash(bytes.fromhex(x)) for x in REF["leaf_inputs_hex"]]
REF_ROOTS = [bytes.fromhex(x) for x in REF["root_hash_by_tree_size_hex"]]


@pytest.mark.parametrize("case", REF["hasher_vectors"], ids=lambda c: c["desc"])
def test_reference_hasher_vectors(case: dict[str, Any]) -> None:
    want = bytes.fromhex(case["want_hex"])
    if case["kind"] == "empty_root":
        assert want == EMPTY_ROOT == root_hash([])
    elif case["kind"] == "leaf":
        assert leaf_hash(bytes.fromhex(case["input_hex"])) == want
    elif case["kind"] == "node_raw":
        assert node_hash(bytes.fromhex(case["left_hex"]), bytes.fromhex(case["right_hex"])) == want
    else:
        pytest.fail(f"unknown hasher vector kind {case['kind']!r}")


@pytest.mark.parametrize("size", range(len(REF_ROOTS)))
def test_reference_roots(size: int) -> None:
    want = REF_ROOTS[size]
    assert root_hash(REF_LEAVES[:size]) == want
    assert tree_hash(size, LevelsReader(REF_LEAVES).at(size)) == want
    cr = CompactRange()
    for h in REF_LEAVES[:size]:
        cr.append(h)
    assert cr.root() == want


def test_reference_node_hashes() -> None:
    want = [[bytes.fromhex(x) for x in level] for level in REF["node_hashes_by_level_hex"]]
    assert want[0] == REF_LEAVES
    view = LevelsReader(REF_LEAVES).at(8)
    coords = [(lv, i) for lv, hashes in enumerate(want) for i in range(len(hashes))]
    assert view.read_hashes(coords) == [h for hashes in want for h in hashes]
    # CompactRange.append reports exactly these complete subtrees, each once.
    cr = CompactRange()
    completed = [c for h in REF_LEAVES for c in cr.append(h)]
    assert sorted(completed) == sorted(
        (lv, i, h) for lv, hashes in enumerate(want) for i, h in enumerate(hashes)
    )


def test_reference_tree_all_proofs() -> None:
    tree = LevelsReader(REF_LEAVES)
    for n in range(1, 9):
        for i in range(n):
            proof = inclusion_proof(i, n, tree.at(n))
            verify_inclusion(REF_LEAVES[i], i, n, proof, REF_ROOTS[n])
        for m in range(1, n + 1):
            proof = consistency_proof(m, n, tree.at(n))
            verify_consistency(m, n, REF_ROOTS[m], REF_ROOTS[n], proof)


# -- transparency-dev/merkle probes -------------------------------------------------


def _b64(s: str | None) -> bytes:
    return base64.b64decode(s) if s else b""


def _probe_id(p: dict[str, Any]) -> str:
    return str(p["source_file"]).split("/", 2)[2].removesuffix(".json")


INCLUSION_PROBES = load_vector("merkle-inclusion-probes.json")["probes"]
CONSISTENCY_PROBES = load_vector("merkle-consistency-probes.json")["probes"]


def test_probe_counts() -> None:
    assert len(INCLUSION_PROBES) == 98
    assert len(CONSISTENCY_PROBES) == 98


@pytest.mark.parametrize("probe", INCLUSION_PROBES, ids=_probe_id)
def test_inclusion_probe(probe: dict[str, Any]) -> None:
    args = (
        _b64(probe["leafHash"]),
        probe["leafIdx"],
        probe["treeSize"],
        [_b64(x) for x in probe["proof"] or []],
        _b64(probe["root"]),
    )
    if probe["wantErr"]:
        with pytest.raises((InclusionProofError, MerkleFormatError)):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("probe", CONSISTENCY_PROBES, ids=_probe_id)
def test_consistency_probe(probe: dict[str, Any]) -> None:
    """Edge cases (additional/*): equal sizes need an empty proof and equal roots,
    and the probe 'sizes are equal (one) and proof is empty' passes although its
    roots are 12-byte placeholders (only equality can be checked there); size 0
    needs both roots to be SHA-256("") (so 0 == 0 with placeholder roots fails);
    0 < size2 always fails: a proof from the empty tree is meaningless."""
    args = (
        probe["size1"],
        probe["size2"],
        _b64(probe["root1"]),
        _b64(probe["root2"]),
        [_b64(x) for x in probe["proof"] or []],
    )
    if probe["wantErr"]:
        with pytest.raises((ConsistencyProofError, MerkleFormatError)):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


# -- agreement with the RFC recursion on every small tree ------------------------------


def test_small_trees_match_rfc_definitions() -> None:
    leaves = leaf_hashes(70)
    rfc = Rfc9162(leaves)
    tree = LevelsReader(leaves)
    for n in range(71):
        root = rfc.mth(0, n)
        assert root_hash(leaves[:n]) == root
        assert tree_hash(n, tree.at(n)) == root
        for i in range(n):
            proof = inclusion_proof(i, n, tree.at(n))
            assert proof == rfc.path(i, 0, n), (i, n)
            assert len(proof) == inclusion_proof_size(i, n)
            verify_inclusion(leaves[i], i, n, proof, root)
        for m in range(1, n + 1):
            proof = consistency_proof(m, n, tree.at(n))
            assert proof == rfc.subproof(m, 0, n, True), (m, n)
            assert len(proof) == consistency_proof_size(m, n)
            verify_consistency(m, n, rfc.mth(0, m), root, proof)


def test_empty_tree() -> None:
    assert tree_hash(0, UniformReader(0)) == EMPTY_ROOT
    assert consistency_proof(0, 0, UniformReader(0)) == []
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ConsistencyProofError, match="empty tree"):
        verify_consistency(0, 0, EMPTY_ROOT, b"\x00" * 32, [])
    with pytest.raises(ConsistencyProofError, match="meaningless"):
        verify_consistency(0, 1, EMPTY_ROOT, UniformReader.LEVELS[0], [])
    with pytest.raises(InclusionProofError, match="not in a tree of size 0"):
        verify_inclusion(EMPTY_ROOT, 0, 0, [], EMPTY_ROOT)


# -- caller misuse is ValueError -----------------------------------------------------


def test_generation_misuse_is_value_error() -> None:
    r = UniformReader(10)
    with pytest.raises(ValueError, match="tree_size must be non-negative, got -1"):
        tree_hash(-1, r)
    with pytest.raises(ValueError, match=r"leaf_index must be in \[0, 10\), got 10"):
        inclusion_proof(10, 10, r)
    with pytest.raises(ValueError, match=r"leaf_index must be in \[0, 10\), got -1"):
        inclusion_proof(-1, 10, r)
    with pytest.raises(ValueError, match="old_size 11 is larger than new_size 10"):
        consistency_proof(11, 10, r)
    with pytest.raises(ValueError, match="expected old_size >= 1"):
        consistency_proof(0, 10, r)
    with pytest.raises(ValueError, match="old_size must be non-negative"):
        consistency_proof(-1, 10, r)
    with pytest.raises(ValueError, match="tree_size must be non-negative"):
        verify_inclusion(EMPTY_ROOT, 0, -1, [], EMPTY_ROOT)
    with pytest.raises(ValueError, match="new_size must be non-negative"):
        verify_consistency(0, -1, EMPTY_ROOT, EMPTY_ROOT, [])
    # ...but these are not FirmlogErrors: remote data never causes them.
    with pytest.raises(ValueError, match="leaf_index") as exc:
        inclusion_proof(10, 10, r)
    assert not isinstance(exc.value, FirmlogError)


def test_reader_returning_garbage_is_merkle_format_error() -> None:
    class Short:
        def read_hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
            return [b"\x00" * 31 for _ in coords]

    class Fewer:
        def read_hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
            return [b"\x00" * 32 for _ in coords[1:]]

    with pytest.raises(MerkleFormatError, match="expected 32 bytes, got 31"):
        inclusion_proof(0, 5, Short())
    with pytest.raises(MerkleFormatError, match="returned 2 hashes for 3 subtrees"):
        inclusion_proof(0, 5, Fewer())


# -- error messages say what was expected and what was found ------------------------


def test_inclusion_error_messages() -> None:
    leaves = leaf_hashes(21)
    tree = LevelsReader(leaves)
    root = tree_hash(21, tree.at(21))
    proof = inclusion_proof(3, 21, tree.at(21))
    assert len(proof) == 5
    with pytest.raises(
        InclusionProofError,
        match="inclusion proof has wrong length: expected 5 hashes for index 3 "
        "in a tree of 21, got 4",
    ):
        verify_inclusion(leaves[3], 3, 21, proof[:4], root)
    with pytest.raises(InclusionProofError, match=f"expected {root.hex()}"):
        verify_inclusion(leaves[4], 3, 21, proof, root)
    with pytest.raises(
        MerkleFormatError, match="inclusion proof hash 2 has wrong length: expected 32 bytes, got 3"
    ):
        verify_inclusion(leaves[3], 3, 21, [*proof[:2], b"abc", *proof[3:]], root)
    with pytest.raises(MerkleFormatError, match="leaf hash has wrong length"):
        verify_inclusion(leaves[3][:16], 3, 21, proof, root)
    with pytest.raises(MerkleFormatError, match="root hash has wrong length"):
        verify_inclusion(leaves[3], 3, 21, proof, root + b"\x00")
    with pytest.raises(InclusionProofError, match="leaf index 21 is not in a tree of size 21"):
        verify_inclusion(leaves[3], 21, 21, proof, root)


def test_consistency_error_messages() -> None:
    tree = LevelsReader(leaf_hashes(21))
    old, new = tree_hash(6, tree.at(6)), tree_hash(21, tree.at(21))
    proof = consistency_proof(6, 21, tree.at(21))
    assert len(proof) == consistency_proof_size(6, 21) == 5
    with pytest.raises(
        ConsistencyProofError,
        match="consistency proof has wrong length: expected 5 hashes from size 6 to size 21, got 6",
    ):
        verify_consistency(6, 21, old, new, [*proof, proof[0]])
    with pytest.raises(ConsistencyProofError, match=f"old root .*, expected {new.hex()}"):
        verify_consistency(6, 21, new, new, proof)
    with pytest.raises(ConsistencyProofError, match=f"new root .*, expected {old.hex()}"):
        verify_consistency(6, 21, old, old, proof)
    with pytest.raises(ConsistencyProofError, match="old tree size 22 is larger than new tree"):
        verify_consistency(22, 21, old, new, proof)
    with pytest.raises(ConsistencyProofError, match="must be empty, got 5 hashes"):
        verify_consistency(21, 21, new, new, proof)
    with pytest.raises(ConsistencyProofError, match="trees of equal size 21 have different"):
        verify_consistency(21, 21, old, new, [])
    with pytest.raises(MerkleFormatError, match="old root hash has wrong length"):
        verify_consistency(6, 21, old[:31], new, proof)
    with pytest.raises(MerkleFormatError, match="consistency proof hash 1 has wrong length"):
        verify_consistency(6, 21, old, new, [proof[0], b"", *proof[2:]])


# -- O(log n) reads, at any size ------------------------------------------------------


@pytest.mark.parametrize("n", [10**6, 10**6 + 1, 2**20, 2**40 + 12345, 2**62 + 2**31 - 1])
def test_proofs_make_one_read_of_o_log_n_subtrees(n: int) -> None:
    bound = 2 * n.bit_length() + 1
    r = UniformReader(n)
    root = tree_hash(n, r)
    assert r.calls == 1
    assert len(r.coords) == n.bit_count()
    for i in (0, 1, n // 3, n // 2, n - 2, n - 1):
        r = UniformReader(n)
        proof = inclusion_proof(i, n, r)
        assert r.calls == 1
        assert len(r.coords) <= bound
        verify_inclusion(UniformReader.LEVELS[0], i, n, proof, root)
    for m in (1, 2, 3, n // 3, n // 2 + 1, n - 1, n):
        r = UniformReader(n)
        proof = consistency_proof(m, n, r)
        assert r.calls == (1 if m < n else 0)
        assert len(r.coords) <= bound
        verify_consistency(m, n, tree_hash(m, UniformReader(m)), root, proof)


@PROPERTY
@given(n=st.integers(1, 2**64 - 1), data=st.data())
def test_uniform_trees_of_any_size(n: int, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, n - 1), label="index")
    m = data.draw(st.integers(1, n), label="old size")
    root = tree_hash(n, UniformReader(n))
    r = UniformReader(n)
    verify_inclusion(UniformReader.LEVELS[0], i, n, inclusion_proof(i, n, r), root)
    proof = consistency_proof(m, n, r)
    assert r.calls <= 2
    assert len(r.coords) <= 4 * n.bit_length() + 1
    verify_consistency(m, n, tree_hash(m, UniformReader(m)), root, proof)


# -- proof plans: which subtrees a proof reads, said beforehand -------------------------


def test_plans_by_hand() -> None:
    # Tree of 7: PATH(4) = [leaf 5, leaf 6, MTH(0..4)]; the right edge above leaf 4's
    # pair is the single leaf 6.
    assert inclusion_proof_plan(4, 7) == ProofPlan(((0, 5), (0, 6), (2, 0)), (1, 1, 1))
    # Tree of 6, leaf 0: siblings leaf 1, MTH(2..4), then the right edge MTH(4..6).
    assert inclusion_proof_plan(0, 6) == ProofPlan(((0, 1), (1, 1), (1, 2)), (1, 1, 1))
    # Tree of 7, leaf 0: the right edge from 4 is MTH(4..6) and leaf 6, folded.
    assert inclusion_proof_plan(0, 7) == ProofPlan(((0, 1), (1, 1), (1, 2), (0, 6)), (1, 1, 2))
    # PROOF(3, D[7]), RFC 9162 2.1.5's example: leaf 2, leaf 3, MTH(0..2), MTH(4..7).
    assert consistency_proof_plan(3, 7) == ProofPlan(
        ((0, 2), (0, 3), (1, 0), (1, 2), (0, 6)), (1, 1, 1, 2)
    )
    assert consistency_proof_plan(4, 4) == ProofPlan((), ())
    assert inclusion_proof_plan(0, 1) == ProofPlan((), ())


def test_plan_misuse_is_the_provers_value_error() -> None:
    with pytest.raises(ValueError, match=r"leaf_index must be in \[0, 10\), got 10"):
        inclusion_proof_plan(10, 10)
    with pytest.raises(ValueError, match="tree_size must be non-negative, got -1"):
        inclusion_proof_plan(0, -1)
    with pytest.raises(ValueError, match="old_size 11 is larger than new_size 10"):
        consistency_proof_plan(11, 10)
    with pytest.raises(ValueError, match="expected old_size >= 1"):
        consistency_proof_plan(0, 10)


def test_plan_rejects_wrong_hashes() -> None:
    plan = inclusion_proof_plan(0, 7)
    with pytest.raises(MerkleFormatError, match="returned 3 hashes for 4 subtrees"):
        plan.proof([bytes(32)] * 3)
    with pytest.raises(MerkleFormatError, match=r"subtree \(1, 2\) has wrong length"):
        plan.proof([bytes(32), bytes(32), bytes(31), bytes(32)])


def test_an_empty_plan_reads_nothing() -> None:
    r = UniformReader(8)
    assert consistency_proof_plan(8, 8).run(r) == [] == inclusion_proof_plan(0, 1).run(r)
    assert r.calls == 0


@PROPERTY
@given(n=st.integers(1, 2**64 - 1), data=st.data())
def test_plans_name_exactly_what_proofs_read_at_any_size(n: int, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, n - 1), label="index")
    m = data.draw(st.integers(1, n), label="old size")
    r = UniformReader(n)
    proof = inclusion_proof(i, n, r)
    plan = inclusion_proof_plan(i, n)
    assert list(plan.nodes) == r.coords
    assert sum(plan.folds) == len(plan.nodes)
    assert len(plan.folds) == len(proof)
    assert plan.run(UniformReader(n)) == proof
    r = UniformReader(n)
    proof = consistency_proof(m, n, r)
    plan = consistency_proof_plan(m, n)
    assert list(plan.nodes) == r.coords
    assert len(plan.folds) == len(proof) == consistency_proof_size(m, n)
    assert plan.run(UniformReader(n)) == proof


@PROPERTY
@given(n=st.integers(1, MAX_N), data=st.data())
def test_plans_compute_the_proofs_from_their_nodes(n: int, data: st.DataObject) -> None:
    leaves, tree = big_tree()
    i = data.draw(st.integers(0, n - 1), label="index")
    m = data.draw(st.integers(1, n), label="old size")
    for plan, view, prove in (
        (inclusion_proof_plan(i, n), tree.at(n), lambda r: inclusion_proof(i, n, r)),
        (consistency_proof_plan(m, n), tree.at(n), lambda r: consistency_proof(m, n, r)),
    ):
        proof = prove(view)
        assert list(plan.nodes) == view.coords  # exactly what the prover read, in order
        assert view.calls == (1 if plan.nodes else 0)
        # a complete subtree has one hash in every tree holding it: any larger tree serves
        hashes = tree.at(MAX_N).read_hashes(plan.nodes)
        assert plan.proof(hashes) == proof
    verify_inclusion(leaves[i], i, n, inclusion_proof_plan(i, n).run(tree.at(n)), big_root(n))


# -- properties on trees of up to 10**5 leaves -------------------------------------------

sizes = st.one_of(
    st.integers(1, MAX_N),
    st.integers(0, 16).map(lambda e: 1 << e),
    st.tuples(st.integers(1, 16), st.integers(-2, 2)).map(
        lambda t: max(1, min(MAX_N, (1 << t[0]) + t[1]))
    ),
)


def flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def inclusion_shape(i: int, n: int) -> tuple[int, ...]:
    """How the verifier combines each proof hash: 0 = hash on the right, 1 = on the left."""
    inner = (i ^ (n - 1)).bit_length()
    return tuple((i >> lv) & 1 for lv in range(inner)) + (1,) * (i >> inner).bit_count()


def consistency_shape(m: int, n: int) -> tuple[Any, ...]:
    shift = (m & -m).bit_length() - 1
    last = m - 1
    inner = (last ^ (n - 1)).bit_length()
    ops = tuple((last >> lv) & 1 for lv in range(shift, inner))
    return (m != 1 << shift, ops, (last >> inner).bit_count())


@PROPERTY
@given(n=sizes, data=st.data())
def test_inclusion_proofs_verify_and_mutations_fail(n: int, data: st.DataObject) -> None:
    leaves, tree = big_tree()
    i = data.draw(st.integers(0, n - 1), label="index")
    root = big_root(n)
    view = tree.at(n)
    proof = inclusion_proof(i, n, view)
    assert view.calls == (1 if n > 1 else 0)
    assert len(view.coords) <= 2 * n.bit_length()
    verify_inclusion(leaves[i], i, n, proof, root)

    def fails(lh: bytes, idx: int, size: int, p: Sequence[bytes], r: bytes) -> None:
        with pytest.raises(ProofError):
            verify_inclusion(lh, idx, size, p, r)

    bits = data.draw(st.lists(st.integers(0, 255), min_size=len(proof), max_size=len(proof)))
    for j, bit in enumerate(bits):  # a flipped bit in any proof hash
        fails(leaves[i], i, n, [*proof[:j], flip(proof[j], bit), *proof[j + 1 :]], root)
    fails(flip(leaves[i], bits[0] if bits else 7), i, n, proof, root)  # wrong leaf
    fails(leaves[i], i, n, proof, flip(root, 100))  # wrong root
    extra = data.draw(st.sampled_from([root, leaves[i], EMPTY_ROOT, b"\x00" * 32]))
    pos = data.draw(st.integers(0, len(proof)), label="insert at")
    fails(leaves[i], i, n, [*proof[:pos], extra, *proof[pos:]], root)  # appended hash
    if proof:
        pos = data.draw(st.integers(0, len(proof) - 1), label="drop at")
        fails(leaves[i], i, n, proof[:pos] + proof[pos + 1 :], root)  # dropped hash
    if n > 1:  # wrong index (a leaf's path through the tree is unique)
        j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i), label="other index")
        fails(leaves[i], j, n, proof, root)
    fails(leaves[i], n + i, n, proof, root)
    # Wrong size: against the true root of that size it always fails. With the
    # original root it fails exactly when the size changes how the proof is
    # combined: an inclusion proof does not bind the tree size (the signed
    # checkpoint does), e.g. index 0 has the same path in trees of 3 and 4.
    other = data.draw(st.integers(i + 1, MAX_N).filter(lambda s: s != n), label="other size")
    fails(leaves[i], i, other, proof, big_root(other))
    if inclusion_shape(i, other) == inclusion_shape(i, n):
        verify_inclusion(leaves[i], i, other, proof, root)
    else:
        fails(leaves[i], i, other, proof, root)


@PROPERTY
@given(n=sizes, data=st.data())
def test_consistency_proofs_verify_and_mutations_fail(n: int, data: st.DataObject) -> None:
    _, tree = big_tree()
    m = data.draw(st.integers(1, n), label="old size")
    old_root, new_root = big_root(m), big_root(n)
    view = tree.at(n)
    proof = consistency_proof(m, n, view)
    assert view.calls == (1 if m < n else 0)
    assert len(view.coords) <= 2 * n.bit_length() + 1
    verify_consistency(m, n, old_root, new_root, proof)

    def fails(a: int, b: int, ra: bytes, rb: bytes, p: Sequence[bytes]) -> None:
        with pytest.raises(ProofError):
            verify_consistency(a, b, ra, rb, p)

    bits = data.draw(st.lists(st.integers(0, 255), min_size=len(proof), max_size=len(proof)))
    for j, bit in enumerate(bits):
        fails(m, n, old_root, new_root, [*proof[:j], flip(proof[j], bit), *proof[j + 1 :]])
    extra = data.draw(st.sampled_from([old_root, new_root, EMPTY_ROOT, b"\x00" * 32]))
    pos = data.draw(st.integers(0, len(proof)), label="insert at")
    fails(m, n, old_root, new_root, [*proof[:pos], extra, *proof[pos:]])
    if proof:
        pos = data.draw(st.integers(0, len(proof) - 1), label="drop at")
        fails(m, n, old_root, new_root, proof[:pos] + proof[pos + 1 :])
    fails(m, n, flip(old_root, 0), new_root, proof)
    fails(m, n, old_root, flip(new_root, 255), proof)
    if m < n:
        fails(m, n, new_root, old_root, proof)  # swapped roots
    # Wrong sizes: see the inclusion test; the same holds here.
    m2 = data.draw(st.integers(1, n).filter(lambda s: s != m), label="other old size")
    n2 = data.draw(st.integers(m, MAX_N).filter(lambda s: s != n), label="other new size")
    for a, b in ((m2, n), (m, n2)):
        assume(a <= b)
        fails(a, b, big_root(a), big_root(b), proof)
        if a < b and m < n and consistency_shape(a, b) == consistency_shape(m, n):
            verify_consistency(a, b, old_root, new_root, proof)
        else:
            fails(a, b, old_root, new_root, proof)


def test_size_does_not_bind_examples() -> None:
    """The documented limit of the wrong-size mutation, on concrete cases."""
    leaves = leaf_hashes(4)
    tree = LevelsReader(leaves)
    r3 = tree_hash(3, tree.at(3))
    verify_inclusion(leaves[0], 0, 4, inclusion_proof(0, 3, tree.at(3)), r3)
    verify_consistency(2, 4, tree_hash(2, tree.at(2)), r3, consistency_proof(2, 3, tree.at(3)))


# -- CompactRange -----------------------------------------------------------------------


def test_compact_range_root_at_every_size() -> None:
    leaves, tree = big_tree()
    cr = CompactRange()
    assert cr.root() == EMPTY_ROOT
    assert cr.hashes == ()
    for n in range(1, 1100):
        completed = cr.append(leaves[n - 1])
        assert cr.tree_size == n
        assert len(cr.hashes) == n.bit_count()
        assert cr.root() == root_hash(leaves[:n])
        # Every complete subtree the leaf completes, the leaf first, each once.
        assert completed[0] == (0, n - 1, leaves[n - 1])
        assert [(lv, i) for lv, i, _ in completed] == [
            (lv, (n - 1) >> lv) for lv in range(len(completed))
        ]
        assert len(completed) == ((n - 1) ^ n).bit_count()  # 1 + trailing ones of n-1
        for lv, i, h in completed:
            assert tree.levels[lv][i] == h
        assert CompactRange.from_bytes(n, cr.to_bytes()) == cr


@PROPERTY
@given(n=st.integers(0, MAX_N - 1), extra=st.integers(0, 300))
def test_compact_range_resumes_from_bytes(n: int, extra: int) -> None:
    leaves, tree = big_tree()
    extra = min(extra, MAX_N - n)
    # The right edge of size n is the complete subtrees of its decomposition.
    edge = []
    start = 0
    for lv in reversed(range(n.bit_length())):
        if (n >> lv) & 1:
            edge.append(tree.levels[lv][start >> lv])
            start += 1 << lv
    cr = CompactRange(n, edge)
    assert cr.root() == big_root(n) if n else EMPTY_ROOT
    restored = CompactRange.from_bytes(n, cr.to_bytes())
    assert restored == cr
    assert restored.hashes == tuple(edge)
    copy = restored.copy()
    for h in leaves[n : n + extra]:
        restored.append(h)
    assert restored.root() == (big_root(n + extra) if n + extra else EMPTY_ROOT)
    assert copy == cr  # the copy did not move


def test_compact_range_errors() -> None:
    with pytest.raises(
        MerkleFormatError,
        match=r"compact range of tree size 5 must be 64 bytes \(2 hashes\), got 96",
    ):
        CompactRange.from_bytes(5, b"\x00" * 96)
    with pytest.raises(MerkleFormatError, match="tree size 0 must be 0 bytes"):
        CompactRange.from_bytes(0, b"\x00")
    with pytest.raises(MerkleFormatError, match=r"needs 3 hashes .*, got 1"):
        CompactRange(7, [b"\x00" * 32])
    with pytest.raises(MerkleFormatError, match="hash 1 has wrong length"):
        CompactRange(3, [b"\x00" * 32, b"\x00" * 33])
    with pytest.raises(ValueError, match="tree_size must be non-negative"):
        CompactRange.from_bytes(-1, b"")
    with pytest.raises(MerkleFormatError, match="leaf hash has wrong length"):
        CompactRange().append(b"short")
    assert CompactRange.from_bytes(0, b"") == CompactRange()


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 2**70), data=st.binary(max_size=400))
def test_compact_range_from_bytes_fuzz(n: int, data: bytes) -> None:
    try:
        cr = CompactRange.from_bytes(n, data)
    except FirmlogError:
        assert len(data) != 32 * n.bit_count()
        return
    assert cr.to_bytes() == data
    assert len(cr.root()) == HASH_SIZE


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(0, 2**64),
    i=st.integers(0, 2**64),
    proof=st.lists(st.binary(min_size=30, max_size=33), max_size=70),
    lh=st.binary(min_size=31, max_size=33),
    root=st.binary(min_size=31, max_size=33),
)
def test_verify_fuzz_raises_only_our_errors(
    n: int, i: int, proof: list[bytes], lh: bytes, root: bytes
) -> None:
    with contextlib.suppress(ProofError, MerkleFormatError):
        verify_inclusion(lh, i, n, proof, root)
    with contextlib.suppress(ProofError, MerkleFormatError):
        verify_consistency(i, n, lh, root, proof)


def test_old_root_from_consistency_is_the_larger_trees_root_at_the_old_size() -> None:
    """What a witness keeps as evidence when a log proves a new tree from another old root."""
    ours = leaf_hashes(12)
    theirs = ours[:5] + [hashlib.sha256(b"other %d" % i).digest() for i in range(5, 12)]
    reader = LevelsReader(theirs)
    for m, n in [(3, 4), (5, 6), (5, 12), (6, 9), (7, 8), (11, 12)]:
        proof = consistency_proof(m, n, reader.at(n))
        new_root = tree_hash(n, reader.at(n))
        root = old_root_from_consistency(m, n, new_root, proof)
        assert root == root_hash(theirs[:m])
        verify_consistency(m, n, root, new_root, proof)
        if m > 5:  # the trees differ at size m: the proof contradicts our root there
            assert root != root_hash(ours[:m])
        if n <= 5:
            continue
        with pytest.raises(ConsistencyProofError, match="leads to new root"):
            old_root_from_consistency(m, n, root_hash(ours[:n]), proof)
    for m, n in [(4, 6), (1, 3), (8, 12)]:  # powers of 2: the proof does not carry the root
        proof = consistency_proof(m, n, reader.at(n))
        with pytest.raises(ConsistencyProofError, match="power of 2"):
            old_root_from_consistency(m, n, tree_hash(n, reader.at(n)), proof)
    for m, n in [(0, 3), (5, 5), (6, 5)]:
        with pytest.raises(ConsistencyProofError, match="no old root"):
            old_root_from_consistency(m, n, EMPTY_ROOT, [])
