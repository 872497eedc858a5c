"""Gossip: peered monitors following two forks of one log catch the split view."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from support.harness import LogUnderTest, until
from support.monitor import (
    NOWHERE,
    MonitorUnderTest,
    checkpoint,
    eventually,
    free_port,
    grow,
)

from firmlog.client.checkpoint import sign_checkpoint
from firmlog.client.evidence import DIFFERENT_SIZES, SAME_SIZE, SplitViewEvidence
from firmlog.client.keys import generate_key
from firmlog.client.trust import CheckpointNote
from firmlog.monitor.app import SERVICES


@pytest.fixture
async def peered(
    log: LogUnderTest, fork: LogUnderTest, tmp_path: Path
) -> AsyncIterator[tuple[MonitorUnderTest, MonitorUnderTest]]:
    """Two monitors, one following each fork, each the other's peer (not started)."""
    p1, p2 = free_port(), free_port()
    ops = [log.operator.verifier]
    m1 = MonitorUnderTest(
        tmp_path / "m1", log.base, log.verifier, ops, peers=[f"http://127.0.0.1:{p2}"], port=p1
    )
    m2 = MonitorUnderTest(
        tmp_path / "m2", fork.base, log.verifier, ops, peers=[f"http://127.0.0.1:{p1}"], port=p2
    )
    try:
        yield m1, m2
    finally:
        await m1.stop()
        await m2.stop()


async def evidence(session: ClientSession, base: str) -> list[dict[str, Any]]:
    async with session.get(f"{base}/v1/evidence") as resp:
        assert resp.status == 200
        found: list[dict[str, Any]] = await resp.json()
        return found


async def gossip(session: ClientSession, base: str, note: bytes) -> tuple[int, Any]:
    async with session.post(f"{base}/v1/gossip", data=note) as resp:
        return resp.status, await resp.json()


async def grow_at_once(log: LogUnderTest, session: ClientSession, start: int, count: int) -> None:
    """Grow ``log`` by ``count`` entries in one batch: one new checkpoint, no size between
    (the sequencer's clock is held until all of them wait in its pool)."""
    with log.clock.held():
        tasks = [
            asyncio.create_task(log.submit(session, log.entry(i)))
            for i in range(start, start + count)
        ]
        await until(lambda: log.pending == count, f"{count} entries in the pool")
    results = await asyncio.gather(*tasks)
    assert all(status == 200 for status, _ in results), results[:3]


async def assert_caught(
    monitor: MonitorUnderTest, session: ClientSession, log: LogUnderTest, kind: str
) -> None:
    """The monitor holds evidence anyone can verify, and cosigns nothing more."""
    trusted = monitor.watched.trusted
    assert trusted is not None
    (item,) = await evidence(session, monitor.base)
    assert item["kind"] == kind
    proven = SplitViewEvidence.from_json(item).verify(log.verifier)
    assert proven.startswith(f"the log {log.log_key.name!r} signed")
    assert base64.b64decode(item["notes"][0]) == trusted.note  # its own, byte for byte
    note = await checkpoint(session, log.base)
    status, _, _ = await monitor.add_checkpoint(session, trusted.checkpoint.tree_size, [], note)
    assert status in (403, 409)
    async with session.get(f"{monitor.base}/healthz") as resp:
        assert (await resp.json())["status"] == "split-view"
    async with session.get(f"{monitor.base}/metrics") as resp:
        assert "firmlog_monitor_split_views_total 1" in await resp.text()


async def test_same_size_split_view_caught_by_both_peers(
    log: LogUnderTest,
    fork: LogUnderTest,
    session: ClientSession,
    peered: tuple[MonitorUnderTest, MonitorUnderTest],
) -> None:
    await grow(log, session, 0, 2)
    await grow(fork, session, 100, 2)
    m1, m2 = peered
    await m1.start()
    await m2.start()
    await eventually(lambda: m1.watched.split_view and m2.watched.split_view, what="split views")
    await assert_caught(m1, session, log, SAME_SIZE)
    await assert_caught(m2, session, fork, SAME_SIZE)
    # Neither took the other's tree.
    assert m1.watched.trusted is not None
    assert m2.watched.trusted is not None
    assert m1.watched.trusted.note == await checkpoint(session, log.base)
    assert m2.watched.trusted.note == await checkpoint(session, fork.base)


async def test_different_sizes_split_view_caught_by_both_peers(
    log: LogUnderTest,
    fork: LogUnderTest,
    session: ClientSession,
    peered: tuple[MonitorUnderTest, MonitorUnderTest],
) -> None:
    await grow(log, session, 0, 1)
    await grow(fork, session, 0, 1)  # the same first entry, then others
    await grow(log, session, 1, 2)  # size 3
    await grow(fork, session, 100, 4)  # size 5
    m1, m2 = peered
    await m1.start()
    await m2.start()
    # The larger tree's monitor proves the smaller checkpoint is no prefix of its tree.
    await eventually(lambda: m2.watched.split_view, what="a split view at m2")
    await assert_caught(m2, session, fork, DIFFERENT_SIZES)
    # The smaller one cannot check a tree its log does not have (yet): nothing kept.
    assert not m1.watched.split_view
    assert m1.watched.tree_size == 3
    # Once its log is larger than the peer's tree, it proves it too. In one batch: a
    # checkpoint of size 5 on the way, heard of, would be a same-size split view.
    await grow_at_once(log, session, 3, 4)  # size 7
    await eventually(lambda: m1.watched.split_view, what="a split view at m1")
    await assert_caught(m1, session, log, DIFFERENT_SIZES)
    assert m1.watched.tree_size == 7


async def test_a_branch_that_reaches_a_refused_checkpoints_size_proves_it_there(
    log: LogUnderTest, fork: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    """A peer's checkpoint of another branch, refused while the monitor's log is smaller,
    is a same-size split view once the log reaches its size; the monitor then trusts
    nothing more its log signs, from the follower or from gossip (a log growing one entry
    at a time past the other branch is caught at the size where they cross)."""
    await grow(log, session, 0, 1)
    await grow(fork, session, 0, 1)  # the same first entry, then others
    await grow(log, session, 1, 2)  # size 3
    await grow(fork, session, 100, 1)  # size 2
    other = await checkpoint(session, log.base)
    monitor = MonitorUnderTest(
        tmp_path / "m", fork.base, log.verifier, [log.operator.verifier], poll_interval=1000
    )
    await monitor.start()
    try:
        await eventually(lambda: monitor.watched.tree_size == 2, what="size 2")
        status, body = await gossip(session, monitor.base, other)
        assert status == 503, body  # its log has no tree of size 3 to prove it with
        assert await evidence(session, monitor.base) == []
        await grow(fork, session, 101, 1)  # size 3: the other branch's size, another root
        status, body = await gossip(session, monitor.base, await checkpoint(session, fork.base))
        assert (status, body["result"], body["tree_size"]) == (200, "advanced", 3)
        status, body = await gossip(session, monitor.base, other)
        assert (status, body["result"], body["tree_size"]) == (409, "split-view", 3)
        await assert_caught(monitor, session, fork, SAME_SIZE)

        await grow(fork, session, 102, 2)  # size 5
        larger = await checkpoint(session, fork.base)
        status, body = await gossip(session, monitor.base, larger)
        assert (status, body["result"], body["tree_size"]) == (200, "not-checked", 3)
        assert monitor.server is not None
        await monitor.server.app[SERVICES].follower.poll_once()
        assert monitor.watched.tree_size == 3
        assert monitor.watched.progress.next_index == 3
    finally:
        await monitor.stop()


async def test_a_peer_that_is_down_does_not_stop_the_monitor(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    await grow(log, session, 0, 2)
    monitor = MonitorUnderTest(
        tmp_path / "m",
        log.base,
        log.verifier,
        [log.operator.verifier],
        peers=[NOWHERE, f"{NOWHERE}/x"],
    )
    await monitor.start()
    try:
        await eventually(lambda: monitor.watched.tree_size == 2, what="size 2")
        assert monitor.server is not None
        services = monitor.server.app[SERVICES]
        gossiper = services.gossiper
        assert gossiper is not None
        await eventually(lambda: gossiper.rounds >= 3, what="3 gossip rounds")
        await grow(log, session, 2, 2)
        await eventually(lambda: monitor.watched.tree_size == 4, what="size 4")
        async with session.get(f"{monitor.base}/metrics") as resp:
            text = await resp.text()
        assert 'firmlog_monitor_gossip_total{direction="push",outcome="unreachable"}' in text
        async with session.get(f"{monitor.base}/healthz") as resp:
            assert (await resp.json())["status"] == "ok"
        assert services.gossip_task is not None
        assert not services.gossip_task.done()
    finally:
        await monitor.stop()


async def test_a_peer_that_never_answers_is_given_up_on_time(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing

    silent = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    await grow(log, session, 0, 1)
    monitor = MonitorUnderTest(
        tmp_path / "m",
        log.base,
        log.verifier,
        [log.operator.verifier],
        peers=[f"http://127.0.0.1:{port}"],
        request_timeout=0.3,
    )
    await monitor.start()
    try:
        assert monitor.server is not None
        gossiper = monitor.server.app[SERVICES].gossiper
        assert gossiper is not None
        await eventually(lambda: gossiper.rounds >= 2, timeout=10, what="2 gossip rounds")
        assert monitor.watched.tree_size == 1
        async with session.get(f"{monitor.base}/healthz") as resp:
            assert (await resp.json())["status"] == "ok"
    finally:
        await monitor.stop()
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_post_gossip_status_codes(
    log: LogUnderTest, fork: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    await grow(log, session, 0, 2)
    await grow(fork, session, 100, 1)
    monitor = MonitorUnderTest(
        tmp_path / "m", log.base, log.verifier, [log.operator.verifier], poll_interval=1000
    )
    early = await checkpoint(session, log.base)
    await monitor.start()
    try:
        await eventually(lambda: monitor.watched.tree_size == 2, what="size 2")
        base = monitor.base
        assert (await gossip(session, base, b"not a note"))[0] == 400
        assert (await gossip(session, base, b"\xff\xfe\n\n"))[0] == 400
        cp = CheckpointNote.parse(early).checkpoint
        impostor = sign_checkpoint(cp, generate_key(log.log_key.name))
        status, body = await gossip(session, base, impostor)
        assert status == 403, body
        other = dataclasses.replace(cp, origin="other.example/log")
        status, body = await gossip(
            session, base, sign_checkpoint(other, generate_key("other.example/log"))
        )
        assert status == 404, body

        # The checkpoint it trusts: 200, nothing changes.
        status, body = await gossip(session, base, early)
        assert (status, body["result"], body["tree_size"]) == (200, "consistent", 2)
        # A larger one, proven from the log's tiles: trusted and cosigned.
        await grow(log, session, 2, 3)
        larger = await checkpoint(session, log.base)
        status, body = await gossip(session, base, larger)
        assert (status, body["result"], body["tree_size"]) == (200, "advanced", 5)
        assert monitor.watched.trusted is not None
        assert monitor.watched.trusted.note == larger
        # An older one, proven a prefix: 200, still size 5.
        status, body = await gossip(session, base, early)
        assert (status, body["result"], body["tree_size"]) == (200, "consistent", 5)
        # A fork's: a split view, evidence kept, cosigning stopped.
        forked = await checkpoint(session, fork.base)
        status, body = await gossip(session, base, forked)
        assert status == 409, body
        assert body["result"] == "split-view"
        assert body["split_view"] is True
        (item,) = await evidence(session, base)
        assert item["kind"] == DIFFERENT_SIZES
        SplitViewEvidence.from_json(item).verify(log.verifier)
        assert base64.b64decode(item["notes"][1]) == forked  # byte for byte
        status, _, _ = await monitor.add_checkpoint(session, 5, [], larger)
        assert status == 403
        status, body = await gossip(session, base, larger)
        assert (status, body["result"]) == (200, "not-checked")
    finally:
        await monitor.stop()


async def test_a_monitor_that_verified_nothing_takes_no_peer_checkpoint(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    await grow(log, session, 0, 1)
    note = await checkpoint(session, log.base)
    monitor = MonitorUnderTest(tmp_path / "m", NOWHERE, log.verifier)
    await monitor.start()
    try:
        status, _ = await gossip(session, monitor.base, note)
        assert status == 503
        assert monitor.watched.trusted is None
    finally:
        await monitor.stop()
