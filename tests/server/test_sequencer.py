"""The sequencer's run loop: no batch is ever left waiting, whatever fails."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from firmlog.client.bundle import ProofBundle
from firmlog.client.keys import generate_key
from firmlog.client.merkle import leaf_hash, verify_inclusion
from firmlog.server.config import SequencerConfig
from firmlog.server.reader import LogReader
from firmlog.server.sequencer import Sequencer
from firmlog.server.storage import open_storage
from firmlog.server.storage.sqlite import _tile_id


async def test_a_failing_batch_is_answered_and_the_loop_goes_on(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'log.db'}")
    await storage.open()
    sequencer = Sequencer(
        storage, LogReader(storage), generate_key("seq.test/log"), SequencerConfig(0.01, 8, 64)
    )
    real = sequencer._integrate_and_answer
    calls = 0

    async def broken_once(batch: list[object]) -> None:  # fault injection, e.g. logging fails
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("injected: I/O operation on closed file")
        await real(batch)  # type: ignore[arg-type]

    sequencer._integrate_and_answer = broken_once  # type: ignore[method-assign]
    task = asyncio.create_task(sequencer.run())
    try:
        with pytest.raises(ValueError, match="injected"):
            await asyncio.wait_for(sequencer.submit(b"a", leaf_hash(b"a")), timeout=10)
        done = await asyncio.wait_for(sequencer.submit(b"b", leaf_hash(b"b")), timeout=10)
        assert done.leaf_index == 0
    finally:
        await sequencer.stop()
        await asyncio.wait_for(task, timeout=10)
        await storage.close()


async def test_a_short_stored_tile_fails_the_batch_and_writes_nothing(tmp_path: Path) -> None:
    """Fault injection: a stored edge tile shorter than the tree size implies is
    inconsistent storage; the integration says so and rolls back."""
    path = tmp_path / "log.db"
    storage = open_storage(f"sqlite:///{path}")
    await storage.open()
    sequencer = Sequencer(
        storage, LogReader(storage), generate_key("seq.test/log"), SequencerConfig(0.01, 512, 1024)
    )
    task = asyncio.create_task(sequencer.run())
    try:
        entries = [b"entry %d" % i for i in range(300)]
        await asyncio.gather(*(sequencer.submit(e, leaf_hash(e)) for e in entries))
        with sqlite3.connect(path) as db:  # tile 0/1 holds 44 hashes at size 300
            db.execute(
                "UPDATE tiles SET data = substr(data, 1, 64) WHERE id = ?", (_tile_id(0, 1),)
            )
        with pytest.raises(
            RuntimeError, match="tile 0/1 holds 64 bytes, expected 1408 at tree size 300"
        ):
            await asyncio.wait_for(sequencer.submit(b"one more", leaf_hash(b"one more")), 10)
        async with storage.integration() as tx:
            assert (await tx.state()).tree_size == 300
            assert len((await tx.read_tiles([(0, 1)]))[(0, 1)]) == 64
    finally:
        await sequencer.stop()
        await asyncio.wait_for(task, timeout=10)
        await storage.close()


async def test_a_batchs_bundles_are_each_entrys_own(tmp_path: Path) -> None:
    """The bundles of one batch share their checkpoint check and proof hash
    encodings: each is still byte for byte the bundle the reader makes for that
    entry alone, and proves the entry."""
    storage = open_storage(f"sqlite:///{tmp_path / 'log.db'}")
    await storage.open()
    reader = LogReader(storage)
    key = generate_key("seq.test/log")
    sequencer = Sequencer(storage, reader, key, SequencerConfig(0.01, 64, 1024))
    task = asyncio.create_task(sequencer.run())
    try:
        first = [b"early %d" % i for i in range(37)]  # a tree whose edge the batch extends
        await asyncio.gather(*(sequencer.submit(e, leaf_hash(e)) for e in first))
        batch = [b"entry %d" % i for i in range(64)]
        done = await asyncio.gather(*(sequencer.submit(e, leaf_hash(e)) for e in batch))
        latest = await reader.latest()
        assert latest is not None
        assert {d.tree_size for d in done} == {latest.tree_size} == {101}
        for entry, result in zip(batch, done, strict=True):
            assert result.bundle == await reader.bundle(result.leaf_index, latest)
            bundle = ProofBundle.parse(result.bundle)
            assert bundle.extra == entry
            verify_inclusion(
                leaf_hash(entry), bundle.index, latest.tree_size, bundle.proof, latest.root_hash
            )
    finally:
        await sequencer.stop()
        await asyncio.wait_for(task, timeout=10)
        await storage.close()
