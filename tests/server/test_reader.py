"""The read side: proofs from tiles with few storage reads, on a real SQLite log."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path

from firmlog.client.keys import generate_key
from firmlog.client.merkle import (
    consistency_proof,
    inclusion_proof_plan,
    leaf_hash,
    node_hash,
    root_hash,
    verify_inclusion,
)
from firmlog.server.config import SequencerConfig
from firmlog.server.reader import LogReader
from firmlog.server.sequencer import Sequencer
from firmlog.server.storage import Storage, open_storage


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
        real_read_tiles = storage.read_tiles

        async def counting_read_tiles(tiles: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
            nonlocal reads
            reads += 1
            return await real_read_tiles(tiles)

        storage.read_tiles = counting_read_tiles  # type: ignore[method-assign]
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
        real_read_tiles = storage.read_tiles

        async def counting_read_tiles(tiles: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
            reads.append(len(tiles))
            return await real_read_tiles(tiles)

        storage.read_tiles = counting_read_tiles  # type: ignore[method-assign]
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
