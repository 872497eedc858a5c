"""Tests for firmlog.client.integrate: appending leaves to a tiled tree.

The oracle is independent of CompactRange: every tile is cut from the levels
of the tree built by pairing hashes (RFC 9162 2.1.1 for complete subtrees).
Integrating in any split into batches, each from the tiles the previous ones
stored, must give the same tiles, roots and right edges as building at once.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmlog.client.errors import MerkleFormatError
from firmlog.client.integrate import IntegratedTree, edge_tiles, integrate
from firmlog.client.merkle import CompactRange, node_hash, root_hash
from firmlog.client.tiles import TILE_WIDTH, Tile, tile_width, tiles_for_size, tiles_touched

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
Tiles = dict[tuple[int, int], bytes]


@functools.cache
def leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]


def tiles_at_once(leaf_hashes: Sequence[bytes]) -> Tiles:
    """Tile L/N holds the hashes at tree level 8L, indexes 256N...: cut from the levels."""
    levels = [list(leaf_hashes)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
    tiles: Tiles = {}
    for t in tiles_for_size(len(leaf_hashes)):
        start = t.index * TILE_WIDTH
        tiles[(t.level, t.index)] = b"".join(levels[8 * t.level][start : start + t.width])
    return tiles


def grow(
    store: Tiles, old_size: int, right_edge: bytes, new_leaves: Sequence[bytes]
) -> IntegratedTree:
    """One integration as a writer does it: read the edge tiles, integrate, store."""
    new_size = old_size + len(new_leaves)
    stored = {(t.level, t.index): store[(t.level, t.index)] for t in edge_tiles(old_size, new_size)}
    tree = integrate(old_size, right_edge, stored, new_leaves)
    assert set(tree.tiles) == {(t.level, t.index) for t in tiles_touched(old_size, new_size)}
    for key, data in tree.tiles.items():
        assert data.startswith(store.get(key, b""))  # a tile only grows
        assert len(data) == tile_width(new_size, *key) * 32
        store[key] = data
    return tree


@PROPERTY
@given(n=st.integers(0, 3000), cuts=st.lists(st.integers(0, 3000), max_size=12))
def test_integrating_in_any_batches_equals_building_at_once(n: int, cuts: list[int]) -> None:
    all_leaves = leaves(3000)[:n]
    sizes = sorted({0, n, *(c for c in cuts if c <= n)})
    store: Tiles = {}
    right_edge = b""
    compact = CompactRange()
    for old, new in itertools.pairwise(sizes):
        tree = grow(store, old, right_edge, all_leaves[old:new])
        for leaf in all_leaves[old:new]:
            compact.append(leaf)
        assert tree.tree_size == new
        assert tree.root_hash == compact.root() == root_hash(all_leaves[:new])
        assert tree.right_edge == compact.to_bytes()
        right_edge = tree.right_edge
    assert store == tiles_at_once(all_leaves)
    assert dict(integrate(0, b"", {}, all_leaves).tiles) == store


def test_integrating_across_tile_levels() -> None:
    """Batches that end just before, at and after 256 and 256**2 leaves."""
    all_leaves = leaves(70000)
    sizes = [0, 1, 255, 256, 257, 511, 4000, 65535, 65536, 65537, 66000, 70000]
    store: Tiles = {}
    right_edge = b""
    for old, new in itertools.pairwise(sizes):
        tree = grow(store, old, right_edge, all_leaves[old:new])
        right_edge = tree.right_edge
    assert store == tiles_at_once(all_leaves)
    assert tree.root_hash == root_hash(all_leaves)
    assert (2, 0) in store


def test_no_leaves_change_nothing() -> None:
    store: Tiles = {}
    tree = grow(store, 0, b"", leaves(300))
    again = integrate(300, tree.right_edge, {}, [])
    assert again == IntegratedTree(300, tree.root_hash, tree.right_edge, {})
    empty = integrate(0, b"", {}, [])
    assert (empty.tree_size, empty.right_edge, dict(empty.tiles)) == (0, b"", {})
    assert empty.root_hash == root_hash([])


def test_edge_tiles() -> None:
    assert edge_tiles(0, 1000) == []
    assert edge_tiles(1000, 1000) == []
    assert edge_tiles(256, 300) == []  # tile 0/1 is new; level 1 does not grow
    assert edge_tiles(300, 301) == [Tile(0, 1, 44)]
    assert edge_tiles(300, 600) == [Tile(0, 1, 44), Tile(1, 0, 1)]
    assert edge_tiles(65535, 65536) == [Tile(0, 255, 255), Tile(1, 0, 255)]


def test_longer_stored_tiles_are_cut_and_others_ignored() -> None:
    store: Tiles = {}
    tree = grow(store, 0, b"", leaves(600))
    old = integrate(0, b"", {}, leaves(300))
    wide = {(0, 1): store[(0, 1)], (1, 0): store[(1, 0)], (0, 0): b"unrelated"}
    grown = integrate(300, old.right_edge, wide, leaves(600)[300:])
    assert (grown.tree_size, grown.root_hash, grown.right_edge) == (
        600,
        tree.root_hash,
        tree.right_edge,
    )
    assert dict(grown.tiles) == {key: store[key] for key in [(0, 1), (0, 2), (1, 0)]}


def test_a_short_or_missing_edge_tile_is_inconsistent_storage() -> None:
    store: Tiles = {}
    tree = grow(store, 0, b"", leaves(300))
    with pytest.raises(
        RuntimeError,
        match="tile 0/1 holds 64 bytes, expected 1408 at tree size 300: storage is inconsistent",
    ):
        integrate(300, tree.right_edge, {(0, 1): store[(0, 1)][:64]}, leaves(301)[300:])
    with pytest.raises(RuntimeError, match="tile 0/1 holds 0 bytes, expected 1408"):
        integrate(300, tree.right_edge, {}, leaves(301)[300:])


def test_malformed_input_is_a_merkle_format_error() -> None:
    with pytest.raises(MerkleFormatError, match="compact range of tree size 3 must be 64 bytes"):
        integrate(3, bytes(32), {}, [])
    with pytest.raises(MerkleFormatError, match="leaf hash has wrong length"):
        integrate(0, b"", {}, [bytes(31)])
    with pytest.raises(ValueError, match="tree_size must be non-negative"):
        integrate(-1, b"", {}, [])
