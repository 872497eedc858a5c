"""c2sp.org/tlog-tiles: tile coordinates, paths, entry bundles, proofs from tiles.

Tiles have height 8 (256 hashes). Tile ``(level L, index N)`` holds the hashes
of the complete subtrees at tree level ``8*L`` with indexes ``256*N ..
256*N + width - 1``. A tile is full at width 256; a partial tile of width W
is served at ``.p/<W>`` and is a prefix of the full tile it grows into.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

TILE_HEIGHT = 8
TILE_WIDTH = 256
ENTRY_LEVEL = -1  # the level used for entry bundles, whose path says "entries"


@dataclass(frozen=True, slots=True)
class Tile:
    """A tile (level >= 0) or an entry bundle (level == ENTRY_LEVEL) of ``width`` items."""

    level: int
    index: int
    width: int = TILE_WIDTH

    @property
    def is_full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def path(self) -> str:
        """``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]`` (no leading slash)."""
        raise NotImplementedError


def encode_index(n: int) -> str:
    """1234067 -> 'x001/x234/067'."""
    raise NotImplementedError


def parse_tile_path(path: str) -> Tile:
    """Strict inverse of :attr:`Tile.path` (a leading slash is tolerated).

    Rejects non-canonical forms (leading zeros missing or extra, ``.p/256``,
    width 0, level above 63...) with TilePathError.
    """
    raise NotImplementedError


def tiles_for_size(tree_size: int) -> list[Tile]:
    """Every hash tile (not entry bundle) of a tree of ``tree_size`` leaves, full and partial."""
    raise NotImplementedError


def tile_for_hash(tree_size: int, level: int, index: int) -> Tile:
    """The tile (with its width at ``tree_size``) that holds or computes ``(level, index)``."""
    raise NotImplementedError


def encode_entry_bundle(entries: Iterable[bytes]) -> bytes:
    """Concatenate entries each prefixed by its big-endian uint16 length."""
    raise NotImplementedError


def decode_entry_bundle(data: bytes, expected_count: int | None = None) -> list[bytes]:
    """Strict inverse of encode_entry_bundle (MerkleFormatError/TilePathError on bad data)."""
    raise NotImplementedError


class TileHashReader:
    """A :class:`~firmlog.client.merkle.HashReader` over tiles of a tree of ``tree_size``.

    ``fetch(tiles)`` returns the bytes of each requested tile (exactly
    ``width * 32`` bytes, or longer: a longer stored tile is truncated to the
    width asked for). Subtree hashes that sit between tile levels are computed
    from the tile below. Full tiles, which never change, are kept in an LRU
    cache of ``cache_size`` tiles, expanded so that each inner node is hashed
    once; partial tiles are expanded once per reader.
    """

    def __init__(
        self,
        tree_size: int,
        fetch: Callable[[Sequence[Tile]], Sequence[bytes]],
        cache: TileCache | None = None,
    ) -> None:
        raise NotImplementedError

    def read_hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        raise NotImplementedError


class TileCache:
    """An LRU of expanded full tiles, shared by many TileHashReaders (not thread-safe)."""

    def __init__(self, max_tiles: int = 4096) -> None:
        raise NotImplementedError
