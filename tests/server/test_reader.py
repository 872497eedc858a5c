"""The read side: proofs from tiles with few storage reads, on a real SQLite log."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from firmlog.client.keys import generate_key
from firmlog.client.merkle import inclusion_proof, leaf_hash, root_hash, verify_inclusion
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
        proofs = await reader.prove(3000, lambda r: [inclusion_proof(i, 3000, r) for i in indexes])
        assert reads == 1, f"{reads} tile queries for one batch of proofs"
        root = root_hash([leaf_hash(e) for e in entries])
        for i, proof in zip(indexes, proofs, strict=True):
            verify_inclusion(leaf_hash(entries[i]), i, 3000, proof, root)
        # warm: no query at all
        await reader.prove(3000, lambda r: [inclusion_proof(i, 3000, r) for i in indexes])
        assert reads == 1
    finally:
        await storage.close()
