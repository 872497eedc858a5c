"""RFC 9162 section 2.1 Merkle trees (RFC 6962 hashing): hashes, roots, proofs.

Proofs are *generated* over a :class:`HashReader`, a source of hashes of
complete subtrees, so the server can prove from stored tiles and a client from
fetched tiles, without loading the tree. Proofs are *verified* with the
functions ``verify_inclusion`` and ``verify_consistency``, which return None
or raise :class:`~firmlog.client.errors.ProofError`.

A complete subtree is addressed as ``(level, index)``: the subtree of
``2**level`` leaves starting at leaf ``index * 2**level``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

HASH_SIZE = 32
EMPTY_ROOT: bytes  # SHA-256(b"")


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
    raise NotImplementedError


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    raise NotImplementedError


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """Root of the tree whose leaves have these hashes (EMPTY_ROOT for none)."""
    raise NotImplementedError


def inclusion_proof(leaf_index: int, tree_size: int, reader: HashReader) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(leaf_index, D[tree_size]), bottom-up, via O(log n) reads."""
    raise NotImplementedError


def consistency_proof(old_size: int, new_size: int, reader: HashReader) -> list[bytes]:
    """RFC 9162 2.1.4.1 PROOF(old_size, D[new_size]), via O(log n) reads."""
    raise NotImplementedError


def tree_hash(tree_size: int, reader: HashReader) -> bytes:
    """Root hash of the first ``tree_size`` leaves, from O(log n) complete subtrees."""
    raise NotImplementedError


def verify_inclusion(
    leaf_hash: bytes, leaf_index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 2.1.3.2. Raise InclusionProofError (or MerkleFormatError) on failure."""
    raise NotImplementedError


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2. Raise ConsistencyProofError (or MerkleFormatError) on failure."""
    raise NotImplementedError


class CompactRange:
    """The right edge of a growing tree: one hash per set bit of ``tree_size``.

    The sequencer keeps only this in memory. ``append`` returns every complete
    subtree the new leaf completes (the leaf itself included), as
    ``(level, index, hash)``, so the caller can write them into tiles.
    """

    def __init__(self, tree_size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        raise NotImplementedError

    @property
    def tree_size(self) -> int:
        raise NotImplementedError

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Right-edge subtree hashes, largest (leftmost) first."""
        raise NotImplementedError

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        raise NotImplementedError

    def root(self) -> bytes:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Concatenated hashes, for storage next to the tree size."""
        raise NotImplementedError

    @classmethod
    def from_bytes(cls, tree_size: int, data: bytes) -> CompactRange:
        raise NotImplementedError
