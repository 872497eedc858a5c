"""Integration: appending leaves to a tiled tree (RFC 9162 2.1, c2sp.org/tlog-tiles).

The one tree algorithm every writer of the log uses, pure and synchronous:
the caller says which stored tiles it holds, this module does the Merkle
work, and the caller stores what changed. A writer

1. reads its stored state: the tree size and right edge
   (:meth:`~firmlog.client.merkle.CompactRange.to_bytes`);
2. reads the stored tiles :func:`edge_tiles` names (the partial tile at the
   right edge of each tile level that grows: at most one per level);
3. calls :func:`integrate` with them and the new leaf hashes;
4. stores :attr:`IntegratedTree.tiles` (each tile's whole new bytes, a
   prefix-extension of the stored bytes) and the new size, root and right edge.

No I/O happens here; steps 1, 2 and 4 are the caller's, in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from firmlog.client.merkle import HASH_SIZE, CompactRange
from firmlog.client.tiles import TILE_HEIGHT, TILE_WIDTH, Tile, tile_width, tiles_touched

__all__ = ["IntegratedTree", "edge_tiles", "integrate"]


@dataclass(frozen=True, slots=True)
class IntegratedTree:
    """The tree after :func:`integrate`: what the caller stores."""

    tree_size: int
    root_hash: bytes
    right_edge: bytes  # CompactRange.to_bytes() at tree_size
    tiles: Mapping[tuple[int, int], bytes]
    """Every hash tile that gained hashes, by ``(level, index)``: its whole new bytes."""


def edge_tiles(old_size: int, new_size: int) -> list[Tile]:
    """The stored tiles :func:`integrate` needs to grow the tree from ``old_size``
    to ``new_size``: the partial tiles of ``old_size`` that gain hashes, at
    their widths at ``old_size`` (at most one per tile level)."""
    edge = []
    for t in tiles_touched(old_size, new_size):
        width = tile_width(old_size, t.level, t.index)
        if width:
            edge.append(Tile(t.level, t.index, width))
    return edge


def integrate(
    old_size: int,
    right_edge: bytes,
    stored_tiles: Mapping[tuple[int, int], bytes],
    leaf_hashes: Sequence[bytes],
) -> IntegratedTree:
    """Append ``leaf_hashes`` to the tree of ``old_size`` whose right edge is ``right_edge``.

    ``stored_tiles`` maps ``(level, index)`` to the stored bytes of at least
    the tiles :func:`edge_tiles` names (longer bytes are cut to the width at
    ``old_size``; other tiles are ignored). Raises MerkleFormatError for a
    malformed right edge or leaf hash, and RuntimeError when an edge tile is
    missing or shorter than ``old_size`` implies: storage is inconsistent,
    and nothing may be written.
    """
    tree = CompactRange.from_bytes(old_size, right_edge)
    new_hashes: dict[tuple[int, int], list[bytes]] = {}
    for leaf in leaf_hashes:
        for level, index, digest in tree.append(leaf):
            if level % TILE_HEIGHT == 0:  # a subtree that tiles store
                key = (level // TILE_HEIGHT, index // TILE_WIDTH)
                new_hashes.setdefault(key, []).append(digest)
    tiles: dict[tuple[int, int], bytes] = {}
    for (level, index), hashes in new_hashes.items():
        size = tile_width(old_size, level, index) * HASH_SIZE
        stored = b""
        if size:
            stored = bytes(stored_tiles.get((level, index), b""))
            if len(stored) < size:
                raise RuntimeError(
                    f"tile {level}/{index} holds {len(stored)} bytes, expected {size} at tree "
                    f"size {old_size}: storage is inconsistent"
                )
        tiles[(level, index)] = stored[:size] + b"".join(hashes)
    return IntegratedTree(tree.tree_size, tree.root(), tree.to_bytes(), tiles)
