"""RFC 9162 section 2.1 Merkle trees (RFC 6962 hashing): hashes, roots, proofs.

Proofs are *generated* over a :class:`HashReader`, a source of hashes of
complete subtrees, so the server can prove from stored tiles and a client from
fetched tiles, without loading the tree. A proof also says beforehand which
subtrees it reads (:class:`ProofPlan`, from :func:`inclusion_proof_plan` and
:func:`consistency_proof_plan`), so that a caller whose hashes sit behind I/O
fetches them all at once and then computes, with no I/O in here. Proofs are *verified* with the
functions ``verify_inclusion`` and ``verify_consistency``, which return None
or raise :class:`~firmlog.client.errors.ProofError`.

A complete subtree is addressed as ``(level, index)``: the subtree of
``2**level`` leaves starting at leaf ``index * 2**level``.

How proofs are laid out (RFC 9162 2.1.3 and 2.1.4, read bottom-up): the path
from leaf ``i`` to the root of a tree of ``n`` leaves climbs through complete
subtrees until it meets the path of the last leaf ``n - 1``, at level
``inner = bit_length(i ^ (n - 1))``. Below level ``inner - 1`` every
sibling is a complete subtree; at level ``inner - 1`` the sibling is the
(possibly incomplete) right edge of the tree, whose hash is folded from the complete
subtrees that make it up; above it only left siblings remain, one per set bit
of ``i >> inner``. A consistency proof from ``m`` to ``n`` is the same path for
leaf ``m - 1``, started at the largest complete subtree that ends at ``m``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256 as _sha256
from typing import Protocol

from firmlog.client.errors import (
    ConsistencyProofError,
    InclusionProofError,
    MerkleFormatError,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "HashReader",
    "ProofPlan",
    "consistency_proof",
    "consistency_proof_plan",
    "consistency_proof_size",
    "inclusion_proof",
    "inclusion_proof_plan",
    "inclusion_proof_size",
    "leaf_hash",
    "node_hash",
    "old_root_from_consistency",
    "root_hash",
    "tree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT: bytes = _sha256(b"").digest()  # SHA-256(b"")

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

Coord = tuple[int, int]


class HashReader(Protocol):
    """A source of complete-subtree hashes."""

    def read_hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        """Return the hash of each complete subtree ``(level, index)``, in order.

        Raises :class:`KeyError` or :class:`~firmlog.client.errors.FirmlogError`
        when a hash is not available.
        """
        ...


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 || entry)."""
    return _sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def _fold_right_edge(hashes: Sequence[bytes]) -> bytes:
    """Root of consecutive complete subtrees given largest (leftmost) first.

    The RFC 9162 tree over a range that decomposes into complete subtrees of
    strictly decreasing sizes is their fold from the right.
    """
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = _sha256(_NODE_PREFIX + left + h).digest()
    return h


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """Root of the tree whose leaves have these hashes (EMPTY_ROOT for none).

    O(n) hashing and O(log n) memory.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    sha = _sha256
    prefix = _NODE_PREFIX
    stack: list[bytes] = []
    for index, leaf in enumerate(leaf_hashes):
        h = leaf
        n = index
        while n & 1:  # each trailing 1 bit of the size so far merges one subtree
            h = sha(prefix + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
    return _fold_right_edge(stack)


# -- proof layout -------------------------------------------------------------


def _range_coords(start: int, end: int) -> list[Coord]:
    """The complete subtrees covering leaves ``[start, end)``, largest first.

    ``start`` must be a multiple of the largest of them (true for every range
    this module asks for: a right edge that starts at an aligned subtree).
    """
    coords: list[Coord] = []
    size = end - start
    level = size.bit_length() - 1
    while level >= 0:
        if (size >> level) & 1:
            coords.append((level, start >> level))
            start += 1 << level
        level -= 1
    return coords


def _path(index: int, base: int, size: int, nodes: list[Coord], folds: list[int]) -> None:
    """Append the proof nodes for the path from level ``base`` above leaf ``index``.

    Each proof hash is the fold of a group of consecutive complete subtrees
    (a single subtree unless it is the incomplete right edge): the subtrees
    go to ``nodes``, the size of each group to ``folds``. Requires
    ``0 <= index < size`` and, when ``base > 0``, that the subtree
    ``(base, index >> base)`` is complete and not the whole tree.
    """
    inner = (index ^ (size - 1)).bit_length()
    if inner - 1 > base:
        nodes += [(level, (index >> level) ^ 1) for level in range(base, inner - 1)]
        folds += [1] * (inner - 1 - base)
    if inner > base:
        # The node on the path at level inner-1 is a left child (its bit is 0);
        # its sibling is the right edge of the tree from there to `size`.
        level = inner - 1
        edge = _range_coords(((index >> level) | 1) << level, size)
        nodes += edge
        folds.append(len(edge))
    for level in range(inner, index.bit_length()):
        if (index >> level) & 1:
            nodes.append((level, (index >> level) - 1))
            folds.append(1)


def _resolve(nodes: list[Coord], folds: list[int], reader: HashReader) -> list[bytes]:
    """Read every node in one call and fold them into the proof hashes."""
    if not nodes:
        return []
    return _fold(nodes, folds, reader.read_hashes(nodes))


def _fold(nodes: Sequence[Coord], folds: Sequence[int], hashes: Sequence[bytes]) -> list[bytes]:
    """Fold ``hashes`` (of ``nodes``, in order) into one proof hash per group of ``folds``."""
    if len(hashes) != len(nodes):
        raise MerkleFormatError(
            f"hash reader returned {len(hashes)} hashes for {len(nodes)} subtrees"
        )
    if hashes and set(map(len, hashes)) != {HASH_SIZE}:
        for (level, index), h in zip(nodes, hashes, strict=True):
            if len(h) != HASH_SIZE:
                raise MerkleFormatError(
                    f"hash of subtree ({level}, {index}) has wrong length: "
                    f"expected {HASH_SIZE} bytes, got {len(h)}"
                )
    out: list[bytes] = []
    pos = 0
    for n in folds:
        out.append(hashes[pos] if n == 1 else _fold_right_edge(hashes[pos : pos + n]))
        pos += n
    return out


@dataclass(frozen=True, slots=True)
class ProofPlan:
    """The complete subtrees a proof reads, and how it folds them into its hashes.

    ``nodes`` are ``(level, index)`` coordinates, in the order the proof asks a
    :class:`HashReader` for them; ``folds[k]`` says how many consecutive nodes
    make proof hash ``k`` (one, or several for the incomplete right edge of
    the tree, whose hash is their fold). A complete subtree has the same hash
    in every tree that contains it, so the nodes may be read from the tiles
    of any tree at least as large as the one proven.
    """

    nodes: tuple[Coord, ...]
    folds: tuple[int, ...]

    def proof(self, hashes: Sequence[bytes]) -> list[bytes]:
        """The proof, from the hashes of :attr:`nodes` (in order).

        Raises MerkleFormatError for a wrong count or a hash of the wrong length.
        """
        return _fold(self.nodes, self.folds, hashes)

    def run(self, reader: HashReader) -> list[bytes]:
        """The proof, reading :attr:`nodes` from ``reader`` in one call."""
        return self.proof(reader.read_hashes(self.nodes) if self.nodes else [])


def _check_size(name: str, value: int) -> None:
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")


def _inclusion_layout(leaf_index: int, tree_size: int) -> tuple[list[Coord], list[int]]:
    _check_size("tree_size", tree_size)
    if not 0 <= leaf_index < tree_size:
        raise ValueError(f"leaf_index must be in [0, {tree_size}), got {leaf_index}")
    nodes: list[Coord] = []
    folds: list[int] = []
    _path(leaf_index, 0, tree_size, nodes, folds)
    return nodes, folds


def _consistency_layout(old_size: int, new_size: int) -> tuple[list[Coord], list[int]]:
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    if old_size > new_size:
        raise ValueError(f"old_size {old_size} is larger than new_size {new_size}")
    nodes: list[Coord] = []
    folds: list[int] = []
    if old_size == new_size:
        return nodes, folds
    if old_size == 0:
        raise ValueError(
            f"no consistency proof from the empty tree to size {new_size}: "
            "it would prove nothing; expected old_size >= 1"
        )
    # The largest complete subtree ending at old_size: level = trailing zeros.
    shift = (old_size & -old_size).bit_length() - 1
    last = old_size - 1
    if old_size != 1 << shift:
        # Unless it is the whole old tree (whose root the verifier has),
        # the proof starts with that subtree's hash.
        nodes.append((shift, last >> shift))
        folds.append(1)
    _path(last, shift, new_size, nodes, folds)
    return nodes, folds


def inclusion_proof(leaf_index: int, tree_size: int, reader: HashReader) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(leaf_index, D[tree_size]), bottom-up, via O(log n) reads.

    Raises ValueError unless ``0 <= leaf_index < tree_size``.
    """
    return _resolve(*_inclusion_layout(leaf_index, tree_size), reader)


def inclusion_proof_plan(leaf_index: int, tree_size: int) -> ProofPlan:
    """What :func:`inclusion_proof` reads and folds, without reading it.

    ``inclusion_proof_plan(i, n).run(reader) == inclusion_proof(i, n, reader)``.
    """
    nodes, folds = _inclusion_layout(leaf_index, tree_size)
    return ProofPlan(tuple(nodes), tuple(folds))


def consistency_proof(old_size: int, new_size: int, reader: HashReader) -> list[bytes]:
    """RFC 9162 2.1.4.1 PROOF(old_size, D[new_size]), via O(log n) reads.

    Equal sizes give the empty proof. A proof from the empty tree to a larger
    one is meaningless (every tree extends the empty tree; there is nothing to
    prove) and :func:`verify_consistency` rejects it, so asking for one is a
    ValueError, as is ``old_size > new_size``.
    """
    return _resolve(*_consistency_layout(old_size, new_size), reader)


def consistency_proof_plan(old_size: int, new_size: int) -> ProofPlan:
    """What :func:`consistency_proof` reads and folds, without reading it.

    ``consistency_proof_plan(m, n).run(reader) == consistency_proof(m, n, reader)``.
    """
    nodes, folds = _consistency_layout(old_size, new_size)
    return ProofPlan(tuple(nodes), tuple(folds))


def tree_hash(tree_size: int, reader: HashReader) -> bytes:
    """Root hash of the first ``tree_size`` leaves, from O(log n) complete subtrees."""
    _check_size("tree_size", tree_size)
    if tree_size == 0:
        return EMPTY_ROOT
    nodes = _range_coords(0, tree_size)
    return _resolve(nodes, [len(nodes)], reader)[0]


# -- verification ---------------------------------------------------------------


def _check_hash(what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise MerkleFormatError(
            f"{what} has wrong length: expected {HASH_SIZE} bytes, got {len(value)}"
        )


def _check_proof_hashes(kind: str, proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise MerkleFormatError(
                f"{kind} proof hash {i} has wrong length: expected {HASH_SIZE} bytes, got {len(h)}"
            )


def inclusion_proof_size(leaf_index: int, tree_size: int) -> int:
    """Number of hashes in the inclusion proof of ``leaf_index`` in a tree of ``tree_size``."""
    _check_size("tree_size", tree_size)
    if not 0 <= leaf_index < tree_size:
        raise ValueError(f"leaf_index must be in [0, {tree_size}), got {leaf_index}")
    inner = (leaf_index ^ (tree_size - 1)).bit_length()
    return inner + (leaf_index >> inner).bit_count()


def verify_inclusion(
    leaf_hash: bytes, leaf_index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 2.1.3.2. Raise InclusionProofError (or MerkleFormatError) on failure.

    An index outside the tree fails verification; negative numbers are caller
    misuse (ValueError).
    """
    _check_size("leaf_index", leaf_index)
    _check_size("tree_size", tree_size)
    if leaf_index >= tree_size:
        raise InclusionProofError(
            f"leaf index {leaf_index} is not in a tree of size {tree_size}: "
            f"expected an index below {tree_size}"
        )
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root hash", root)
    inner = (leaf_index ^ (tree_size - 1)).bit_length()
    want = inner + (leaf_index >> inner).bit_count()
    if len(proof) != want:
        raise InclusionProofError(
            f"inclusion proof has wrong length: expected {want} hashes "
            f"for index {leaf_index} in a tree of {tree_size}, got {len(proof)}"
        )
    if want and set(map(len, proof)) != {HASH_SIZE}:
        _check_proof_hashes("inclusion", proof)

    sha = _sha256
    prefix = _NODE_PREFIX
    h = leaf_hash
    # Below level `inner` the sibling is on the right where the index has a 0
    # bit; from there up every sibling is on the left.
    right = ~leaf_index & ((1 << inner) - 1)
    for sibling in proof:
        h = sha(prefix + h + sibling if right & 1 else prefix + sibling + h).digest()
        right >>= 1
    if h != root:
        raise InclusionProofError(
            f"inclusion proof for index {leaf_index} in a tree of {tree_size} "
            f"leads to root {h.hex()}, expected {bytes(root).hex()}"
        )


def consistency_proof_size(old_size: int, new_size: int) -> int:
    """Number of hashes in the consistency proof from ``old_size`` to ``new_size``."""
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    if old_size > new_size:
        raise ValueError(f"old_size {old_size} is larger than new_size {new_size}")
    if old_size in (0, new_size):
        return 0
    shift = (old_size & -old_size).bit_length() - 1
    last = old_size - 1
    inner = (last ^ (new_size - 1)).bit_length()
    seed = 0 if old_size == 1 << shift else 1
    return seed + (inner - shift) + (last >> inner).bit_count()


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2. Raise ConsistencyProofError (or MerkleFormatError) on failure.

    Edge cases, as the transparency-dev/merkle test vectors expect:

    - equal sizes need an empty proof and equal roots (for size 0 both must
      be SHA-256(""));
    - a proof from the empty tree to a larger one is rejected: it would prove
      nothing, so a caller that trusts only an empty tree has nothing to check;
    - ``old_size > new_size`` is rejected.

    Negative sizes are caller misuse (ValueError).
    """
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    if old_size > new_size:
        raise ConsistencyProofError(
            f"old tree size {old_size} is larger than new tree size {new_size}"
        )
    if old_size == new_size:
        if proof:
            raise ConsistencyProofError(
                f"consistency proof between equal tree sizes ({old_size}) must be empty, "
                f"got {len(proof)} hashes"
            )
        if old_size == 0:
            if old_root != EMPTY_ROOT or new_root != EMPTY_ROOT:
                raise ConsistencyProofError(
                    f"roots of the empty tree must both be {EMPTY_ROOT.hex()}, "
                    f"got {bytes(old_root).hex()} and {bytes(new_root).hex()}"
                )
            return
        if old_root != new_root:
            raise ConsistencyProofError(
                f"trees of equal size {old_size} have different roots: "
                f"{bytes(old_root).hex()} and {bytes(new_root).hex()}"
            )
        return
    if old_size == 0:
        raise ConsistencyProofError(
            f"consistency proof from the empty tree to size {new_size} is meaningless: "
            "expected old_size >= 1"
        )
    _check_hash("old root hash", old_root)
    _check_hash("new root hash", new_root)
    h_old, h_new = _consistency_roots(old_size, new_size, old_root, proof)
    if h_old != old_root:
        raise ConsistencyProofError(
            f"consistency proof from size {old_size} to size {new_size} leads to "
            f"old root {h_old.hex()}, expected {bytes(old_root).hex()}"
        )
    if h_new != new_root:
        raise ConsistencyProofError(
            f"consistency proof from size {old_size} to size {new_size} leads to "
            f"new root {h_new.hex()}, expected {bytes(new_root).hex()}"
        )


def _consistency_roots(
    old_size: int, new_size: int, old_root: bytes, proof: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """The old and new roots a consistency proof leads to (RFC 9162 2.1.4.2), for
    ``0 < old_size < new_size``; ``old_root`` seeds it when ``old_size`` is a power of 2."""
    shift = (old_size & -old_size).bit_length() - 1
    last = old_size - 1
    inner_full = (last ^ (new_size - 1)).bit_length()
    inner = inner_full - shift  # >= 1 because old_size < new_size
    seeded = old_size != 1 << shift
    want = int(seeded) + inner + (last >> inner_full).bit_count()
    if len(proof) != want:
        raise ConsistencyProofError(
            f"consistency proof has wrong length: expected {want} hashes "
            f"from size {old_size} to size {new_size}, got {len(proof)}"
        )
    _check_proof_hashes("consistency", proof)

    if seeded:
        seed, rest = proof[0], proof[1:]
    else:
        seed, rest = old_root, proof
    sha = _sha256
    prefix = _NODE_PREFIX
    h_old = h_new = seed
    mask = last >> shift
    for i in range(inner):
        p = rest[i]
        if (mask >> i) & 1:
            h_old = sha(prefix + p + h_old).digest()
            h_new = sha(prefix + p + h_new).digest()
        else:
            h_new = sha(prefix + h_new + p).digest()
    for p in rest[inner:]:
        h_old = sha(prefix + p + h_old).digest()
        h_new = sha(prefix + p + h_new).digest()
    return h_old, h_new


def old_root_from_consistency(
    old_size: int, new_size: int, new_root: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root at ``old_size`` that ``proof`` proves consistent with ``new_root``.

    For a tree whose signer gave a consistency proof from a size where a
    verifier trusts another root: if the proof leads to ``new_root``, the root
    it returns is the larger tree's root at ``old_size``, and (that root,
    ``proof``) is evidence that the two trees cannot both be true. Raises
    ConsistencyProofError when the proof does not lead to ``new_root``, or when
    ``old_size`` is a power of 2 (the proof then does not carry the old root)
    or not below ``new_size``.
    """
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    if not 0 < old_size < new_size:
        raise ConsistencyProofError(
            f"no old root follows from a proof from size {old_size} to size {new_size}"
        )
    if old_size & (old_size - 1) == 0:
        raise ConsistencyProofError(
            f"a consistency proof from size {old_size} (a power of 2) does not carry the old root"
        )
    _check_hash("new root hash", new_root)
    h_old, h_new = _consistency_roots(old_size, new_size, EMPTY_ROOT, proof)
    if h_new != new_root:
        raise ConsistencyProofError(
            f"consistency proof from size {old_size} to size {new_size} leads to "
            f"new root {h_new.hex()}, expected {bytes(new_root).hex()}"
        )
    return h_old


# -- the right edge ---------------------------------------------------------------


class CompactRange:
    """The right edge of a growing tree: one hash per set bit of ``tree_size``.

    The sequencer keeps only this in memory. ``append`` returns every complete
    subtree the new leaf completes (the leaf itself included), as
    ``(level, index, hash)``, so the caller can write them into tiles.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, tree_size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        _check_size("tree_size", tree_size)
        want = tree_size.bit_count()
        if len(hashes) != want:
            raise MerkleFormatError(
                f"compact range of tree size {tree_size} needs {want} hashes "
                f"(one per set bit), got {len(hashes)}"
            )
        for i, h in enumerate(hashes):
            if len(h) != HASH_SIZE:
                raise MerkleFormatError(
                    f"compact range hash {i} has wrong length: "
                    f"expected {HASH_SIZE} bytes, got {len(h)}"
                )
        self._size = tree_size
        self._hashes: list[bytes] = [bytes(h) for h in hashes]

    @property
    def tree_size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Right-edge subtree hashes, largest (leftmost) first."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        if len(leaf_hash) != HASH_SIZE:
            raise MerkleFormatError(
                f"leaf hash has wrong length: expected {HASH_SIZE} bytes, got {len(leaf_hash)}"
            )
        index = self._size
        hashes = self._hashes
        h = leaf_hash
        completed = [(0, index, h)]
        n = index
        level = 0
        while n & 1:  # each trailing 1 bit of the old size merges one subtree
            h = _sha256(_NODE_PREFIX + hashes.pop() + h).digest()
            level += 1
            n >>= 1
            completed.append((level, index >> level, h))
        hashes.append(h)
        self._size = index + 1
        return completed

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        return _fold_right_edge(self._hashes)

    def copy(self) -> CompactRange:
        """An independent copy (to integrate a batch tentatively)."""
        new = CompactRange.__new__(CompactRange)
        new._size = self._size
        new._hashes = list(self._hashes)
        return new

    def to_bytes(self) -> bytes:
        """Concatenated hashes, for storage next to the tree size."""
        return b"".join(self._hashes)

    @classmethod
    def from_bytes(cls, tree_size: int, data: bytes) -> CompactRange:
        _check_size("tree_size", tree_size)
        count = tree_size.bit_count()
        if len(data) != count * HASH_SIZE:
            raise MerkleFormatError(
                f"compact range of tree size {tree_size} must be {count * HASH_SIZE} bytes "
                f"({count} hashes), got {len(data)}"
            )
        data = bytes(data)
        return cls(tree_size, [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"CompactRange(tree_size={self._size}, root={self.root().hex()})"
