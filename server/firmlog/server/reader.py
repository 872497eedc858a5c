"""The read side of the log: the latest checkpoint, tiles, entry bundles and proofs.

Nothing here loads the tree. A proof is planned, fetched and computed: its
:class:`~firmlog.client.merkle.ProofPlan` names the O(log n) subtrees it
reads; :meth:`firmlog.client.tiles.TileHashReader.start` finds their tiles
in the cache and says which are missing; those are read from storage in one
query (for a whole batch of proofs), and the proofs are computed.

Hash tiles, full and partial, are cached once, as the shared
:class:`~firmlog.client.tiles.TileCache` holds them: their hashes, which
HTTP serves as they are, and the inner nodes a proof hashed from them. The
tiles above level 0 (1/256 of the tree's, and on every proof's path) have
an LRU of their own, so reads scattered over a large tree's level-0 tiles
never evict them. Full entry bundles have a small LRU of their own.

Tiles missing from the cache are read through :class:`StoredTiles`: a tile
already being read for one request is not read again for another, and the
tiles that requests ask for in the same turn of the event loop are read
together, in one query; the storage runs such queries side by side.

The latest checkpoint is what this process published last, or what another
process sharing the database published. Once older than ``refresh_interval``
seconds it is re-read in the background, one read at a time: under load the
request that finds it old is answered with it at once, never queued behind
the read (which made the tail latency of every read endpoint hundreds of
milliseconds). Requests wait for a read that began after they came only when
the checkpoint was read more than twice ``refresh_interval`` ago (an idle
process never serves an older one), or when they name a larger tree. With
witnesses that is the latest checkpoint recorded as cosigned (never the
integrated tree before its quorum), served only if it passes ``accept``.

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

import structlog

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
from firmlog.server.storage import Storage, StorageUnavailable, StoredTile

log = structlog.get_logger("firmlog.reader")

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


class StoredTiles:
    """Hash tiles read from storage for many concurrent requests.

    A tile already being read for one request is not read again for another;
    the tiles asked for in one turn of the event loop are read together, in
    one :meth:`~firmlog.server.storage.LogStorage.read_tiles_summarized` (one
    snapshot), each with the summary stored with it. A read runs in a task of
    its own: a request cancelled while it waits cancels nothing that other
    requests share.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._reading: dict[tuple[int, int], asyncio.Future[StoredTile | None]] = {}
        self._queued: list[tuple[int, int]] = []  # read by the task started with the first
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, tiles: Sequence[Tile]) -> dict[Tile, StoredTile]:
        """The stored hashes of each hash tile of ``tiles`` at its width, with the
        tile's summary if it has one; a tile that storage lacks, or holds
        narrower, is left out. Storage errors
        (:class:`~firmlog.server.storage.StorageUnavailable`...) propagate."""
        loop = asyncio.get_running_loop()
        waiting: list[tuple[Tile, asyncio.Future[StoredTile | None]]] = []
        joined: set[tuple[int, int]] = set()  # reads that began before this call
        for tile in tiles:
            key = (tile.level, tile.index)
            future = self._reading.get(key)
            if future is not None:
                joined.add(key)
            else:
                future = loop.create_future()
                future.add_done_callback(_retrieved)
                self._reading[key] = future
                if not self._queued:
                    task = loop.create_task(self._read_queued())
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                self._queued.append(key)
            waiting.append((tile, future))
        # asyncio.wait, not gather: cancelling this request leaves the shared reads be.
        await asyncio.wait({f for _, f in waiting})
        found: dict[Tile, StoredTile] = {}
        narrower: list[Tile] = []
        for tile, future in waiting:
            stored = future.result()
            if stored is not None and (cut := _at_width(tile, stored)) is not None:
                found[tile] = cut
            elif (tile.level, tile.index) in joined:
                narrower.append(tile)
        if narrower:
            # Joined a read that may have begun before the caller's checkpoint was
            # committed: read these again, in a snapshot that begins after it.
            again = await self._storage.read_tiles_summarized(
                [(t.level, t.index) for t in narrower]
            )
            for tile in narrower:
                stored = again.get((tile.level, tile.index))
                if stored is not None and (cut := _at_width(tile, stored)) is not None:
                    found[tile] = cut
        return found

    async def _read_queued(self) -> None:
        keys, self._queued = self._queued, []
        futures = [self._reading[key] for key in keys]
        try:
            stored = await self._storage.read_tiles_summarized(keys)
        except BaseException as exc:
            for future in futures:
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for key, future in zip(keys, futures, strict=True):
                future.set_result(stored.get(key))
        finally:
            for key in keys:
                del self._reading[key]


def _at_width(tile: Tile, stored: StoredTile) -> StoredTile | None:
    """The stored tile cut to ``tile``'s width (a summary only with the full tile);
    None if it is narrower."""
    data = stored[0]
    size = tile.width * HASH_SIZE
    if len(data) < size:
        return None
    if len(data) == size:
        return stored
    return data[:size], None


def _retrieved(future: asyncio.Future[StoredTile | None]) -> None:
    """Mark a read's error as seen: every request that shared it may have gone."""
    if not future.cancelled():
        future.exception()


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
        # Level-0 tiles up to cache_tiles; the few above them up to as many again.
        self._tiles = TileCache(cache_tiles)
        self._stored = StoredTiles(storage)
        self._bundles: _LRU[int, bytes] = _LRU(64)
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._latest: LatestCheckpoint | None = None
        self._latest_since = 0.0  # Unix time this process signed or first read it
        self._checked_at = -float("inf")  # when the last read that succeeded began
        self._tried_at = -float("inf")  # when the last read began
        # The read of the latest checkpoint under way, and its number.
        self._reading: tuple[asyncio.Future[None], int] | None = None
        self._reads_begun = 0
        self._read_failing = False  # the last read failed (logged once until one succeeds)

    # -- the latest checkpoint ------------------------------------------------

    async def latest(self, at_least: int = 0) -> LatestCheckpoint | None:
        """The newest checkpoint known. Read from storage ``refresh_interval``
        seconds ago or less: returned. Up to twice that: returned at once, and
        re-read in the background (one read at a time, whoever asks). Older, or
        smaller than ``at_least`` or than another worker of this host has shown
        (``host``): the caller waits for a read that began after it asked."""
        latest = self._latest
        # Read before storage is: whatever another worker had shown by now is committed.
        shown = self._host.largest() if self._host is not None else 0
        if latest is not None and latest.tree_size >= at_least and latest.tree_size >= shown:
            now = self._clock()
            age = now - self._checked_at
            if age < self._refresh_interval:
                return latest
            if age < 2 * self._refresh_interval:
                if now - self._tried_at >= self._refresh_interval:
                    self._refresh()  # answered now; the next caller gets what it reads
                return latest
            # Not read for longer (an idle process): never serve that old a checkpoint.
        asked = self._reads_begun
        while True:
            read, generation = self._refresh()
            await asyncio.shield(read)  # raises what the read raised
            if generation > asked:
                return self._latest
            # That read began before this call: it may have missed the commit.

    def _refresh(self) -> tuple[asyncio.Future[None], int]:
        """The read of the latest checkpoint under way, else a new one; with its
        number (reads are numbered as they begin)."""
        if self._reading is None or self._reading[0].done():  # its callback may not have run
            self._reads_begun += 1
            task = asyncio.get_running_loop().create_task(self._read_latest())
            task.add_done_callback(self._read_done)
            self._reading = (task, self._reads_begun)
        return self._reading

    async def _read_latest(self) -> None:
        started = self._tried_at = self._clock()  # a failed read is retried behind after
        if self._accept is None:
            note = await self._storage.latest_checkpoint()
        else:
            note = await self._storage.latest_cosigned()
        self._checked_at = started
        if note is not None and self.servable(note):
            self._offer(checkpoint_of(note))

    def _read_done(self, task: asyncio.Future[None]) -> None:
        if self._reading is not None and self._reading[0] is task:
            self._reading = None
        failed = not task.cancelled() and task.exception() is not None
        if failed and not self._read_failing:
            # The callers waiting for it get the error; a background read has none.
            log.warning(
                "reading the latest checkpoint failed; serving the last one read",
                error=repr(task.exception()),
            )
        self._read_failing = failed

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
            self._tiles.add(Tile(level, index, len(data) // HASH_SIZE), data)

    # -- tiles ----------------------------------------------------------------

    async def hash_tile(self, level: int, index: int, width: int) -> bytes:
        """The bytes of ``tile/<level>/<index>[.p/<width>]``; NotFound if not that wide yet."""
        tile = Tile(level, index, width)
        data = self._tiles.tile_data(tile)
        if data is None:
            stored = (await self._stored.read([tile])).get(tile)
            if stored is None:
                raise NotFound(f"tile {tile.path} is not in the log")
            data, summary = stored
            self._tiles.add(tile, data, summary)
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
        in the cache, the tiles that are not there are read from storage in
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
        read = TileHashReader(tree_size, cache=self._tiles).start(nodes)
        if read.missing:
            got = await self._stored.read(read.missing)
            lost = [t.path for t in read.missing if t not in got]
            if lost:
                raise RuntimeError(f"storage lacks tiles {lost} for tree size {tree_size}")
            stored = [got[t] for t in read.missing]
            read.supply([data for data, _ in stored], [summary for _, summary in stored])
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


async def summarize_stored_tiles(
    storage: Storage, *, batch: int = 256, pause: float = 0.05, retry: float = 5.0
) -> None:
    """Give the full tiles stored before schema version 5 their summaries, ``batch``
    tiles per transaction with ``pause`` seconds between (integrations take the
    lock meanwhile), until none is left; retried every ``retry`` seconds while
    the database is unavailable. Run by one process of a host while it serves:
    a log upgraded in place reads as fast as a new one once it is done, and the
    backfill resumes where it was if the process stops. Never raises but
    CancelledError."""
    total, started = 0, time.monotonic()
    while True:
        try:
            done = await storage.summarize_tiles(batch)
        except StorageUnavailable as exc:
            log.warning("summarizing stored tiles: the database is unavailable", error=str(exc))
            await asyncio.sleep(retry)
            continue
        except Exception as exc:  # a damaged database: the reads work without summaries
            log.error("summarizing stored tiles failed; reads hash them", error=repr(exc))
            return
        if done is None:
            break
        if not total and done:
            log.info("summarizing the full tiles stored before schema version 5")
        total += done
        await asyncio.sleep(pause)
    if total:
        log.info(
            "summarized the stored tiles",
            tiles=total,
            seconds=round(time.monotonic() - started, 1),
        )
