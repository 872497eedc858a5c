"""c2sp.org/tlog-tiles: tile coordinates, paths, entry bundles, proofs from tiles.

Tiles have height 8 (256 hashes). Tile ``(level L, index N)`` holds the hashes
of the complete subtrees at tree level ``8*L`` with indexes ``256*N ..
256*N + width - 1``. A tile is full at width 256; a partial tile of width W
is served at ``.p/<W>`` and is a prefix of the full tile it grows into.

A subtree hash at tree level ``8*L + r`` (``0 < r < 8``) is not stored: it is
the root of ``2**r`` consecutive hashes of tile ``L``, recomputed by expanding
the tile (hashing its 8-level subtree). Expanded full tiles are kept in a
shared :class:`TileCache`, so each inner node of a full tile is hashed once
per process, however many proofs use it.

Tiles fetched from a log are checked with :func:`verify_tile` (a level-0
tile against the entries of its entry bundle, a higher tile against the
roots of the full tiles below it) and :func:`verify_tree_root` (the tiles
against the signed checkpoint's root). Those are pure: fetching is the
caller's, through a :data:`TileFetcher`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from hashlib import sha256 as _sha256
from typing import TYPE_CHECKING

from firmlog.client.errors import MerkleFormatError, TileMismatchError, TilePathError
from firmlog.client.merkle import HASH_SIZE, HashReader, leaf_hash, root_hash, tree_hash

if TYPE_CHECKING:
    from firmlog.client.checkpoint import Checkpoint

__all__ = [
    "ENTRY_LEVEL",
    "MAX_ENTRY_SIZE",
    "MAX_TILE_LEVEL",
    "SUMMARY_SIZE",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Tile",
    "TileCache",
    "TileFetcher",
    "TileHashReader",
    "TileRead",
    "decode_entry_bundle",
    "encode_entry_bundle",
    "encode_index",
    "parse_tile_path",
    "tile_for_hash",
    "tile_root",
    "tile_summary",
    "tile_width",
    "tiles_for_hashes",
    "tiles_for_size",
    "tiles_touched",
    "verify_tile",
    "verify_tree_root",
]

TILE_HEIGHT = 8
TILE_WIDTH = 256  # 2**TILE_HEIGHT; TileHashReader.read_hashes spells both as shifts
ENTRY_LEVEL = -1  # the level used for entry bundles, whose path says "entries"
MAX_TILE_LEVEL = 63
MAX_ENTRY_SIZE = 0xFFFF  # an entry bundle length prefix is a uint16

_NODE_HASHER = _sha256(b"\x01")  # copied, then fed a pair of child hashes
_MAX_INDEX_GROUPS = 7  # 2**64 - 1 has 20 digits: x018/x446/x744/x073/x709/x551/615


@dataclass(frozen=True, slots=True)
class Tile:
    """A tile (level >= 0) or an entry bundle (level == ENTRY_LEVEL) of ``width`` items."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not ENTRY_LEVEL <= self.level <= MAX_TILE_LEVEL:
            raise ValueError(
                f"tile level must be {ENTRY_LEVEL} (entries) or 0..{MAX_TILE_LEVEL}, "
                f"got {self.level}"
            )
        if self.index < 0:
            raise ValueError(f"tile index must be non-negative, got {self.index}")
        if not 1 <= self.width <= TILE_WIDTH:
            raise ValueError(f"tile width must be 1..{TILE_WIDTH}, got {self.width}")

    @property
    def is_full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def path(self) -> str:
        """``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]`` (no leading slash)."""
        level = "entries" if self.level == ENTRY_LEVEL else str(self.level)
        suffix = "" if self.width == TILE_WIDTH else f".p/{self.width}"
        return f"tile/{level}/{encode_index(self.index)}{suffix}"


TileFetcher = Callable[[Sequence[Tile]], Sequence[bytes]]
"""``fetch(tiles)``: the bytes of each tile asked for, in order (see :class:`TileHashReader`)."""


def encode_index(n: int) -> str:
    """1234067 -> 'x001/x234/067'."""
    if n < 0:
        raise ValueError(f"tile index must be non-negative, got {n}")
    digits = str(n)
    digits = digits.zfill(-(-len(digits) // 3) * 3)
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


def _is_decimal(s: str) -> bool:
    """ASCII digits only (str.isdigit alone accepts '²' and other scripts)."""
    return s.isascii() and s.isdigit()


def _canonical_decimal(s: str) -> bool:
    return _is_decimal(s) and (s == "0" or not s.startswith("0"))


def parse_tile_path(path: str) -> Tile:
    """Strict inverse of :attr:`Tile.path` (a leading slash is tolerated).

    Rejects non-canonical forms (leading zeros missing or extra, ``.p/256``,
    width 0, level above 63...) with TilePathError.
    """
    shape = "expected tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>]"
    p = path[1:] if path.startswith("/") else path
    if not p.startswith("tile/"):
        raise TilePathError(f"not a tile path: {path!r}: {shape}")
    level_str, sep, rest = p[len("tile/") :].partition("/")
    if not sep:
        raise TilePathError(f"tile path {path!r} has no index: {shape}")
    if level_str == "entries":
        level = ENTRY_LEVEL
    else:
        if not _canonical_decimal(level_str):
            raise TilePathError(
                f"tile path {path!r} has level {level_str!r}: expected 'entries' or a "
                f"decimal integer 0..{MAX_TILE_LEVEL} without leading zeros"
            )
        level = int(level_str) if len(level_str) <= 2 else MAX_TILE_LEVEL + 1
        if level > MAX_TILE_LEVEL:
            raise TilePathError(
                f"tile path {path!r} has level {level_str}: expected at most {MAX_TILE_LEVEL}"
            )

    index_str, dot_p, width_str = rest.partition(".p/")
    width = TILE_WIDTH
    if dot_p:
        if not _canonical_decimal(width_str):
            raise TilePathError(
                f"tile path {path!r} has width {width_str!r}: expected a decimal "
                f"integer 1..{TILE_WIDTH - 1} without leading zeros"
            )
        if len(width_str) > 3 or not 1 <= int(width_str) < TILE_WIDTH:
            raise TilePathError(
                f"tile path {path!r} has width {width_str}: expected 1..{TILE_WIDTH - 1} "
                "(a full tile has no .p/ suffix)"
            )
        width = int(width_str)

    groups = index_str.split("/")
    if len(groups) > _MAX_INDEX_GROUPS:
        raise TilePathError(
            f"tile path {path!r} has an index of {len(groups)} groups: "
            f"expected at most {_MAX_INDEX_GROUPS} (a 64-bit index)"
        )
    digits: list[str] = []
    for i, group in enumerate(groups):
        last = i == len(groups) - 1
        body = group if last else group[1:]
        if (not last and not group.startswith("x")) or len(body) != 3 or not _is_decimal(body):
            want = "3 digits" if last else "'x' and 3 digits"
            raise TilePathError(f"tile path {path!r} has index element {group!r}: expected {want}")
        digits.append(body)
    index = int("".join(digits))
    if encode_index(index) != index_str:
        raise TilePathError(
            f"tile path {path!r} encodes index {index} non-canonically: "
            f"expected {encode_index(index)!r}, got {index_str!r}"
        )
    return Tile(level, index, width)


def tile_width(tree_size: int, level: int, index: int) -> int:
    """How many hashes hash tile ``(level, index)`` holds at ``tree_size`` (0: none yet)."""
    count = tree_size >> (TILE_HEIGHT * level)  # hashes stored at this tile level
    return max(0, min(TILE_WIDTH, count - index * TILE_WIDTH))


def tiles_for_size(tree_size: int) -> list[Tile]:
    """Every hash tile (not entry bundle) of a tree of ``tree_size`` leaves, full and partial."""
    return tiles_touched(0, tree_size)


def tiles_touched(old_size: int, new_size: int) -> list[Tile]:
    """The hash tiles that gain hashes when the tree grows from ``old_size`` to
    ``new_size``, at their widths at ``new_size``, level by level.

    ``tiles_touched(0, n)`` is every tile of the tree; the partial tiles of
    ``old_size`` among them are what :func:`firmlog.client.integrate.integrate`
    reads (:func:`~firmlog.client.integrate.edge_tiles`).
    """
    for size in (old_size, new_size):
        if size < 0:
            raise ValueError(f"tree_size must be non-negative, got {size}")
    if new_size < old_size:
        raise ValueError(f"old_size {old_size} is larger than new_size {new_size}")
    tiles: list[Tile] = []
    level = 0
    old_n, new_n = old_size, new_size  # hashes stored at this tile level
    while new_n > old_n:
        full, partial = divmod(new_n, TILE_WIDTH)
        tiles.extend(Tile(level, i) for i in range(old_n // TILE_WIDTH, full))
        if partial:
            tiles.append(Tile(level, full, partial))
        level += 1
        old_n >>= TILE_HEIGHT
        new_n >>= TILE_HEIGHT
    return tiles


def _check_coord(tree_size: int, level: int, index: int) -> None:
    if (
        level < 0
        or index < 0
        or level >= tree_size.bit_length()  # also keeps the shift below small
        or (index + 1) << level > tree_size
    ):
        raise ValueError(
            f"subtree ({level}, {index}) is not a complete subtree of a tree of size {tree_size}"
        )


def tile_for_hash(tree_size: int, level: int, index: int) -> Tile:
    """The tile (with its width at ``tree_size``) that holds or computes ``(level, index)``.

    Raises ValueError unless ``(level, index)`` is a complete subtree of the tree.
    """
    _check_coord(tree_size, level, index)
    tile_level, r = divmod(level, TILE_HEIGHT)
    tile_index = (index << r) >> TILE_HEIGHT
    return Tile(tile_level, tile_index, tile_width(tree_size, tile_level, tile_index))


def tiles_for_hashes(tree_size: int, coords: Iterable[tuple[int, int]]) -> list[Tile]:
    """The distinct tiles of a tree of ``tree_size`` that hold or compute these
    complete subtrees (as :func:`tile_for_hash`), in order of first need.

    With a :class:`~firmlog.client.merkle.ProofPlan`'s ``nodes``: every tile the
    proof reads, so that a caller fetches them at once before computing.
    Raises ValueError unless every ``(level, index)`` is a complete subtree.
    """
    return list(dict.fromkeys(tile_for_hash(tree_size, level, index) for level, index in coords))


def encode_entry_bundle(entries: Iterable[bytes]) -> bytes:
    """Concatenate entries each prefixed by its big-endian uint16 length.

    Raises ValueError for an entry longer than 65535 bytes.
    """
    parts: list[bytes] = []
    for i, entry in enumerate(entries):
        if len(entry) > MAX_ENTRY_SIZE:
            raise ValueError(
                f"entry {i} is {len(entry)} bytes: an entry bundle holds at most "
                f"{MAX_ENTRY_SIZE} bytes per entry"
            )
        parts.append(len(entry).to_bytes(2, "big"))
        parts.append(entry)
    return b"".join(parts)


def decode_entry_bundle(data: bytes, expected_count: int | None = None) -> list[bytes]:
    """Strict inverse of encode_entry_bundle (MerkleFormatError on bad data).

    With ``expected_count``, the bundle must hold exactly that many entries.
    """
    if expected_count is not None and expected_count < 0:
        raise ValueError(f"expected_count must be non-negative, got {expected_count}")
    data = bytes(data)
    entries: list[bytes] = []
    pos = 0
    end = len(data)
    while pos < end:
        if expected_count is not None and len(entries) == expected_count:
            raise MerkleFormatError(
                f"entry bundle has trailing data: expected {expected_count} entries, "
                f"found {end - pos} more bytes after them"
            )
        if end - pos < 2:
            raise MerkleFormatError(
                f"entry bundle is truncated: entry {len(entries)} at offset {pos} needs "
                f"a 2-byte length, got {end - pos} byte"
            )
        size = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if end - pos < size:
            raise MerkleFormatError(
                f"entry bundle is truncated: entry {len(entries)} at offset {pos - 2} "
                f"declares {size} bytes, got {end - pos}"
            )
        entries.append(data[pos : pos + size])
        pos += size
    if expected_count is not None and len(entries) != expected_count:
        raise MerkleFormatError(
            f"entry bundle has wrong entry count: expected {expected_count}, got {len(entries)}"
        )
    return entries


# -- checking tiles ------------------------------------------------------------------


def _split_hashes(data: bytes) -> list[bytes]:
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def tile_root(data: bytes) -> bytes:
    """The root of a full tile's 256 hashes: what the tile above holds for it.

    ValueError unless ``data`` is exactly one full tile (8192 bytes).
    """
    if len(data) != TILE_WIDTH * HASH_SIZE:
        raise ValueError(
            f"a full tile is {TILE_WIDTH * HASH_SIZE} bytes, got {len(data)}: "
            "only full tiles have a root in the tile above"
        )
    return root_hash(_split_hashes(data))


def verify_tile(tile: Tile, data: bytes, below: Sequence[bytes]) -> None:
    """Check that ``data`` is what hash tile ``tile`` must hold, given what lies below it.

    A level-0 tile holds the leaf hashes (RFC 6962) of the entries of its
    entry bundle: ``below`` is those entries, in order. A tile of level
    ``L > 0`` holds the roots of the full tiles of level ``L - 1`` under it:
    ``below`` is those roots (:func:`tile_root` of each), in order. ``data``
    must be ``tile.width`` hashes and ``below`` hold ``tile.width`` items.

    Raises TileMismatchError naming the first hash that differs: keep
    nothing of the tile. An entry bundle (level ENTRY_LEVEL) is a ValueError.
    """
    if tile.level < 0:
        raise ValueError(f"{tile.path} is an entry bundle, not a hash tile")
    want_size = tile.width * HASH_SIZE
    if len(data) != want_size:
        raise TileMismatchError(f"{tile.path} is {len(data)} bytes, expected {want_size}")
    if len(below) != tile.width:
        what = "entries in its entry bundle" if tile.level == 0 else "roots of tiles below"
        raise TileMismatchError(f"{tile.path} has {len(below)} {what}, expected {tile.width}")
    first = tile.index * TILE_WIDTH
    for k, h in enumerate(_split_hashes(data)):
        if tile.level == 0:
            want = leaf_hash(below[k])
            if h != want:
                raise TileMismatchError(
                    f"{tile.path}: hash {k} is {h.hex()}, expected {want.hex()}, the leaf hash "
                    f"of entry {first + k}"
                )
        elif h != below[k]:
            child = Tile(tile.level - 1, first + k)
            raise TileMismatchError(
                f"{tile.path}: hash {k} is {h.hex()}, expected {bytes(below[k]).hex()}, "
                f"the root of {child.path}"
            )


def verify_tree_root(checkpoint: Checkpoint, hashes: HashReader) -> None:
    """Check that the tiles behind ``hashes`` produce ``checkpoint``'s root.

    ``hashes`` reads the log's tiles at ``checkpoint.tree_size`` (a
    :class:`TileHashReader`). Raises TileMismatchError if they give another
    root: the tiles and the signed checkpoint are not one tree.
    """
    got = tree_hash(checkpoint.tree_size, hashes)
    if got != checkpoint.root_hash:
        raise TileMismatchError(
            f"the tiles of {checkpoint.origin!r} at tree size {checkpoint.tree_size} produce "
            f"root {got.hex()}, expected {checkpoint.root_hash.hex()} (the signed checkpoint's)"
        )


# -- proofs from tiles -------------------------------------------------------------


_SUMMARY_LEVEL = 4
"""A full tile's summary holds its 16 subtree hashes this many levels above its own."""

_SPARING_NODES = 16
"""Nodes of a summarized tile hashed one by one (two inclusion proofs' worth)
before its inner levels are hashed whole and kept: a tile a third proof uses
is likely to be used often (the upper levels, a hot range of leaves)."""

SUMMARY_SIZE = (TILE_WIDTH >> _SUMMARY_LEVEL) * HASH_SIZE
"""Bytes of a full tile's summary (:func:`tile_summary`): 16 hashes, 512 bytes."""


def tile_summary(data: bytes) -> bytes:
    """The summary of a full hash tile: the 16 subtree hashes 4 levels above its
    256 hashes. With it, the 8 inner nodes an inclusion proof takes from the tile
    are hashed from 22 nodes instead of 254 (:class:`TileCache`); storage keeps it
    beside each full tile. ValueError unless ``data`` is a full tile's bytes."""
    if len(data) != TILE_WIDTH * HASH_SIZE:
        raise ValueError(
            f"a summary is of a full tile ({TILE_WIDTH * HASH_SIZE} bytes), got {len(data)}"
        )
    level = bytes(data)
    for _ in range(_SUMMARY_LEVEL):
        level = _parents(level, 0)
    return level


class _ExpandedTile:
    """A tile's hashes and the inner levels of its 8-level subtree, hashed on demand.

    ``levels[r]`` is the concatenation of the ``width >> r`` complete subtree
    hashes ``r`` levels above the tile's own hashes. Two adjacent children are
    adjacent 64 bytes of the level below, so a parent is SHA-256(0x01 || slice).

    A full tile read again after the cache dropped it comes with its
    ``summary`` (``levels[4]``, kept by the cache): a node is then hashed
    from the 16 hashes under it, or the 8 summary hashes at most, not by
    hashing whole levels: 22 hashes for the 8 nodes an inclusion proof
    takes from a tile, instead of 254.
    """

    __slots__ = ("levels", "sparing", "summary")

    def __init__(self, data: bytes, summary: bytes | None = None) -> None:
        self.levels = [data]
        self.summary = summary
        self.sparing = _SPARING_NODES  # nodes left to hash from the summary alone

    def node(self, r: int, offset: int) -> bytes:
        """The hash at byte ``offset`` of ``levels[r]``: looked up if that level
        is hashed already; else, with a summary, that one node hashed from the
        fewest hashes (for the first nodes asked for: a tile read for one proof
        and evicted unused); else by hashing the levels up to ``r``, kept for
        every later lookup (a tile that many proofs use)."""
        levels = self.levels
        if r < len(levels):
            return levels[r][offset : offset + HASH_SIZE]
        summary = self.summary
        if summary is None or self.sparing <= 0:
            return self.level(r)[offset : offset + HASH_SIZE]
        self.sparing -= 1
        if r >= _SUMMARY_LEVEL:
            shift, below = r - _SUMMARY_LEVEL, summary
        else:
            shift, below = r, levels[0]
        start = offset << shift
        hashes = below[start : start + (HASH_SIZE << shift)]
        while len(hashes) > HASH_SIZE:
            hashes = _parents(hashes, 0)
        return hashes

    def summarized(self) -> bytes | None:
        """The summary of this full tile, if known: ``levels[4]``."""
        if len(self.levels) > _SUMMARY_LEVEL:
            return self.levels[_SUMMARY_LEVEL]
        return self.summary

    def level(self, r: int) -> bytes:
        levels = self.levels
        while len(levels) <= r:
            if len(levels) == _SUMMARY_LEVEL and self.summary is not None:
                levels.append(self.summary)
            else:
                levels.append(_parents(levels[-1], 0))
        return levels[r]

    def grown(self, data: bytes) -> _ExpandedTile:
        """The tile ``data``, which begins with this tile's hashes (the same tile at
        a larger width): the inner levels hashed already are kept, and only the
        nodes over the new hashes are hashed."""
        grown = _ExpandedTile(data)
        for r in range(1, len(self.levels)):
            known = self.levels[r]
            grown.levels.append(known + _parents(grown.levels[r - 1], len(known) * 2))
        return grown


def _parents(below: bytes, start: int) -> bytes:
    """The parents of the complete pairs of hashes in ``below`` from byte ``start``."""
    view = memoryview(below)
    step = 2 * HASH_SIZE
    hashes: list[bytes] = []
    for i in range(start, len(view) // step * step, step):
        h = _NODE_HASHER.copy()
        h.update(view[i : i + step])
        hashes.append(h.digest())
    return b"".join(hashes)


class TileCache:
    """An LRU of expanded tiles, shared by many TileHashReaders (not thread-safe).

    Keys are ``(level, index, width)``: a full tile never changes, and neither
    does a partial tile of a given width (``tile/L/N.p/W`` is immutable), so
    both are shared; a partial tile is also served from the full tile it grew
    into when that is cached. Use one cache per log. ``hits`` and ``misses``
    count lookups, for metrics.

    Level-0 tiles (one per 256 leaves) and the tiles above them (1/256 as
    many, and needed by every proof) are kept in two LRUs, of ``max_tiles``
    and ``max_upper_tiles`` tiles (default: ``max_tiles``): reads scattered
    over a large tree's level-0 tiles never evict the upper levels.
    A tile is held as its hashes; its inner nodes are hashed when first asked
    for, and then kept with it.

    When a full tile whose inner nodes were hashed leaves the cache, a
    summary of them stays: the SHA-256 of the tile's bytes and its 16
    hashes 4 levels up (544 bytes, against about 16 KiB for the expanded
    tile), in an LRU of ``max_summaries`` (default: ``10 * max_tiles``).
    When the same bytes are read again, a proof hashes 22 nodes from them,
    not 254 (see :class:`_ExpandedTile`); other bytes at those coordinates
    are expanded afresh.
    """

    def __init__(
        self,
        max_tiles: int = 4096,
        max_upper_tiles: int | None = None,
        max_summaries: int | None = None,
    ) -> None:
        if max_upper_tiles is None:
            max_upper_tiles = max_tiles
        if max_summaries is None:
            max_summaries = 10 * max_tiles
        for name, value in (("max_tiles", max_tiles), ("max_upper_tiles", max_upper_tiles)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if max_summaries < 0:
            raise ValueError(f"max_summaries must be non-negative, got {max_summaries}")
        self.max_tiles = max_tiles
        self.max_upper_tiles = max_upper_tiles
        self.max_summaries = max_summaries
        self.hits = 0
        self.misses = 0
        self._tiles: OrderedDict[tuple[int, int, int], _ExpandedTile] = OrderedDict()  # level 0
        self._upper: OrderedDict[tuple[int, int, int], _ExpandedTile] = OrderedDict()
        # (level, index) of a full tile -> SHA-256 of its bytes + its levels[4].
        self._summaries: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        # The widest partial tile at each (level, index): a wider one grows from it.
        self._growing: dict[tuple[int, int], tuple[int, _ExpandedTile]] = {}

    def __len__(self) -> int:
        return len(self._tiles) + len(self._upper)

    def __contains__(self, tile: object) -> bool:
        """Whether this exact tile (a :class:`Tile`) is cached."""
        if not isinstance(tile, Tile):
            return False
        tiles = self._tiles if tile.level == 0 else self._upper
        return (tile.level, tile.index, tile.width) in tiles

    def tile_data(self, tile: Tile) -> bytes | None:
        """The hashes of hash tile ``tile`` if cached (cut from the full tile it grew
        into when that is cached), else None. Counts a hit or a miss."""
        found = self._get(tile.level, tile.index, tile.width)
        if found is None:
            return None
        data = found.levels[0]
        size = tile.width * HASH_SIZE
        return data if len(data) == size else data[:size]

    def add(self, tile: Tile, data: bytes, summary: bytes | None = None) -> None:
        """Cache ``data``, the hashes of hash tile ``tile`` (exactly ``tile.width``
        of them: MerkleFormatError otherwise); its inner nodes are hashed later, if
        asked for (a growing partial tile keeps those of its narrower copy), from
        ``summary`` (:func:`tile_summary`, trusted as the caller's own) if given."""
        if tile.level < 0:
            raise ValueError(f"{tile.path} is an entry bundle, not a hash tile")
        if len(data) != tile.width * HASH_SIZE:
            raise MerkleFormatError(
                f"tile {tile.path} is {len(data)} bytes, expected {tile.width * HASH_SIZE}"
            )
        data = bytes(data)
        expanded = self._expand(tile.level, tile.index, data, summary)
        self._put(tile.level, tile.index, tile.width, expanded)

    def _get(self, level: int, index: int, width: int) -> _ExpandedTile | None:
        tiles = self._tiles if level == 0 else self._upper
        key = (level, index, TILE_WIDTH)
        found = tiles.get(key)
        if found is None and width != TILE_WIDTH:
            key = (level, index, width)
            found = tiles.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        tiles.move_to_end(key)
        return found

    def _put(self, level: int, index: int, width: int, tile: _ExpandedTile) -> None:
        if level == 0:
            tiles, limit = self._tiles, self.max_tiles
        else:
            tiles, limit = self._upper, self.max_upper_tiles
        key = (level, index, width)
        tiles[key] = tile
        tiles.move_to_end(key)
        while len(tiles) > limit:
            (old_level, old_index, old_width), old = tiles.popitem(last=False)
            if old_width == TILE_WIDTH:
                self._summarize(old_level, old_index, old)
        # A growing right edge is cached at its widest only: the narrower copies
        # (immutable, but rarely asked for again) leave room for other tiles.
        growing = self._growing
        narrower = growing.get((level, index))
        if width == TILE_WIDTH:
            if narrower is not None:
                del growing[(level, index)]
                tiles.pop((level, index, narrower[0]), None)
        elif narrower is None or width > narrower[0]:
            growing[(level, index)] = (width, tile)
            if narrower is not None:
                tiles.pop((level, index, narrower[0]), None)
            while len(growing) > self.max_tiles:  # a few per level in practice
                del growing[next(iter(growing))]

    def _summarize(self, level: int, index: int, tile: _ExpandedTile) -> None:
        summaries = self._summaries
        key = (level, index)
        if tile.summary is not None:
            # It came with one: kept here already (still for these bytes), or
            # stored with the tile, which storage gives again.
            if key in summaries:
                summaries.move_to_end(key)
            return
        summary = tile.summarized()
        if summary is None or not self.max_summaries:
            return
        summaries[key] = _sha256(tile.levels[0]).digest() + summary
        summaries.move_to_end(key)
        while len(summaries) > self.max_summaries:
            summaries.popitem(last=False)

    def _expand(
        self, level: int, index: int, data: bytes, summary: bytes | None = None
    ) -> _ExpandedTile:
        """``data`` (a tile's hashes) expanded, grown from a narrower copy of the
        same tile when one is cached: the right edge of a growing log changes
        by a few hashes per batch, and its inner nodes are hashed only once.
        A full tile gets ``summary`` (stored with it), else the summary kept of
        these very bytes, if any."""
        if len(data) == TILE_WIDTH * HASH_SIZE:
            if summary is not None and len(summary) == SUMMARY_SIZE:
                return _ExpandedTile(data, bytes(summary))
            kept = self._summaries.get((level, index))
            if kept is not None and _sha256(data).digest() == kept[:HASH_SIZE]:
                return _ExpandedTile(data, kept[HASH_SIZE:])
        found = self._growing.get((level, index))
        if found is not None:
            width, narrower = found
            if width * HASH_SIZE < len(data) and data.startswith(narrower.levels[0]):
                return narrower.grown(data)
        return _ExpandedTile(data)

    def clear(self) -> None:
        self._tiles.clear()
        self._upper.clear()
        self._summaries.clear()
        self._growing.clear()


class TileHashReader:
    """A :class:`~firmlog.client.merkle.HashReader` over tiles of a tree of ``tree_size``.

    ``fetch(tiles)`` returns the bytes of each requested tile (exactly
    ``width * 32`` bytes, or longer: a longer stored tile is truncated to the
    width asked for). Subtree hashes that sit between tile levels are computed
    from the tile below. Tiles are kept expanded in ``cache`` (an LRU shared
    across readers, see :class:`TileCache`) so that each inner node is hashed
    once; the partial tiles a reader used are also kept for the reader's life.

    Each ``read_hashes`` call calls ``fetch`` at most once, with every tile it
    lacks. Asking for a subtree that is not complete at ``tree_size`` is a
    ValueError; tile bytes that are too short are a MerkleFormatError.

    A caller whose fetching is asynchronous uses :meth:`start` instead: it
    fetches :attr:`TileRead.missing` itself, then :meth:`TileRead.supply`.
    """

    def __init__(
        self,
        tree_size: int,
        fetch: TileFetcher | None = None,
        cache: TileCache | None = None,
    ) -> None:
        if tree_size < 0:
            raise ValueError(f"tree_size must be non-negative, got {tree_size}")
        self.tree_size = tree_size
        self._fetch = fetch
        self._cache = cache if cache is not None else TileCache()
        self._partial: dict[tuple[int, int], _ExpandedTile] = {}

    def read_hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        read = self.start(coords)
        if read.missing:
            if self._fetch is None:
                paths = [t.path for t in read.missing]
                raise RuntimeError(f"tiles {paths} are not cached and this reader has no fetch")
            read.supply(self._fetch(read.missing))
        return read.hashes()

    def start(self, coords: Sequence[tuple[int, int]]) -> TileRead:
        """Look up the tiles of every subtree in ``coords``: a read with no I/O,
        whose :attr:`~TileRead.missing` tiles the caller fetches."""
        tree_size = self.tree_size
        cache = self._cache
        partial = self._partial
        # For every coord: its tile, the level within the tile, the byte offset.
        plan: list[tuple[tuple[int, int], int, int]] = []
        have: dict[tuple[int, int], _ExpandedTile] = {}
        missing: dict[tuple[int, int], Tile] = {}
        max_level = tree_size.bit_length()
        for level, index in coords:
            if level < 0 or index < 0 or level >= max_level or (index + 1) << level > tree_size:
                _check_coord(tree_size, level, index)  # raises with the message
            tile_level = level >> 3
            r = level & 7
            tile_index = (index << r) >> 8
            key = (tile_level, tile_index)
            plan.append((key, r, (index & ((TILE_WIDTH >> r) - 1)) * HASH_SIZE))
            if key in have or key in missing:
                continue
            width = (tree_size >> (tile_level << 3)) - (tile_index << 8)
            if width >= TILE_WIDTH:
                width = TILE_WIDTH
                found = cache._get(tile_level, tile_index, width)
            else:
                found = partial.get(key)
                if found is None:
                    found = cache._get(tile_level, tile_index, width)
                    if found is not None:
                        partial[key] = found
            if found is not None:
                have[key] = found
            else:
                missing[key] = Tile(tile_level, tile_index, width)
        return TileRead(self, plan, have, list(missing.values()))


class TileRead:
    """One read of subtree hashes from tiles, its I/O left to the caller.

    From :meth:`TileHashReader.start`. :attr:`missing` lists the tiles that
    are not cached (often none); the caller fetches them all, passes their
    bytes to :meth:`supply`, and takes :meth:`hashes`. The tiles found in the
    cache are held here, so that the cache evicting them while the caller
    fetches costs nothing.
    """

    __slots__ = ("_have", "_plan", "_reader", "missing")

    def __init__(
        self,
        reader: TileHashReader,
        plan: list[tuple[tuple[int, int], int, int]],
        have: dict[tuple[int, int], _ExpandedTile],
        missing: list[Tile],
    ) -> None:
        self._reader = reader
        self._plan = plan
        self._have = have
        self.missing = missing

    def supply(
        self, data: Sequence[bytes], summaries: Sequence[bytes | None] | None = None
    ) -> None:
        """The bytes of each :attr:`missing` tile, in order (MerkleFormatError if too
        short), and optionally the summary stored with each (None for none)."""
        wanted = self.missing
        if len(data) != len(wanted):
            raise MerkleFormatError(
                f"tile fetch returned {len(data)} tiles for {len(wanted)} requested"
            )
        if summaries is None:
            summaries = [None] * len(wanted)
        reader = self._reader
        have = self._have
        for tile, tile_data, summary in zip(wanted, data, summaries, strict=True):
            size = tile.width * HASH_SIZE
            if len(tile_data) < size:
                raise MerkleFormatError(
                    f"tile {tile.path} is too short: expected {size} bytes, got {len(tile_data)}"
                )
            expanded = reader._cache._expand(
                tile.level, tile.index, bytes(tile_data[:size]), summary
            )
            key = (tile.level, tile.index)
            reader._cache._put(tile.level, tile.index, tile.width, expanded)
            if not tile.is_full:
                reader._partial[key] = expanded
            have[key] = expanded
        self.missing = []

    def hashes(self) -> list[bytes]:
        """The hash of every subtree asked for, in order. RuntimeError if tiles
        are still missing."""
        if self.missing:
            raise RuntimeError(f"tiles {[t.path for t in self.missing]} were not supplied")
        have = self._have
        out: list[bytes] = []
        for key, r, offset in self._plan:
            source = have[key]
            levels = source.levels
            if r < len(levels):
                out.append(levels[r][offset : offset + HASH_SIZE])
            else:
                out.append(source.node(r, offset))
        return out
