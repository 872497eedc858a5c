"""The read side: proofs from tiles with few storage reads, on a real log (SQLite, and
both backends where reads run side by side with integrations)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from aiohttp import ClientSession
from support.harness import make_log
from support.rawsql import fetch_sql, run_sql

from firmlog.client.checkpoint import Checkpoint
from firmlog.client.keys import generate_key
from firmlog.client.merkle import (
    consistency_proof,
    inclusion_proof_plan,
    leaf_hash,
    node_hash,
    root_hash,
    verify_inclusion,
)
from firmlog.client.tiles import Tile, tile_summary
from firmlog.server.config import SequencerConfig
from firmlog.server.reader import LogReader, StoredTiles
from firmlog.server.sequencer import Sequencer
from firmlog.server.storage import Storage, StorageUnavailable, StoredTile, open_storage


async def _grow(storage: Storage, entries: list[bytes]) -> None:
    reader = LogReader(storage)
    sequencer = Sequencer(
        storage, reader, generate_key("reader.test/log"), SequencerConfig(batch_size=4096)
    )
    task = asyncio.create_task(sequencer.run())
    await asyncio.gather(*(sequencer.submit(e, leaf_hash(e)) for e in entries))
    await sequencer.stop()
    await task


async def test_a_batch_of_scattered_proofs_loads_its_tiles_in_one_query(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'log.db'}")
    await storage.open()
    try:
        entries = [f"entry {i}".encode() for i in range(3000)]
        await _grow(storage, entries)
        reads = 0
        real_read_tiles = storage.read_tiles_summarized

        async def counting_read_tiles(
            tiles: list[tuple[int, int]],
        ) -> dict[tuple[int, int], StoredTile]:
            nonlocal reads
            reads += 1
            return await real_read_tiles(tiles)

        storage.read_tiles_summarized = counting_read_tiles  # type: ignore[method-assign]
        reader = LogReader(storage)  # cold caches
        indexes = random.Random(7).sample(range(3000), 200)
        plans = [inclusion_proof_plan(i, 3000) for i in indexes]
        proofs = await reader.prove(3000, plans)
        assert reads == 1, f"{reads} tile queries for one batch of proofs"
        root = root_hash([leaf_hash(e) for e in entries])
        for i, proof in zip(indexes, proofs, strict=True):
            verify_inclusion(leaf_hash(entries[i]), i, 3000, proof, root)
        # warm: no query at all
        await reader.prove(3000, plans)
        assert reads == 1
    finally:
        await storage.close()


async def test_a_batch_holds_its_tiles_when_the_caches_are_smaller_than_it(
    tmp_path: Path,
) -> None:
    """Planned, fetched once, computed: a batch that needs far more tiles than the
    caches hold still makes one query, and no tile it fetched is lost to eviction."""
    storage = open_storage(f"sqlite:///{tmp_path / 'log.db'}")
    await storage.open()
    try:
        entries = [f"entry {i}".encode() for i in range(3000)]
        await _grow(storage, entries)
        reads: list[int] = []
        real_read_tiles = storage.read_tiles_summarized

        async def counting_read_tiles(
            tiles: list[tuple[int, int]],
        ) -> dict[tuple[int, int], StoredTile]:
            reads.append(len(tiles))
            return await real_read_tiles(tiles)

        storage.read_tiles_summarized = counting_read_tiles  # type: ignore[method-assign]
        reader = LogReader(storage, cache_tiles=1)
        indexes = list(range(0, 3000, 97))  # leaves in all 12 level-0 tiles; and tile 1/0
        proofs = await reader.prove(3000, [inclusion_proof_plan(i, 3000) for i in indexes])
        assert reads == [12 + 1]
        root = root_hash([leaf_hash(e) for e in entries])
        for i, proof in zip(indexes, proofs, strict=True):
            verify_inclusion(leaf_hash(entries[i]), i, 3000, proof, root)
        assert await reader.consistency_proof(1500, 3000) == consistency_proof(
            1500, 3000, LevelsView([leaf_hash(e) for e in entries])
        )
        assert await reader.prove(3000, []) == []
    finally:
        await storage.close()


class LevelsView:
    """Every complete subtree of a list of leaf hashes, built by pairing."""

    def __init__(self, leaf_hashes: list[bytes]) -> None:
        self.levels = [leaf_hashes]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            )

    def read_hashes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        return [self.levels[level][index] for level, index in coords]


# -- tiles of one tree size, read by many requests at once ----------------------------


LOG_KEY = generate_key("reader.test/log")


async def _grow_in_batches(storage: Storage, start: int, end: int, batch: int) -> None:
    """Entries start..end-1 (``entry i``), one commit per ``batch`` of them."""
    reader = LogReader(storage)
    sequencer = Sequencer(storage, reader, LOG_KEY, SequencerConfig(batch_size=batch))
    await sequencer.initialize()
    task = asyncio.create_task(sequencer.run())
    try:
        for lo in range(start, end, batch):
            chunk = [f"entry {i}".encode() for i in range(lo, min(end, lo + batch))]
            await asyncio.gather(*(sequencer.submit(e, leaf_hash(e)) for e in chunk))
    finally:
        await sequencer.stop()
        await task


async def test_concurrent_tile_reads_each_see_one_tree_size(database_url: str) -> None:
    """While integrations commit, every read_tiles (many at once: SQLite's readers
    run side by side) sees all its tiles from one commit: as many full level-0
    tiles as tile 1/0 counts, never a mix of two tree sizes."""
    # Tiles 0/12.. never exist here: they only make each read long enough to overlap.
    keys = [(0, i) for i in range(400)] + [(1, 0)]
    writer, readers = open_storage(database_url), open_storage(database_url)
    await writer.open()
    await readers.open()
    try:
        await _grow_in_batches(writer, 0, 1, 1)
        growing = asyncio.create_task(_grow_in_batches(writer, 1, 3000, 13))
        seen: set[int] = set()
        while not growing.done():
            for tiles in await asyncio.gather(*(readers.read_tiles(keys) for _ in range(8))):
                full = sum(1 for k in keys[:-1] if len(tiles.get(k, b"")) == 256 * 32)
                partial = sum(len(tiles.get(k, b"")) // 32 for k in keys[:-1]) - 256 * full
                above = len(tiles.get((1, 0), b"")) // 32
                assert above == full, f"tile 1/0 counts {above} full tiles, level 0 has {full}"
                seen.add(256 * full + partial)
        await growing
        assert len(seen) > 3, f"the reads overlapped too few commits: {sorted(seen)}"
    finally:
        await readers.close()
        await writer.close()


async def test_a_proof_at_a_tree_size_never_uses_the_tiles_of_a_later_one(
    database_url: str,
) -> None:
    """Proofs and tiles at tree size 2000 stay those of 2000 after the log grew to 3000
    and the caches hold the wider right-edge tiles (and the other way round)."""
    storage = open_storage(database_url)
    await storage.open()
    try:
        entries = [f"entry {i}".encode() for i in range(3000)]
        leaves = [leaf_hash(e) for e in entries]
        await _grow_in_batches(storage, 0, 2000, 500)
        early = LogReader(storage)  # its caches fill at 2000
        sample = [0, 1, 255, 256, 1791, 1792, 1999]
        for i in sample:
            await early.inclusion_proof(i, 2000)
        edge_at_2000 = await early.hash_tile(0, 7, 2000 - 7 * 256)
        await _grow_in_batches(storage, 2000, 3000, 500)
        late = LogReader(storage)
        for i in range(3000 - 256, 3000, 50):  # caches fill with the tiles of 3000
            await late.inclusion_proof(i, 3000)
        assert await late.hash_tile(0, 11, 3000 - 11 * 256) == b"".join(leaves[2816:3000])
        for reader in (early, late):
            for size in (2000, 3000):
                root = root_hash(leaves[:size])
                for i in [*sample, size - 1]:
                    proof = await reader.inclusion_proof(i, size)
                    verify_inclusion(leaves[i], i, size, proof, root)
            assert await reader.consistency_proof(2000, 3000) == consistency_proof(
                2000, 3000, LevelsView(leaves)
            )
            assert await reader.hash_tile(0, 7, 2000 - 7 * 256) == edge_at_2000
            assert edge_at_2000 == b"".join(leaves[7 * 256 : 2000])
            assert await reader.hash_tile(0, 7, 256) == b"".join(leaves[7 * 256 : 8 * 256])
            assert await reader.hash_tile(1, 0, 7) == b"".join(
                root_hash(leaves[k * 256 : (k + 1) * 256]) for k in range(7)
            )
    finally:
        await storage.close()


async def test_requests_wanting_the_same_tiles_at_once_share_one_read(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'log.db'}")
    await storage.open()
    try:
        entries = [f"entry {i}".encode() for i in range(3000)]
        await _grow(storage, entries)
        reads: list[list[tuple[int, int]]] = []
        real_read_tiles = storage.read_tiles_summarized

        async def counting_read_tiles(
            tiles: list[tuple[int, int]],
        ) -> dict[tuple[int, int], StoredTile]:
            reads.append(sorted(tiles))
            return await real_read_tiles(tiles)

        storage.read_tiles_summarized = counting_read_tiles  # type: ignore[method-assign]
        reader = LogReader(storage)
        indexes = [5, 6, 300, 2999, 5, 1000]
        proofs = await asyncio.gather(*(reader.inclusion_proof(i, 3000) for i in indexes))
        # One turn of the event loop: every tile of the six proofs, once, in one query.
        assert reads == [[(0, 0), (0, 1), (0, 3), (0, 11), (1, 0)]]
        root = root_hash([leaf_hash(e) for e in entries])
        for i, proof in zip(indexes, proofs, strict=True):
            verify_inclusion(leaf_hash(entries[i]), i, 3000, proof, root)
        # A request cancelled while it waits leaves the read it shares to the others.
        first = asyncio.create_task(reader.inclusion_proof(700, 3000))
        second = asyncio.create_task(reader.inclusion_proof(701, 3000))
        await asyncio.sleep(0)  # both wait for the one read of tile 0/2
        first.cancel()
        verify_inclusion(leaf_hash(entries[701]), 701, 3000, await second, root)
        assert reads[1:] == [[(0, 2)]]
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        await storage.close()


async def test_a_failed_read_fails_every_request_that_shares_it(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'log.db'}")
    await storage.open()
    try:
        await _grow(storage, [f"entry {i}".encode() for i in range(600)])

        async def failing_read_tiles(
            tiles: list[tuple[int, int]],
        ) -> dict[tuple[int, int], StoredTile]:
            raise StorageUnavailable("the disk went away")

        real_read_tiles = storage.read_tiles_summarized
        storage.read_tiles_summarized = failing_read_tiles  # type: ignore[method-assign]
        reader = LogReader(storage)
        results = await asyncio.gather(
            reader.inclusion_proof(1, 600),
            reader.hash_tile(0, 0, 256),
            return_exceptions=True,
        )
        assert [str(r) for r in results] == ["the disk went away"] * 2
        assert all(isinstance(r, StorageUnavailable) for r in results)
        storage.read_tiles_summarized = real_read_tiles  # type: ignore[method-assign]
        assert len(await reader.hash_tile(0, 0, 256)) == 256 * 32  # nothing stuck
    finally:
        await storage.close()


class _GrowingStore:
    """Just read_tiles_summarized, over tiles that grow between two reads: the first
    read of a tile answers a narrower copy, as a snapshot older than a request's
    checkpoint."""

    def __init__(self, narrow: bytes, wide: bytes) -> None:
        self.answers = [narrow, wide]
        self.reads = 0

    async def read_tiles_summarized(
        self, tiles: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], StoredTile]:
        data = self.answers[min(self.reads, 1)]
        self.reads += 1
        await asyncio.sleep(0)
        return dict.fromkeys(tiles, (data, None))


async def test_a_request_that_joined_an_older_read_reads_its_tile_again() -> None:
    narrow, wide = bytes(range(32)) * 10, bytes(range(32)) * 12
    store = _GrowingStore(narrow, wide)
    stored = StoredTiles(store)  # type: ignore[arg-type]
    old, new = Tile(0, 4, 10), Tile(0, 4, 12)
    got_old, got_new = await asyncio.gather(stored.read([old]), stored.read([new]))
    assert got_old == {old: (narrow, None)}
    assert got_new == {new: (wide, None)}
    assert store.reads == 2
    assert await StoredTiles(_GrowingStore(narrow, narrow)).read([new]) == {}  # type: ignore[arg-type]


# -- the latest checkpoint ---------------------------------------------------------------


def _note(size: int) -> bytes:
    text = Checkpoint("reader.test/log", size, hashlib.sha256(b"%d" % size).digest()).to_text()
    return (text + "\n\u2014 test AAAAAAAA\n").encode()


class _Checkpoints:
    """Storage's latest checkpoint, whose reads a test holds, counts and fails."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.reads = 0
        self.fail: Exception | None = None
        self.gate = asyncio.Event()
        self.gate.set()
        self.finishing: list[Callable[[], None]] = []  # run as a read returns

    async def latest_checkpoint(self) -> bytes:
        self.reads += 1
        size = self.size  # what the read sees: the commits before it began
        await self.gate.wait()
        for call in self.finishing:
            call()
        if self.fail is not None:
            raise self.fail
        return _note(size)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_stale_checkpoint_is_served_at_once_and_read_again_behind() -> None:
    """Requests never queue behind the periodic re-read: they get the checkpoint
    known, and one read (however many ask) brings the next."""
    store, clock = _Checkpoints(5), _Clock()
    reader = LogReader(store, refresh_interval=0.25, clock=clock)  # type: ignore[arg-type]
    assert (await reader.latest()).tree_size == 5
    store.size, clock.now = 9, 0.3  # stale, within twice the interval
    store.gate.clear()  # the re-read hangs
    got = await asyncio.wait_for(asyncio.gather(*(reader.latest() for _ in range(50))), 1)
    assert {cp.tree_size for cp in got} == {5}
    assert store.reads == 2  # one re-read for the 50
    store.gate.set()
    await asyncio.sleep(0.01)
    assert (await reader.latest()).tree_size == 9
    assert store.reads == 2  # fresh again


async def test_an_idle_reader_never_serves_a_checkpoint_read_long_ago() -> None:
    """Stale-while-reading only within twice the interval: a process nobody asked
    for a while (another server sharing the database committed meanwhile) reads
    the latest checkpoint before it answers."""
    store, clock = _Checkpoints(5), _Clock()
    reader = LogReader(store, refresh_interval=0.25, clock=clock)  # type: ignore[arg-type]
    await reader.latest()
    store.size, clock.now = 9, 0.5
    assert (await reader.latest()).tree_size == 9
    assert store.reads == 2


async def test_a_caller_asking_for_a_larger_tree_waits_for_a_read_begun_after_it() -> None:
    store, clock = _Checkpoints(5), _Clock()
    reader = LogReader(store, clock=clock)  # type: ignore[arg-type]
    await reader.latest()
    store.gate.clear()
    clock.now = 1.0
    early = asyncio.ensure_future(reader.latest(6))  # begins a read that sees size 5
    while store.reads < 2:
        await asyncio.sleep(0)
    store.size = 8  # committed after that read began
    late = asyncio.ensure_future(reader.latest(8))
    await asyncio.sleep(0)
    assert not early.done()
    assert not late.done()
    store.gate.set()
    assert (await asyncio.wait_for(early, 1)).tree_size == 5  # it asked before the commit
    assert (await asyncio.wait_for(late, 1)).tree_size == 8  # a second read
    assert store.reads == 3


@pytest.mark.timeout(20)
async def test_a_caller_arriving_as_a_read_ends_starts_another_and_does_not_spin() -> None:
    """A read's task is done before its callbacks run: a caller woken in between
    (by something the read itself set off) must not take it for the read under
    way (it spun there forever, and the whole server with it)."""
    store, clock = _Checkpoints(5), _Clock()
    reader = LogReader(store, clock=clock)  # type: ignore[arg-type]
    await reader.latest()
    woken = asyncio.get_running_loop().create_future()
    store.finishing.append(lambda: woken.done() or woken.set_result(None))

    async def woken_then_asks() -> int:
        await woken  # resumes before the read's task runs its callbacks
        store.size = 7
        cp = await reader.latest(7)
        assert cp is not None
        return cp.tree_size

    clock.now = 1.0
    waiter = asyncio.ensure_future(woken_then_asks())
    await reader.latest(6)  # the read that wakes it
    assert await asyncio.wait_for(waiter, 5) == 7


async def test_a_failed_read_fails_the_callers_waiting_for_it_not_those_served() -> None:
    store, clock = _Checkpoints(5), _Clock()
    reader = LogReader(store, clock=clock)  # type: ignore[arg-type]
    await reader.latest()
    store.fail = StorageUnavailable("the database is away")
    clock.now = 0.3
    assert (await reader.latest()).tree_size == 5  # served; the re-read fails behind
    await asyncio.sleep(0.01)
    with pytest.raises(StorageUnavailable):
        await reader.latest(6)
    reads = store.reads
    assert (await reader.latest()).tree_size == 5
    clock.now = 0.45
    assert (await reader.latest()).tree_size == 5
    await asyncio.sleep(0.01)
    assert store.reads == reads  # retried behind at most once per refresh_interval
    clock.now = 0.5  # the last read that succeeded began twice the interval ago
    with pytest.raises(StorageUnavailable):  # a failure never makes an old one look current
        await reader.latest()
    clock.now = 1.0
    store.fail = None
    store.size = 6
    await reader.latest()
    await asyncio.sleep(0.01)
    assert (await reader.latest()).tree_size == 6


async def test_a_full_tile_read_from_storage_is_proved_from_its_stored_summary(
    database_url: str,
) -> None:
    """A cold reader hashes no whole level of a full tile: 22 nodes from the
    summary stored with it; the proofs are those of the tree."""
    storage = open_storage(database_url)
    await storage.open()
    try:
        entries = [f"entry {i}".encode() for i in range(3000)]
        await _grow(storage, entries)
        reader = LogReader(storage)
        root = root_hash([leaf_hash(e) for e in entries])
        rng = random.Random(5)
        for tile in range(11):  # one proof in each full tile
            i = tile * 256 + rng.randrange(256)
            proof = await reader.inclusion_proof(i, 3000)
            verify_inclusion(leaf_hash(entries[i]), i, 3000, proof, root)
        cached = reader._tiles._tiles
        full = [cached[key] for key in cached if key[2] == 256]
        assert len(full) == 11
        for expanded in full:
            assert expanded.summary is not None
            assert len(expanded.levels) == 1  # no level hashed wholesale
        # A tile that many proofs use has its levels hashed once, and kept.
        for i in range(256, 512, 16):
            proof = await reader.inclusion_proof(i, 3000)
            verify_inclusion(leaf_hash(entries[i]), i, 3000, proof, root)
        assert len(cached[(0, 1, 256)].levels) == 8
    finally:
        await storage.close()


async def test_a_server_fills_in_the_summaries_a_log_upgraded_in_place_lacks(
    served_by: str, database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    """A log whose full tiles were stored before schema version 5 (no summaries,
    the backfill begun) gets them while it serves, by one process of the host."""
    log = make_log(served_by, database_url, tmp_path / "data")
    log.config.data_dir.mkdir()
    await log.start()
    try:
        results = await asyncio.gather(*(log.submit(session, log.entry(i)) for i in range(530)))
        assert all(status == 200 for status, _ in results), results[:3]
    finally:
        await log.stop()
    await run_sql(
        database_url,
        "UPDATE tiles SET summary = NULL",
        "INSERT INTO summary_backfill (id, level, idx) VALUES (1, -1, -1)",
    )
    storage = open_storage(database_url)
    await storage.open()
    try:
        assert {s for _, s in (await storage.read_tiles_summarized([(0, 0), (0, 1)])).values()} == {
            None
        }
        await log.start()
        try:
            deadline = time.monotonic() + 30
            while await fetch_sql(database_url, "SELECT count(*) FROM summary_backfill") != [(0,)]:
                assert time.monotonic() < deadline, "the backfill never finished"
                await asyncio.sleep(0.02)
            stored = await storage.read_tiles_summarized([(0, 0), (0, 1), (0, 2)])
            assert {key: summary for key, (_, summary) in stored.items()} == {
                (0, 0): tile_summary(stored[(0, 0)][0]),
                (0, 1): tile_summary(stored[(0, 1)][0]),
                (0, 2): None,  # partial
            }
            status, _ = await log.submit(session, log.entry(530))  # it goes on as before
            assert status == 200
        finally:
            await log.stop()
    finally:
        await storage.close()
