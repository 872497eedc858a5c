"""The read side of the log: the latest checkpoint, tiles, entry bundles and proofs.

Nothing here loads the tree. A proof is planned, fetched and computed: its
:class:`~firmlog.client.merkle.ProofPlan` names the O(log n) subtrees it
reads; :meth:`firmlog.client.tiles.TileHashReader.start` finds their tiles
in the caches and says which are missing; those are read from storage in one
query (for a whole batch of proofs), and the proofs are computed. Tiles come
from three caches before the database:

- full hash tiles, expanded (shared :class:`TileCache`) and raw (for HTTP);
- partial hash tiles keyed by width: ``tile/L/N.p/W`` never changes either;
- full entry bundles.

The latest checkpoint is what this process published last, or what another
process sharing the database published: it is re-read from storage at most
every ``refresh_interval`` seconds, and at once when a request names a tree
size beyond it. With witnesses that is the latest checkpoint recorded as
cosigned (never the integrated tree before its quorum), served only if it
passes ``accept``.

The workers of one host (``serve --workers N``) read their own writes through
a :class:`HostTreeSize`: every checkpoint a worker publishes or serves raises
it (after its commit), and every :meth:`LogReader.latest` compares it with the
worker's own, re-reading storage at once when another worker of the host has
shown a larger tree. So a client that was shown tree size N, in a bundle or a
checkpoint, is never shown a smaller one by another worker of the same server.
Servers on other hosts sharing a PostgreSQL database catch up within
``refresh_interval``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from firmlog.client.bundle import ProofBundle
from firmlog.client.checkpoint import Checkpoint
from firmlog.client.cosignature import COSIGNATURE_SIZE, cosignature_timestamp
from firmlog.client.merkle import (
    HASH_SIZE,
    ProofPlan,
    consistency_proof_plan,
    inclusion_proof_plan,
)
from firmlog.client.note import split_note
from firmlog.client.tiles import (
    ENTRY_LEVEL,
    TILE_WIDTH,
    Tile,
    TileCache,
    TileHashReader,
    encode_entry_bundle,
)
from firmlog.server.errors import NotFound
from firmlog.server.storage import Storage

K = TypeVar("K")
V = TypeVar("V")


class _LRU(Generic[K, V]):
    def __init__(self, max_items: int) -> None:
        self._max = max_items
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)


@dataclass(frozen=True, slots=True)
class LatestCheckpoint:
    note: bytes
    tree_size: int
    root_hash: bytes


def checkpoint_of(note: bytes) -> LatestCheckpoint:
    """Tree size and root of a signed checkpoint note this log wrote."""
    text, _ = split_note(note)
    cp = Checkpoint.parse(text)
    return LatestCheckpoint(note=note, tree_size=cp.tree_size, root_hash=cp.root_hash)


class HostTreeSize(Protocol):
    """The largest tree size the log's processes on this host published or served
    (:class:`firmlog.server.workers.TreeSizeBoard`)."""

    def largest(self) -> int:
        """The largest tree size any of them was shown so far (0: none)."""
        ...

    def raise_to(self, tree_size: int) -> None:
        """Record that this process shows ``tree_size`` (committed, and cosigned if
        witnessed), before any client sees it."""
        ...


class LogReader:
    def __init__(
        self,
        storage: Storage,
        *,
        cache_tiles: int = 2048,
        refresh_interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        accept: Callable[[bytes], bool] | None = None,
        host: HostTreeSize | None = None,
    ) -> None:
        """``accept``: with witnesses, whether a checkpoint may be served (only one
        cosigned by the quorum); the latest is then read from the cosigned record.
        ``host``: shared with the other workers of this host (module docstring)."""
        self._storage = storage
        self._accept = accept
        self._host = host
        self._expanded = TileCache(cache_tiles)
        self._full_raw: _LRU[tuple[int, int], bytes] = _LRU(cache_tiles)
        self._partial_raw: _LRU[tuple[int, int, int], bytes] = _LRU(1024)
        self._bundles: _LRU[int, bytes] = _LRU(64)
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._latest: LatestCheckpoint | None = None
        self._latest_since = 0.0  # Unix time this process signed or first read it
        self._checked_at = -float("inf")
        self._refresh_lock = asyncio.Lock()

    # -- the latest checkpoint ------------------------------------------------

    async def latest(self, at_least: int = 0) -> LatestCheckpoint | None:
        """The newest checkpoint known; re-read when stale, smaller than ``at_least``,
        or smaller than another worker of this host has shown (``host``)."""
        latest = self._latest
        # Read before storage is: whatever another worker had shown by now is committed.
        shown = self._host.largest() if self._host is not None else 0
        fresh = self._clock() - self._checked_at < self._refresh_interval
        if latest is not None and fresh and latest.tree_size >= max(at_least, shown):
            return latest
        async with self._refresh_lock:
            current = self._latest
            # Re-read unless somebody did while we waited; and then too if that read
            # may have started before the tree another worker showed was committed.
            if current is latest or current is None or current.tree_size < shown:
                started = self._clock()
                if self._accept is None:
                    note = await self._storage.latest_checkpoint()
                else:
                    note = await self._storage.latest_cosigned()
                self._checked_at = started
                if note is not None and self.servable(note):
                    self._offer(checkpoint_of(note))
        return self._latest

    def servable(self, note: bytes) -> bool:
        """Whether a checkpoint of this log may be shown (with witnesses: cosigned)."""
        return self._accept is None or self._accept(note)

    def publish(self, note: bytes, tree_size: int, root_hash: bytes) -> None:
        """Called by the sequencer after its commit."""
        self._offer(LatestCheckpoint(note=note, tree_size=tree_size, root_hash=root_hash))

    def _offer(self, cp: LatestCheckpoint) -> None:
        if self._latest is None or cp.tree_size > self._latest.tree_size:
            if self._host is not None:
                self._host.raise_to(cp.tree_size)  # before anyone is shown it
            self._latest = cp
            self._latest_since = time.time()

    def checkpoint_age(self) -> float | None:
        """Seconds since the latest checkpoint was signed: since the newest of its
        cosignatures (their timestamps), else since this process signed it or first
        read it. None while there is none."""
        latest = self._latest
        if latest is None:
            return None
        _, signatures = split_note(latest.note)
        cosigned = [
            cosignature_timestamp(s.signature)
            for s in signatures
            if len(s.signature) == COSIGNATURE_SIZE
        ]
        return max(0.0, time.time() - (max(cosigned) if cosigned else self._latest_since))

    def remember_tiles(self, tree_size: int, tiles: Mapping[tuple[int, int], bytes]) -> None:
        """Cache hash tiles just committed (their widths follow from the bytes)."""
        for (level, index), data in tiles.items():
            self._cache_tile(Tile(level, index, len(data) // HASH_SIZE), data)

    # -- tiles ----------------------------------------------------------------

    def _cached_tile(self, tile: Tile) -> bytes | None:
        if tile.width == TILE_WIDTH:
            return self._full_raw.get((tile.level, tile.index))
        return self._partial_raw.get((tile.level, tile.index, tile.width))

    def _cache_tile(self, tile: Tile, data: bytes) -> None:
        if tile.width == TILE_WIDTH:
            self._full_raw.put((tile.level, tile.index), data)
        else:
            self._partial_raw.put((tile.level, tile.index, tile.width), data)

    async def _load_tiles(self, tiles: Sequence[Tile]) -> dict[Tile, bytes]:
        found: dict[Tile, bytes] = {}
        wanted: list[Tile] = []
        for t in tiles:
            data = self._cached_tile(t)
            if data is None:
                wanted.append(t)
            else:
                found[t] = data
        if wanted:
            stored = await self._storage.read_tiles([(t.level, t.index) for t in wanted])
            for t in wanted:
                data = stored.get((t.level, t.index))
                if data is None or len(data) < t.width * HASH_SIZE:
                    continue
                data = data[: t.width * HASH_SIZE]
                self._cache_tile(t, data)
                found[t] = data
        return found

    async def hash_tile(self, level: int, index: int, width: int) -> bytes:
        """The bytes of ``tile/<level>/<index>[.p/<width>]``; NotFound if not that wide yet."""
        tile = Tile(level, index, width)
        data = (await self._load_tiles([tile])).get(tile)
        if data is None:
            raise NotFound(f"tile {tile.path} is not in the log")
        return data

    async def entry_bundle(self, index: int, width: int) -> bytes:
        """The bytes of ``tile/entries/<index>[.p/<width>]``; NotFound if not that wide yet."""
        if width == TILE_WIDTH and (cached := self._bundles.get(index)) is not None:
            return cached
        start = index * TILE_WIDTH
        entries = await self._storage.read_entries(start, start + width)
        if len(entries) != width:
            raise NotFound(f"{Tile(ENTRY_LEVEL, index, width).path} is not in the log")
        data = encode_entry_bundle(entries)
        if width == TILE_WIDTH:
            self._bundles.put(index, data)
        return data

    # -- proofs ---------------------------------------------------------------

    async def prove(self, tree_size: int, plans: Sequence[ProofPlan]) -> list[list[bytes]]:
        """The proofs of ``plans`` (each for a tree of at most ``tree_size``), in
        order, from this log's tiles at ``tree_size``.

        Plans, fetches once, computes: the nodes of every plan are looked up
        in the caches, the tiles that are not there are read from storage in
        one query (one for a whole batch of proofs), and the proofs are
        computed, with no more I/O. Raises RuntimeError if storage lacks a
        tile of ``tree_size``.
        """
        # The proofs of one batch share most of their nodes (the upper levels, the
        # neighbours of consecutive leaves): look each node up once.
        nodes = (
            plans[0].nodes
            if len(plans) == 1
            else list(dict.fromkeys(n for p in plans for n in p.nodes))
        )
        read = TileHashReader(tree_size, cache=self._expanded).start(nodes)
        if read.missing:
            got = await self._load_tiles(read.missing)
            lost = [t.path for t in read.missing if t not in got]
            if lost:
                raise RuntimeError(f"storage lacks tiles {lost} for tree size {tree_size}")
            read.supply([got[t] for t in read.missing])
        hashes = read.hashes()
        if len(plans) == 1:
            return [plans[0].proof(hashes)]
        by_node = dict(zip(nodes, hashes, strict=True))
        return [plan.proof([by_node[n] for n in plan.nodes]) for plan in plans]

    async def inclusion_proof(self, leaf_index: int, tree_size: int) -> list[bytes]:
        return (await self.prove(tree_size, [inclusion_proof_plan(leaf_index, tree_size)]))[0]

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return (await self.prove(new_size, [consistency_proof_plan(old_size, new_size)]))[0]

    async def bundle(self, leaf_index: int, checkpoint: LatestCheckpoint) -> bytes:
        """The ``.tlog-proof`` bundle of one entry against ``checkpoint``."""
        if leaf_index >= checkpoint.tree_size:
            raise NotFound(f"entry {leaf_index} is not in the tree of size {checkpoint.tree_size}")
        entries = await self._storage.read_entries(leaf_index, leaf_index + 1)
        if not entries:
            raise NotFound(f"entry {leaf_index} is not in the log")
        proof = await self.inclusion_proof(leaf_index, checkpoint.tree_size)
        return ProofBundle(
            index=leaf_index, proof=tuple(proof), checkpoint=checkpoint.note, extra=entries[0]
        ).format()
