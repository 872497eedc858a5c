"""Tests for firmlog.client.tiles: c2sp.org/tlog-tiles paths, shapes, entry bundles,
and proofs computed from tiles (TileHashReader, TileCache).

Tiles here are built the way the sequencer builds them: from the complete
subtrees that CompactRange.append reports. Proofs over them must equal the
proofs over an in-memory reader of the same leaves.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.merkle import LevelsReader
from vectors import VECTORS, load_vector

from firmlog.client import tiles as tiles_module
from firmlog.client.checkpoint import Checkpoint
from firmlog.client.errors import MerkleFormatError, TileMismatchError, TilePathError
from firmlog.client.merkle import (
    CompactRange,
    consistency_proof,
    consistency_proof_plan,
    inclusion_proof,
    inclusion_proof_plan,
    leaf_hash,
    root_hash,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from firmlog.client.tiles import (
    ENTRY_LEVEL,
    TILE_WIDTH,
    Tile,
    TileCache,
    TileHashReader,
    _ExpandedTile,
    decode_entry_bundle,
    encode_entry_bundle,
    encode_index,
    parse_tile_path,
    tile_for_hash,
    tile_root,
    tile_width,
    tiles_for_hashes,
    tiles_for_size,
    tiles_touched,
    verify_tile,
    verify_tree_root,
)

MAX_N = 10**5
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Store = dict[tuple[int, int], bytearray]
Fetch = Callable[[Sequence[Tile]], Sequence[bytes]]


# -- fixtures: trees, tiles built from CompactRange.append, an in-memory reader -------


def leaf_hashes(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]


def build_tiles(leaves: Sequence[bytes]) -> tuple[Store, CompactRange]:
    """Hash tiles as the sequencer writes them: every complete subtree at a level
    that is a multiple of 8 goes to its tile, in order."""
    store: Store = {}
    cr = CompactRange()
    append = cr.append
    for h in leaves:
        for level, index, sub in append(h):
            if not level & 7:
                key = (level >> 3, index >> 8)
                tile = store.get(key)
                if tile is None:
                    store[key] = tile = bytearray()
                tile += sub
    for (level, index), tile in store.items():  # every tile is a dense prefix
        assert 0 < len(tile) <= TILE_WIDTH * 32
        assert len(tile) == expected_width(cr.tree_size, level, index) * 32
    return store, cr


class RecordingFetch:
    """fetch() over a tile store that records every call. ``exact`` returns
    exactly width*32 bytes; otherwise the whole stored (possibly wider) tile."""

    def __init__(self, store: Store, exact: bool = False) -> None:
        self.store = store
        self.exact = exact
        self.calls: list[list[Tile]] = []

    def __call__(self, tiles: Sequence[Tile]) -> list[bytes]:
        self.calls.append(list(tiles))
        out = []
        for t in tiles:
            data = bytes(self.store[(t.level, t.index)])
            out.append(data[: t.width * 32] if self.exact else data)
        return out

    @property
    def tiles(self) -> list[Tile]:
        return [t for call in self.calls for t in call]


@functools.cache
def tree_1e5() -> tuple[list[bytes], Store, CompactRange, LevelsReader]:
    leaves = leaf_hashes(MAX_N)
    store, cr = build_tiles(leaves)
    return leaves, store, cr, LevelsReader(leaves)


@functools.cache
def tree_1e6() -> tuple[list[bytes], Store, CompactRange]:
    leaves = [i.to_bytes(32, "big") for i in range(10**6)]  # any distinct 32 bytes will do
    store, cr = build_tiles(leaves)
    return leaves, store, cr


SHARED_CACHE = TileCache(64)  # small on purpose: evictions happen during the properties


def expected_width(tree_size: int, level: int, index: int) -> int:
    """Straight from the spec: the partial tile at level l has floor(s / 256**l) mod 256."""
    full_tiles, partial = divmod(tree_size // TILE_WIDTH**level, TILE_WIDTH)
    return TILE_WIDTH if index < full_tiles else partial


# -- tile paths -------------------------------------------------------------------------

PATHS = load_vector("tlog-tiles-paths.json")


@pytest.mark.parametrize("case", PATHS["c2sp_n_encoding"], ids=lambda c: str(c["n"]))
def test_c2sp_index_encoding(case: dict[str, Any]) -> None:
    assert encode_index(case["n"]) == case["want"]
    tile = parse_tile_path(f"tile/0/{case['want']}")
    assert tile == Tile(0, case["n"])


@pytest.mark.parametrize(
    ("n", "want"),
    [
        (0, "000"),
        (7, "007"),
        (999, "999"),
        (1000, "x001/000"),
        (123456, "x123/456"),
        (2**64 - 1, "x018/x446/x744/x073/x709/x551/615"),
    ],
)
def test_encode_index(n: int, want: str) -> None:
    assert encode_index(n) == want


def test_encode_index_negative() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        encode_index(-1)


@pytest.mark.parametrize(
    ("tile", "path"),
    [
        (Tile(0, 0), "tile/0/000"),
        (Tile(0, 1234067, 5), "tile/0/x001/x234/067.p/5"),
        (Tile(1, 1000, 255), "tile/1/x001/000.p/255"),
        (Tile(63, 1), "tile/63/001"),
        (Tile(ENTRY_LEVEL, 3), "tile/entries/003"),
        (Tile(ENTRY_LEVEL, 3, 1), "tile/entries/003.p/1"),
    ],
)
def test_tile_path_round_trip(tile: Tile, path: str) -> None:
    assert tile.path == path
    assert parse_tile_path(path) == tile
    assert parse_tile_path("/" + path) == tile
    assert tile.is_full == (tile.width == TILE_WIDTH)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "not a tile path"),
        ("tile", "not a tile path"),
        ("tiles/0/000", "not a tile path"),
        ("//tile/0/000", "not a tile path"),
        ("tile/0", "has no index"),
        ("tile/0/", "index element ''"),
        ("tile/0/000/", "index element '000': expected 'x' and 3 digits"),
        ("tile/00/000", "level '00'"),
        ("tile/01/000", "level '01'"),
        ("tile/64/000", "level 64: expected at most 63"),
        ("tile/" + "9" * 5000 + "/000", "expected at most 63"),
        ("tile/-1/000", "level '-1'"),
        ("tile/+1/000", "level '+1'"),
        ("tile/data/000", "level 'data'"),
        ("tile/Entries/000", "level 'Entries'"),
        ("tile/\u0661/000", "level"),  # ARABIC-INDIC DIGIT ONE is not ASCII
        ("tile/0/1", "index element '1': expected 3 digits"),
        ("tile/0/0001", "index element '0001'"),
        ("tile/0/001/002", "index element '001': expected 'x' and 3 digits"),
        ("tile/0/x001", "index element 'x001': expected 3 digits"),
        ("tile/0/x000/001", "non-canonically: expected '001'"),
        ("tile/0/x000/x000/000", "non-canonically"),
        ("tile/0/X001/000", "index element 'X001'"),
        ("tile/0/x01/000", "index element 'x01'"),
        ("tile/0/x\u0661\u0662\u0663/000", "index element"),
        ("tile/0/00a", "index element '00a'"),
        ("tile/0/x001/x002/x003/x004/x005/x006/x007/000", "at most 7"),
        ("tile/0/000.p/0", "width 0"),
        ("tile/0/000.p/256", "width 256"),
        ("tile/0/000.p/1000", "width 1000"),
        ("tile/0/000.p/" + "9" * 5000, "width"),
        ("tile/0/000.p/05", "width '05'"),
        ("tile/0/000.p/", "width ''"),
        ("tile/0/000.p/5/", "width '5/'"),
        ("tile/0/000.p/-5", "width '-5'"),
        ("tile/0/000.p/5.p/5", "width '5.p/5'"),
        ("tile/entries/000.p/256", "width 256"),
        ("tile/0/000?x=1", "index element"),
        ("tile/0/000\n", "index element"),
        (" tile/0/000", "not a tile path"),
    ],
)
def test_parse_tile_path_rejects(path: str, message: str) -> None:
    with pytest.raises(TilePathError, match=re.escape(message)):
        parse_tile_path(path)


@pytest.mark.parametrize("case", PATHS["sumdb_tile_paths"], ids=lambda c: c["path"])
def test_sumdb_paths(case: dict[str, Any]) -> None:
    """golang.org/x/mod sumdb paths carry a height segment (tile/<H>/<L>/<N>) that
    tlog-tiles paths omit (the height is fixed at 8). We check two things:
    (1) our strict parser rejects every sumdb path as it stands (the extra
    segment makes the index non-canonical); (2) after dropping H (and renaming
    'data' to 'entries'), L and N parse to the sumdb values, and W agrees
    exactly when the sumdb path has an explicit .p/<W>; a full sumdb tile is
    2**H wide, whereas a full tlog-tiles tile is 256 wide."""
    path = case["path"]
    with pytest.raises(TilePathError):
        parse_tile_path(path)
    parts = path.split("/")
    dropped = "/".join([parts[0], *["entries" if p == "data" else p for p in parts[2:]]])
    if case.get("invalid"):
        with pytest.raises(TilePathError):
            parse_tile_path(dropped)
        return
    tile = parse_tile_path(dropped)
    assert (tile.level, tile.index) == (case["L"], case["N"])
    if ".p/" in path:
        assert tile.width == case["W"]
    else:
        assert case["W"] == 2 ** case["H"]
        assert tile.width == TILE_WIDTH


def test_tile_validates_fields() -> None:
    for bad in [(-2, 0, 1), (64, 0, 1), (0, -1, 1), (0, 0, 0), (0, 0, 257)]:
        with pytest.raises(ValueError, match="tile"):
            Tile(*bad)


tiles_st = st.builds(
    Tile,
    level=st.integers(ENTRY_LEVEL, 63),
    index=st.one_of(st.integers(0, 2000), st.integers(0, 2**64 - 1)),
    width=st.one_of(st.just(TILE_WIDTH), st.integers(1, TILE_WIDTH)),
)


@settings(max_examples=300, deadline=None)
@given(tile=tiles_st, slash=st.booleans())
def test_tile_path_property_round_trip(tile: Tile, slash: bool) -> None:
    assert parse_tile_path(("/" if slash else "") + tile.path) == tile


@settings(max_examples=400, deadline=None)
@given(
    path=st.one_of(
        st.text(max_size=40),
        st.from_regex(
            r"/?tile/(entries|[0-9]{1,2})/(x?[0-9]{2,4}/){0,3}x?[0-9]{2,4}(\.p/[0-9]{1,3})?",
            fullmatch=True,
        ),
    )
)
def test_parse_tile_path_fuzz(path: str) -> None:
    try:
        tile = parse_tile_path(path)
    except TilePathError:
        return
    assert tile.path == path.removeprefix("/")  # whatever parses is canonical


# -- tree shapes -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", PATHS["c2sp_tree_shapes"], ids=lambda c: f"size-{c['tree_size']}")
def test_c2sp_tree_shapes(case: dict[str, Any]) -> None:
    tiles = tiles_for_size(case["tree_size"])
    levels = {t.level for t in tiles}
    want = case["want_tiles"]
    assert levels == {int(k[len("level") :].split("_")[0]) for k in want}
    for level in levels:
        full = [t for t in tiles if t.level == level and t.is_full]
        partial = [t for t in tiles if t.level == level and not t.is_full]
        assert len(full) == want[f"level{level}_full"]
        assert [t.width for t in partial] == (
            [want[f"level{level}_partial_width"]] if want[f"level{level}_partial_width"] else []
        )
        assert [t.index for t in full + partial] == list(range(len(full) + len(partial)))


def test_tiles_for_size_small() -> None:
    assert tiles_for_size(0) == []
    assert tiles_for_size(1) == [Tile(0, 0, 1)]
    assert tiles_for_size(257) == [Tile(0, 0), Tile(0, 1, 1), Tile(1, 0, 1)]
    assert tiles_for_size(65536) == [*(Tile(0, i) for i in range(256)), Tile(1, 0), Tile(2, 0, 1)]
    with pytest.raises(ValueError, match="non-negative"):
        tiles_for_size(-1)


def test_tiles_for_size_matches_stored_tiles() -> None:
    _, store, cr, _ = tree_1e5()
    tiles = tiles_for_size(cr.tree_size)
    assert {(t.level, t.index): t.width * 32 for t in tiles} == {
        k: len(v) for k, v in store.items()
    }


@PROPERTY
@given(n=st.one_of(st.integers(0, 3 * 10**6), st.integers(0, 22).map(lambda e: 1 << e)))
def test_tiles_for_size_widths(n: int) -> None:
    tiles = tiles_for_size(n)
    assert len(set(tiles)) == len(tiles)
    level = 0
    while n // TILE_WIDTH**level:
        at_level = [t for t in tiles if t.level == level]
        # the level's widths add up to the hashes it stores, full tiles first
        assert sum(t.width for t in at_level) == n // TILE_WIDTH**level
        assert [t.index for t in at_level] == list(range(len(at_level)))
        assert all(t.is_full for t in at_level[:-1])
        for t in at_level:
            assert t.width == expected_width(n, t.level, t.index)
        level += 1
    assert all(t.level < level for t in tiles)


def test_tiles_touched_small() -> None:
    assert tiles_touched(0, 0) == tiles_touched(5, 5) == []
    assert tiles_touched(254, 255) == [Tile(0, 0, 255)]
    assert tiles_touched(255, 256) == [Tile(0, 0), Tile(1, 0, 1)]
    assert tiles_touched(256, 257) == [Tile(0, 1, 1)]  # level 1 still holds one hash
    assert tiles_touched(100, 700) == [Tile(0, 0), Tile(0, 1), Tile(0, 2, 188), Tile(1, 0, 2)]
    assert tiles_touched(65535, 65536) == [Tile(0, 255), Tile(1, 0), Tile(2, 0, 1)]
    assert tiles_touched(0, 70000) == tiles_for_size(70000)
    with pytest.raises(ValueError, match="old_size 6 is larger than new_size 5"):
        tiles_touched(6, 5)
    with pytest.raises(ValueError, match="non-negative, got -1"):
        tiles_touched(-1, 5)


@PROPERTY
@given(
    old=st.one_of(st.integers(0, 3 * 10**6), st.integers(0, 22).map(lambda e: 1 << e)),
    grow=st.one_of(st.integers(0, 600), st.integers(0, 10**6)),
)
def test_tiles_touched_are_the_tiles_that_grow(old: int, grow: int) -> None:
    new = old + grow
    before = {(t.level, t.index): t.width for t in tiles_for_size(old)}
    grown = [t for t in tiles_for_size(new) if before.get((t.level, t.index)) != t.width]
    assert tiles_touched(old, new) == grown
    for t in grown:
        assert tile_width(new, t.level, t.index) == t.width
        assert tile_width(old, t.level, t.index) == before.get((t.level, t.index), 0)


def test_tiles_for_hashes() -> None:
    assert tiles_for_hashes(1000, []) == []
    # leaves 10 and 999, leaves 40..47 (in tile 0/0), leaves 768..895, a level-8 hash
    coords = [(0, 10), (0, 999), (3, 5), (7, 6), (8, 2), (0, 11)]
    assert tiles_for_hashes(1000, coords) == [Tile(0, 0), Tile(0, 3, 232), Tile(1, 0, 3)]
    with pytest.raises(ValueError, match=r"subtree \(0, 1000\) is not a complete subtree"):
        tiles_for_hashes(1000, [(0, 1), (0, 1000)])


@PROPERTY
@given(n=st.integers(1, MAX_N), data=st.data())
def test_tiles_for_a_plan_are_what_its_proof_fetches(n: int, data: st.DataObject) -> None:
    """A proof plan's tiles are exactly the tiles its proof makes a cold reader fetch."""
    _, store, _, levels = tree_1e5()
    i = data.draw(st.integers(0, n - 1), label="index")
    m = data.draw(st.integers(1, n), label="old size")
    for plan in (inclusion_proof_plan(i, n), consistency_proof_plan(m, n)):
        fetch = RecordingFetch(store)
        proof = plan.run(TileHashReader(n, fetch, TileCache()))
        assert sorted(tiles_for_hashes(n, plan.nodes), key=repr) == sorted(fetch.tiles, key=repr)
        assert plan.proof(levels.at(n).read_hashes(plan.nodes)) == proof


@pytest.mark.parametrize(
    ("tree_size", "level", "index", "want"),
    [
        (1, 0, 0, Tile(0, 0, 1)),
        (1000, 0, 999, Tile(0, 3, 232)),
        (1000, 0, 255, Tile(0, 0)),
        (1000, 3, 5, Tile(0, 0)),  # leaves 40..47, the root of hashes 40..47 of tile 0/0
        (1000, 7, 6, Tile(0, 3, 232)),  # leaves 768..895
        (1000, 8, 2, Tile(1, 0, 3)),  # stored in tile 1/0 at position 2
        (70000, 9, 135, Tile(1, 1, 17)),
        (2**40, 40, 0, Tile(5, 0, 1)),
    ],
)
def test_tile_for_hash(tree_size: int, level: int, index: int, want: Tile) -> None:
    assert tile_for_hash(tree_size, level, index) == want


@pytest.mark.parametrize(
    ("tree_size", "level", "index"),
    [(0, 0, 0), (1000, 0, 1000), (1000, 3, 125), (1000, 10, 0), (5, -1, 0), (5, 0, -1)],
)
def test_tile_for_hash_beyond_tree(tree_size: int, level: int, index: int) -> None:
    with pytest.raises(ValueError, match="not a complete subtree"):
        tile_for_hash(tree_size, level, index)


# -- entry bundles -----------------------------------------------------------------------------


def test_entry_bundle_round_trip() -> None:
    entries = [b"", b"one", b"\x00" * 300, b"x" * 65535]
    data = encode_entry_bundle(entries)
    assert data[:5] == b"\x00\x00\x00\x03o"
    assert decode_entry_bundle(data) == entries
    assert decode_entry_bundle(data, expected_count=4) == entries
    assert encode_entry_bundle([]) == b""
    assert decode_entry_bundle(b"") == []
    assert decode_entry_bundle(b"", expected_count=0) == []


@pytest.mark.parametrize(
    ("data", "count", "message"),
    [
        (b"\x00", None, "needs a 2-byte length, got 1 byte"),
        (b"\x00\x03on", None, "declares 3 bytes, got 2"),
        (b"\x00\x03one\x00", 2, "needs a 2-byte length"),
        (b"\x00\x03one\x00\x01", None, "entry 1 at offset 5 declares 1 bytes, got 0"),
        (b"\x00\x03one", 2, "wrong entry count: expected 2, got 1"),
        (b"\x00\x03one\x00\x00", 1, "trailing data: expected 1 entries, found 2 more bytes"),
        (b"\x00\x00", 0, "trailing data"),
    ],
)
def test_entry_bundle_rejects(data: bytes, count: int | None, message: str) -> None:
    with pytest.raises(MerkleFormatError, match=message):
        decode_entry_bundle(data, expected_count=count)


def test_entry_bundle_misuse() -> None:
    with pytest.raises(ValueError, match="entry 1 is 65536 bytes"):
        encode_entry_bundle([b"ok", b"x" * 65536])
    with pytest.raises(ValueError, match="expected_count must be non-negative"):
        decode_entry_bundle(b"", expected_count=-1)


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(st.binary(max_size=300), max_size=40))
def test_entry_bundle_property_round_trip(entries: list[bytes]) -> None:
    data = encode_entry_bundle(entries)
    assert decode_entry_bundle(data, expected_count=len(entries)) == entries


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=200), count=st.one_of(st.none(), st.integers(0, 10)))
def test_entry_bundle_fuzz(data: bytes, count: int | None) -> None:
    try:
        entries = decode_entry_bundle(data, expected_count=count)
    except MerkleFormatError:
        return
    assert encode_entry_bundle(entries) == data


# -- TileHashReader -------------------------------------------------------------------------


def test_reader_reads_stored_and_inner_hashes() -> None:
    _, store, _, levels = tree_1e5()
    n = 70000
    reader = TileHashReader(n, RecordingFetch(store))
    coords = [(0, 0), (0, 69999), (1, 5), (7, 3), (8, 0), (15, 0), (16, 0), (3, 8749), (9, 135)]
    assert reader.read_hashes(coords) == levels.at(n).read_hashes(coords)


def test_reader_fetches_once_with_widths_at_tree_size() -> None:
    _, store, _, _ = tree_1e5()
    n = 70000
    fetch = RecordingFetch(store, exact=True)
    reader = TileHashReader(n, fetch, TileCache())
    reader.read_hashes([(0, 0), (0, 1), (4, 0), (0, 69999), (8, 272), (16, 0), (9, 135)])
    assert fetch.calls == [[Tile(0, 0), Tile(0, 273, 112), Tile(1, 1, 17), Tile(2, 0, 1)]]
    # Everything is now at hand: the same reader does not fetch again.
    reader.read_hashes([(0, 69999), (3, 0), (16, 0), (8, 272), (9, 135)])
    assert len(fetch.calls) == 1
    assert reader.read_hashes([]) == []
    assert len(fetch.calls) == 1


def test_reader_cache_is_shared_by_tile_and_width() -> None:
    _, store, _, _ = tree_1e5()
    cache = TileCache()
    n = 70000
    coords = [(0, 10), (0, 69999)]  # a full tile and a partial one
    first = RecordingFetch(store)
    TileHashReader(n, first, cache).read_hashes(coords)
    assert first.tiles == [Tile(0, 0), Tile(0, 273, 112)]
    assert Tile(0, 0) in cache
    assert Tile(0, 273, 112) in cache
    assert (cache.hits, cache.misses) == (0, 2)
    # Same tree size, new reader: tile/0/000 and tile/0/x273.p/112 never change.
    second = RecordingFetch(store)
    TileHashReader(n, second, cache).read_hashes(coords)
    assert second.calls == []
    assert (cache.hits, cache.misses) == (2, 2)
    # One more leaf: the partial tile is another tile (width 113).
    third = RecordingFetch(store)
    TileHashReader(n + 1, third, cache).read_hashes([(0, 10), (0, 70000)])
    assert third.tiles == [Tile(0, 273, 113)]
    # A smaller tree's partial tile is served by the cached full tile it grew into.
    fourth = RecordingFetch(store)
    assert TileHashReader(200, fourth, cache).read_hashes([(0, 199)]) == [
        bytes(store[(0, 0)][199 * 32 : 200 * 32])
    ]
    assert fourth.calls == []


def test_a_read_started_without_io_holds_its_cached_tiles() -> None:
    """TileHashReader.start: the caller fetches what is missing; what was cached
    stays held by the read even if the cache evicts it meanwhile."""
    _, store, _, levels = tree_1e5()
    cache = TileCache(max_tiles=2)
    TileHashReader(70000, RecordingFetch(store), cache).read_hashes([(0, 10)])  # caches 0/0
    coords = [(0, 10), (3, 1000), (0, 69999), (8, 3)]
    read = TileHashReader(70000, cache=cache).start(coords)
    assert read.missing == [Tile(0, 31), Tile(0, 273, 112), Tile(1, 0)]
    with pytest.raises(RuntimeError, match=r"tiles \['tile/0/031', .* were not supplied"):
        read.hashes()
    with pytest.raises(MerkleFormatError, match="tile fetch returned 1 tiles for 3 requested"):
        read.supply([b""])
    read.supply([bytes(store[(t.level, t.index)]) for t in read.missing])  # evicts 0/0
    assert Tile(0, 0) not in cache
    assert read.missing == []
    assert read.hashes() == levels.at(70000).read_hashes(coords)
    with pytest.raises(RuntimeError, match=r"tiles \['tile/0/000'\] are not cached and this"):
        TileHashReader(70000, cache=cache).read_hashes([(0, 10)])


def test_reader_keeps_its_partial_tiles_when_the_cache_evicts() -> None:
    _, store, _, _ = tree_1e5()
    cache = TileCache(max_tiles=1)
    fetch = RecordingFetch(store)
    reader = TileHashReader(70000, fetch, cache)
    reader.read_hashes([(0, 69999)])
    reader.read_hashes([(0, 10)])  # evicts the partial tile from the cache
    assert Tile(0, 273, 112) not in cache
    reader.read_hashes([(0, 69998), (5, 2185)])  # partial tile: still expanded in the reader
    reader.read_hashes([(0, 10)])  # full tile: cached
    assert fetch.tiles == [Tile(0, 273, 112), Tile(0, 0)]


def test_reader_hashes_each_inner_node_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Expanded tiles live in the shared cache: a second proof over the same
    tiles, from a new reader, hashes nothing inside them again."""
    _, store, _, _ = tree_1e5()
    real = tiles_module._NODE_HASHER
    count = [0]

    class Counting:
        def copy(self) -> Any:
            count[0] += 1
            return real.copy()

    monkeypatch.setattr(tiles_module, "_NODE_HASHER", Counting())
    cache = TileCache()
    # Full tiles 0/0..0/265 and 1/0; partial tiles 1/1 (width 10) and 2/0 (width 1).
    n = 65536 + 256 * 10
    # The proof for 12345 climbs tiles 0/48 and 1/0 to level 7 (254 inner
    # nodes each; level 8, the tile's root, is stored in the tile above) and
    # needs the right edge [65536, n) = (11, 32) + (9, 132), both inside
    # partial tile 1/1: 5 + 2 + 1 inner nodes up to level 3.
    inclusion_proof(12345, n, TileHashReader(n, RecordingFetch(store), cache))
    assert count[0] == 254 + 254 + 8
    for _ in range(2):  # new readers, shared cache: nothing is hashed again
        count[0] = 0
        fetch = RecordingFetch(store)
        inclusion_proof(12345, n, TileHashReader(n, fetch, cache))
        inclusion_proof(12346, n, TileHashReader(n, fetch, cache))
        assert count[0] == 0
        assert fetch.calls == []
    # Without a shared cache, one reader still hashes each node once.
    count[0] = 0
    reader = TileHashReader(n, RecordingFetch(store))
    inclusion_proof(12345, n, reader)
    inclusion_proof(12346, n, reader)
    assert count[0] == 254 + 254 + 8


def test_a_growing_tile_is_cached_at_its_widest_only() -> None:
    """The right edge grows by a few hashes per commit: each new width replaces the
    narrower one in the cache, and the full tile replaces the last."""
    _, store, _, _ = tree_1e5()
    data = bytes(store[(0, 7)])
    cache = TileCache(8)
    cache.add(Tile(0, 6), bytes(store[(0, 6)]))
    for width in (3, 10, 200):
        cache.add(Tile(0, 7, width), data[: width * 32])
    assert [Tile(0, 7, w) in cache for w in (3, 10, 200)] == [False, False, True]
    cache.add(Tile(0, 7, 5), data[: 5 * 32])  # an older width asked for again: kept too
    assert Tile(0, 7, 200) in cache
    cache.add(Tile(0, 7), data)
    assert [Tile(0, 7, w) in cache for w in (5, 200, 256)] == [True, False, True]
    assert len(cache) == 3


def test_a_tile_read_again_is_proved_from_its_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full tile that left the cache expanded leaves a summary: read again (the same
    bytes), a proof hashes 22 nodes of it, not 254, and gets the same hashes."""
    _, store, _, levels = tree_1e5()
    real = tiles_module._NODE_HASHER
    count = [0]

    class Counting:
        def copy(self) -> Any:
            count[0] += 1
            return real.copy()

    monkeypatch.setattr(tiles_module, "_NODE_HASHER", Counting())
    n = 256 * 256
    cache = TileCache(max_tiles=1)
    fetch = RecordingFetch(store)
    cache.add(Tile(1, 0), bytes(store[(1, 0)]))
    TileHashReader(n, fetch, cache).read_hashes([(0, 2)])  # tile 0/0, not expanded
    TileHashReader(n, fetch, cache).read_hashes([(0, 300)])  # evicts 0/0: nothing to keep
    assert len(cache._summaries) == 0
    count[0] = 0
    want = levels.at(n)
    proof = inclusion_proof(77, n, TileHashReader(n, fetch, cache))
    assert count[0] == 254 + 254  # tiles 0/0 and 1/0, hashed whole
    TileHashReader(n, fetch, cache).read_hashes([(0, 300)])  # evicts 0/0 with a summary
    assert list(cache._summaries) == [(0, 0)]
    # Read 0/0 again, then from the cache: two proofs hash 22 nodes each (7 from the
    # summary, spared 16); the third hashes what is left of the 16 singly, then levels
    # 1-3 whole (128 + 64 + 32), takes level 4 from the summary and hashes 5-7 (8 + 4
    # + 2); every later proof only looks its nodes up.
    for i, hashed in ((77, 22), (0, 22), (255, 1 + 3 + 224 + 14), (128, 0)):
        count[0] = 0
        assert inclusion_proof(i, n, TileHashReader(n, fetch, cache)) == inclusion_proof(i, n, want)
        assert count[0] == hashed, i
    assert proof == inclusion_proof(77, n, want)
    assert fetch.tiles.count(Tile(0, 0)) == 3
    # Other bytes at the same coordinates never use the summary.
    TileHashReader(n, fetch, cache).read_hashes([(0, 300)])
    other = bytes(reversed(bytes(store[(0, 0)])))
    count[0] = 0
    read = TileHashReader(n, cache=cache).start([(7, 0), (3, 5)])
    read.supply([other])
    assert count[0] == 0
    assert read.hashes() == [root_hash(split(other)[:128]), root_hash(split(other)[40:48])]
    assert count[0] == 254  # whole levels, 1 to 7
    with pytest.raises(ValueError, match="max_summaries must be non-negative, got -1"):
        TileCache(4, max_summaries=-1)


def split(data: bytes) -> list[bytes]:
    return [data[i : i + 32] for i in range(0, len(data), 32)]


def test_reader_lru_evicts() -> None:
    _, store, _, _ = tree_1e5()
    cache = TileCache(max_tiles=2)
    n = 256 * 10
    fetch = RecordingFetch(store)
    reader = TileHashReader(n, fetch, cache)
    for i in range(3):
        reader.read_hashes([(0, 256 * i)])
    assert len(cache) == 2
    assert Tile(0, 0) not in cache
    assert Tile(0, 2) in cache
    reader.read_hashes([(0, 256)])  # still cached; now most recent
    reader.read_hashes([(0, 0)])  # evicts (0, 2)
    assert [c[0] for c in fetch.calls] == [Tile(0, 0), Tile(0, 1), Tile(0, 2), Tile(0, 0)]
    assert Tile(0, 2) not in cache
    with pytest.raises(ValueError, match="max_tiles"):
        TileCache(0)


def test_level_zero_reads_never_evict_the_upper_levels() -> None:
    """Scattered leaves churn the level-0 LRU; the tiles above have their own."""
    _, store, _, levels = tree_1e5()
    cache = TileCache(max_tiles=2, max_upper_tiles=1)
    n = 256 * 256 + 256 * 3  # full tile 1/0, partial tile 1/1 (width 3)
    fetch = RecordingFetch(store)
    for i in range(6):
        TileHashReader(n, fetch, cache).read_hashes([(0, 256 * i), (8, 5)])
    assert Tile(1, 0) in cache
    assert fetch.tiles.count(Tile(1, 0)) == 1
    assert len(cache) == 3
    TileHashReader(n, fetch, cache).read_hashes([(8, 256)])  # tile 1/1.p/3 evicts 1/0
    assert Tile(1, 0) not in cache
    assert Tile(1, 1, 3) in cache
    assert Tile(0, 5) in cache  # level 0 untouched
    assert TileHashReader(n, fetch, cache).read_hashes([(8, 256)]) == levels.at(n).read_hashes(
        [(8, 256)]
    )
    with pytest.raises(ValueError, match="max_upper_tiles must be at least 1, got 0"):
        TileCache(4, max_upper_tiles=0)


def test_tile_bytes_are_added_as_they_are_and_expanded_when_asked() -> None:
    _, store, _, levels = tree_1e5()
    cache = TileCache(8)
    full = bytes(store[(0, 3)])
    cache.add(Tile(0, 3), full)
    assert cache.tile_data(Tile(0, 3)) == full
    assert cache.tile_data(Tile(0, 3, 17)) == full[: 17 * 32]  # cut from the full tile
    assert cache.tile_data(Tile(0, 4)) is None
    assert (cache.hits, cache.misses) == (2, 1)
    # A partial tile at one width: served at that width only (until the full one is cached).
    cache.add(Tile(1, 0, 9), bytes(store[(1, 0)])[: 9 * 32])
    assert cache.tile_data(Tile(1, 0, 9)) == bytes(store[(1, 0)])[: 9 * 32]
    assert cache.tile_data(Tile(1, 0, 8)) is None
    # Added tiles serve proofs: no fetch, and the same hashes as the tree's.
    coords = [(0, 3 * 256 + 7), (5, 3 * 8 + 1), (9, 3)]
    n = 9 * 256 + 100  # tile 1/0 is 9 wide
    assert TileHashReader(n, cache=cache).read_hashes(coords) == levels.at(n).read_hashes(coords)
    with pytest.raises(MerkleFormatError, match=r"tile tile/0/005 is 8160 bytes, expected 8192"):
        cache.add(Tile(0, 5), full[:-32])
    with pytest.raises(ValueError, match="tile/entries/000 is an entry bundle"):
        cache.add(Tile(-1, 0), full)


def test_reader_rejects_bad_tiles_and_misuse() -> None:
    _, store, _, _ = tree_1e5()
    n = 1000

    def short(tiles: Sequence[Tile]) -> list[bytes]:
        return [bytes(store[(t.level, t.index)][: t.width * 32 - 1]) for t in tiles]

    def fewer(tiles: Sequence[Tile]) -> list[bytes]:
        return []

    with pytest.raises(
        MerkleFormatError,
        match=r"tile tile/0/003\.p/232 is too short: expected 7424 bytes, got 7423",
    ):
        TileHashReader(n, short).read_hashes([(0, 999)])
    with pytest.raises(MerkleFormatError, match="returned 0 tiles for 1 requested"):
        TileHashReader(n, fewer).read_hashes([(0, 999)])
    reader = TileHashReader(n, RecordingFetch(store))
    for coord in [(0, 1000), (3, 125), (10, 0), (-1, 0), (0, -1)]:
        with pytest.raises(ValueError, match="not a complete subtree"):
            reader.read_hashes([coord])
    with pytest.raises(ValueError, match="non-negative"):
        TileHashReader(-1, RecordingFetch(store))


def test_reader_propagates_fetch_errors_and_recovers() -> None:
    """The server's fetch raises to ask for a reload, then retries with a new reader."""
    _, store, _, levels = tree_1e5()

    class Reload(Exception):
        pass

    def failing(tiles: Sequence[Tile]) -> list[bytes]:
        raise Reload

    cache = TileCache()
    with pytest.raises(Reload):
        inclusion_proof(5, 1000, TileHashReader(1000, failing, cache))
    assert len(cache) == 0
    assert inclusion_proof(5, 1000, TileHashReader(1000, RecordingFetch(store), cache)) == (
        inclusion_proof(5, 1000, levels.at(1000))
    )


@PROPERTY
@given(
    n=st.one_of(
        st.integers(1, MAX_N),
        st.integers(1, 16).map(lambda e: 1 << e),
        st.integers(1, 390).map(lambda k: k * 256),
    ),
    data=st.data(),
)
def test_tile_reader_equals_memory_reader(n: int, data: st.DataObject) -> None:
    leaves, store, _, levels = tree_1e5()
    i = data.draw(st.integers(0, n - 1), label="index")
    m = data.draw(st.integers(1, n), label="old size")
    exact = data.draw(st.booleans(), label="exact-width fetch")
    mem = levels.at(n)
    fetch = RecordingFetch(store, exact=exact)
    cache = data.draw(st.sampled_from([SHARED_CACHE, None]), label="cache")
    root = tree_hash(n, TileHashReader(n, fetch, cache))
    assert root == tree_hash(n, mem)
    proof = inclusion_proof(i, n, TileHashReader(n, fetch, cache))
    assert proof == inclusion_proof(i, n, mem)
    verify_inclusion(leaves[i], i, n, proof, root)
    cproof = consistency_proof(m, n, TileHashReader(n, fetch, cache))
    assert cproof == consistency_proof(m, n, mem)
    verify_consistency(m, n, tree_hash(m, levels.at(m)), root, cproof)
    assert len(fetch.calls) <= 3  # at most one fetch per proof
    for call in fetch.calls:
        assert len(set(call)) == len(call)
        for t in call:
            assert t.width == expected_width(n, t.level, t.index)


# -- a tree of a million leaves: O(log n) tiles per proof -----------------------------


def test_million_leaf_tree_proofs_read_o_log_n_tiles() -> None:
    leaves, store, cr = tree_1e6()
    n = cr.tree_size
    assert n == 10**6
    root = cr.root()
    assert root == root_hash(leaves)
    assert len(store) == len(tiles_for_size(n))
    # 3 tile levels at 10**6 (256**2 < 10**6 < 256**3); a proof needs, per
    # level, at most the tile on its path and the right-edge tile.
    tile_bound = 2 * 3
    coord_bound = 2 * n.bit_length() + 1
    for i in (0, 1, 255, 256, 65535, 65536, 123456, 500000, 999743, 999999):
        fetch = RecordingFetch(store)
        reader = TileHashReader(n, fetch, TileCache())
        counted = CountingReader(reader)
        proof = inclusion_proof(i, n, counted)
        assert counted.calls == 1
        assert len(counted.coords) <= coord_bound
        assert len(fetch.calls) == 1
        assert len(fetch.tiles) <= tile_bound
        verify_inclusion(leaves[i], i, n, proof, root)
    old_sizes = (1, 7, 256, 65536, 300001, 999999)
    old_roots = {m: root_hash(leaves[:m]) for m in old_sizes if m < 70000}
    for m in old_sizes:
        fetch = RecordingFetch(store)
        counted = CountingReader(TileHashReader(n, fetch, TileCache()))
        proof = consistency_proof(m, n, counted)
        assert counted.calls == 1
        assert len(counted.coords) <= coord_bound
        assert len(fetch.calls) == 1
        assert len(fetch.tiles) <= tile_bound + 1  # + the tile of the old tree's last subtree
        old_root = old_roots.get(m) or tree_hash(m, TileHashReader(m, RecordingFetch(store)))
        verify_consistency(m, n, old_root, root, proof)


class CountingReader:
    def __init__(self, inner: TileHashReader) -> None:
        self.inner = inner
        self.calls = 0
        self.coords: list[tuple[int, int]] = []

    def read_hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        self.calls += 1
        self.coords.extend(coords)
        return self.inner.read_hashes(coords)


# -- checking tiles: verify_tile, tile_root, verify_tree_root ------------------------------


def flip(data: bytes | bytearray, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1
    return bytes(out)


def test_a_level_0_tile_holds_the_leaf_hashes_of_its_entries() -> None:
    entries = [f"entry {i}".encode() for i in range(256 + 5)]
    tile = Tile(0, 1, 5)
    data = b"".join(leaf_hash(e) for e in entries[256:])
    verify_tile(tile, data, entries[256:])
    with pytest.raises(TileMismatchError) as info:
        verify_tile(tile, flip(data, 2 * 32 + 7), entries[256:])
    assert str(info.value).startswith("tile/0/001.p/5: hash 2 is ")
    assert f"expected {leaf_hash(entries[258]).hex()}, the leaf hash of entry 258" in str(
        info.value
    )
    with pytest.raises(TileMismatchError, match="hash 0 is"):
        verify_tile(tile, data, [b"other", *entries[257:]])


def test_a_higher_tile_holds_the_roots_of_the_full_tiles_below() -> None:
    store, _ = build_tiles(leaf_hashes(3 * 256 + 1))
    tile = Tile(1, 0, 3)
    roots = [tile_root(bytes(store[(0, k)])) for k in range(3)]
    assert roots[1] == root_hash([bytes(store[(0, 1)][i : i + 32]) for i in range(0, 8192, 32)])
    verify_tile(tile, bytes(store[(1, 0)]), roots)
    with pytest.raises(TileMismatchError) as info:
        verify_tile(tile, flip(store[(1, 0)], 64), roots)
    assert str(info.value).startswith("tile/1/000.p/3: hash 2 is ")
    assert str(info.value).endswith(f"expected {roots[2].hex()}, the root of tile/0/002")


def test_verify_tile_refuses_wrong_shapes() -> None:
    with pytest.raises(TileMismatchError, match=r"tile/0/000.p/2 is 33 bytes, expected 64"):
        verify_tile(Tile(0, 0, 2), b"\x00" * 33, [b"a", b"b"])
    with pytest.raises(TileMismatchError, match="has 1 entries in its entry bundle, expected 2"):
        verify_tile(Tile(0, 0, 2), leaf_hash(b"a") + leaf_hash(b"b"), [b"a"])
    with pytest.raises(TileMismatchError, match="has 3 roots of tiles below, expected 1"):
        verify_tile(Tile(1, 0, 1), b"\x00" * 32, [b"\x00" * 32] * 3)
    with pytest.raises(ValueError, match="entry bundle"):
        verify_tile(Tile(ENTRY_LEVEL, 0, 1), b"\x00" * 32, [b"x"])
    with pytest.raises(ValueError, match="full tile"):
        tile_root(b"\x00" * 64)


def test_the_tiles_must_produce_the_checkpoint_root() -> None:
    store, cr = build_tiles(leaf_hashes(1000))
    fetch = RecordingFetch(store)
    good = Checkpoint("example.org/log", 1000, cr.root())
    verify_tree_root(good, TileHashReader(1000, fetch))
    bad = Checkpoint("example.org/log", 1000, hashlib.sha256(b"another tree").digest())
    with pytest.raises(TileMismatchError) as info:
        verify_tree_root(bad, TileHashReader(1000, fetch))
    assert str(info.value) == (
        f"the tiles of 'example.org/log' at tree size 1000 produce root {cr.root().hex()}, "
        f"expected {bad.root_hash.hex()} (the signed checkpoint's)"
    )


# -- a real log written by trillian-tessera ------------------------------------------------


def _tessera() -> tuple[Path, list[bytes], dict[int, bytes]]:
    meta = load_vector("tessera-testdata-log.json")
    log = VECTORS / meta["dir"]
    entries = [e.encode() for e in meta["entries_in_order"]]
    roots = {}
    for size in range(len(entries) + 1):
        lines = (log / f"checkpoint.{size}").read_text().split("\n")
        assert lines[0] == meta["origin"]
        assert int(lines[1]) == size
        roots[size] = base64.b64decode(lines[2])
    return log, entries, roots


def test_tessera_log_tiles_and_bundles() -> None:
    log, entries, _ = _tessera()
    for size in range(1, len(entries) + 1):
        path = f"tile/0/000.p/{size}"
        assert parse_tile_path(path) == Tile(0, 0, size)
        tile = (log / path).read_bytes()
        bundle = (log / f"tile/entries/000.p/{size}").read_bytes()
        got = decode_entry_bundle(bundle, expected_count=size)
        assert got == entries[:size]
        assert encode_entry_bundle(got) == bundle
        assert tile == b"".join(leaf_hash(e) for e in got)
        assert tiles_for_size(size) == [Tile(0, 0, size)]


def test_tessera_log_proofs_verify_against_its_checkpoints() -> None:
    log, entries, roots = _tessera()

    def fetch(tiles: Sequence[Tile]) -> list[bytes]:
        return [(log / t.path).read_bytes() for t in tiles]

    assert tree_hash(0, TileHashReader(0, fetch)) == roots[0]
    for n in range(1, len(entries) + 1):
        reader = TileHashReader(n, fetch)
        assert tree_hash(n, reader) == roots[n]
        for i in range(n):
            verify_inclusion(leaf_hash(entries[i]), i, n, inclusion_proof(i, n, reader), roots[n])
        for m in range(1, n + 1):
            verify_consistency(m, n, roots[m], roots[n], consistency_proof(m, n, reader))


# -- a growing right edge ----------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(widths=st.lists(st.integers(1, TILE_WIDTH), min_size=2, max_size=6))
def test_a_tile_grown_from_a_narrower_copy_has_the_inner_nodes_of_a_fresh_one(
    widths: list[int],
) -> None:
    """The cache grows a wider partial tile from the narrower one it holds (only the
    new nodes hashed); every level equals hashing the wider tile from scratch."""
    hashes = b"".join(hashlib.sha256(bytes([i, i >> 8])).digest() for i in range(TILE_WIDTH))
    cache = TileCache(16)
    for width in sorted(set(widths)):
        data = hashes[: width * 32]
        expanded = cache._expand(3, 7, data)
        fresh = _ExpandedTile(data)
        for r in range(9):
            assert expanded.level(r) == fresh.level(r), (width, r)
        cache._put(3, 7, width, expanded)


def test_a_tile_that_does_not_extend_the_cached_one_is_expanded_afresh() -> None:
    """A different tile at the same coordinates (another log's, a corrupted read)
    never inherits the cached one's inner nodes."""
    a = b"".join(hashlib.sha256(b"a%d" % i).digest() for i in range(8))
    b = b"".join(hashlib.sha256(b"b%d" % i).digest() for i in range(16))
    cache = TileCache(16)
    narrow = cache._expand(0, 0, a)
    narrow.level(3)
    cache._put(0, 0, 8, narrow)
    wide = cache._expand(0, 0, b)
    assert wide.level(3) == _ExpandedTile(b).level(3)
