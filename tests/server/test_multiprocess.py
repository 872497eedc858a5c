"""No forks, ever: three server processes share one PostgreSQL database (DESIGN.md 4).

Three real ``firmlog-server serve`` processes (each with one worker, or with
two: six processes integrating), one data directory (same keys)
and one fresh database. Clients submit distinct entries to all three at
once, and the same entries to different servers at the same moment, while
pollers record every checkpoint each server serves. Then:

- every bundle verifies against its own checkpoint;
- an entry submitted several times, to different servers, has one index;
- the indexes are exactly 0..N-1 and N is the number of distinct entries;
- every checkpoint any server served is signed by the log, two of one size
  have one root, and each is consistent with the final one (proofs fetched
  from each server, verified with the client's ``verify_consistency``);
- the three servers serve the same final checkpoint, and the whole log
  re-verifies from each server's tiles and entry bundles.

The sequencer runs with short batches (``batch_interval`` 20 ms, at most 8
entries) so that the three processes integrate hundreds of times and
contend for the integration lock all through the run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from procs import (
    LogKeys,
    ServerProcess,
    assert_no_errors,
    check_bundle,
    check_checkpoints,
    is_pushback,
    load_keys,
    make_entry,
    running_servers,
    write_config,
)
from support.logcheck import fetch, verify_whole_log

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SERVERS = 3
PER_SERVER = 150  # distinct entries submitted to each server
CONCURRENCY = 20  # submissions in flight per server
SHARED = 30  # entries each submitted to every server at the same moment
SHARED_CONCURRENCY = 5  # such entries in flight
POLL_INTERVAL_S = 0.01
RUN_TIMEOUT_S = 60.0
MAX_ATTEMPTS = 50  # per submission, for 503 answers only


@dataclass
class Observed:
    """What the clients were given."""

    bundles: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # server, entry, bundle
    notes: set[bytes] = field(default_factory=set)  # every checkpoint note seen
    polls: int = 0
    retries: int = 0


async def submit(
    session: aiohttp.ClientSession, server: ServerProcess, entry: bytes, seen: Observed
) -> None:
    """POST one entry; retry on 503 (pushback); anything else but 200 fails the test."""
    for _ in range(MAX_ATTEMPTS):
        async with session.post(f"{server.base}/v1/entries", data=entry) as resp:
            body = await resp.read()
            status = resp.status
        if status == 200:
            seen.bundles.append((server.name, entry, body))
            return
        if not is_pushback(status, body):
            raise AssertionError(
                f"{server.name}: POST /v1/entries: {status} {body[:300]!r}\n"
                f"errors in its log:\n{server.errors(3)}"
            )
        seen.retries += 1
        await asyncio.sleep(0.05)
    raise AssertionError(f"{server.name}: still 503 after {MAX_ATTEMPTS} attempts")


async def poll_checkpoints(
    session: aiohttp.ClientSession, server: ServerProcess, seen: Observed, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        seen.notes.add(await fetch(session, server.base, "/checkpoint"))
        seen.polls += 1
        await asyncio.sleep(POLL_INTERVAL_S)


async def drive(servers: list[ServerProcess], keys: LogKeys) -> Observed:
    """Submit everything, concurrently at all servers; returns what the clients saw."""
    seen = Observed()
    distinct = {
        s.name: [make_entry(keys.operator, f"mp{n}", i) for i in range(PER_SERVER)]
        for n, s in enumerate(servers)
    }
    shared = [make_entry(keys.operator, "shared", i) for i in range(SHARED)]
    connector = aiohttp.TCPConnector(limit=SERVERS * (CONCURRENCY + 4))
    timeout = aiohttp.ClientTimeout(total=30)
    stop = asyncio.Event()
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        aiohttp.ClientSession(timeout=timeout) as polling,
    ):

        async def worker(server: ServerProcess, queue: list[bytes]) -> None:
            while queue:
                await submit(session, server, queue.pop(), seen)

        async def same_entry_everywhere(queue: list[bytes]) -> None:
            while queue:
                entry = queue.pop()
                await asyncio.gather(*(submit(session, s, entry, seen) for s in servers))

        async def submitters() -> None:
            async with asyncio.TaskGroup() as tg:
                for s in servers:
                    for _ in range(CONCURRENCY):
                        tg.create_task(worker(s, distinct[s.name]))
                for _ in range(SHARED_CONCURRENCY):
                    tg.create_task(same_entry_everywhere(shared))
            stop.set()

        async with asyncio.timeout(RUN_TIMEOUT_S), asyncio.TaskGroup() as tg:
            for s in servers:
                tg.create_task(poll_checkpoints(polling, s, seen, stop))
            tg.create_task(submitters())
    return seen


@pytest.mark.parametrize("workers", [1, 2])
async def test_three_servers_sharing_one_database_never_fork(
    tmp_path: Path, pg_factory: Callable[[], Awaitable[str]], workers: int
) -> None:
    database = await pg_factory()
    data_dir = tmp_path / "firmlog-data"
    write_config(data_dir, batch_interval=0.02, batch_size=8)
    started = time.monotonic()
    with running_servers() as servers:
        servers += [
            ServerProcess(
                f"server{n}", data_dir, tmp_path / f"server{n}.log", database, workers=workers
            )
            for n in range(SERVERS)
        ]
        await servers[0].start()  # the first start creates the keys; the others reuse them
        await asyncio.gather(*(s.start() for s in servers[1:]))
        keys = load_keys(data_dir)
        ready = time.monotonic()
        seen = await drive(servers, keys)
        driven = time.monotonic()

        # Every bundle verifies against its own checkpoint; one index per entry.
        index_of: dict[bytes, int] = {}
        for name, entry, raw in seen.bundles:
            bundle = check_bundle(raw, entry, keys.log)
            seen.notes.add(bundle.checkpoint)
            first = index_of.setdefault(entry, bundle.index)
            assert first == bundle.index, (
                f"one entry got two indexes: {first}, and {bundle.index} from {name}"
            )
        n = SERVERS * PER_SERVER + SHARED
        assert len(seen.bundles) == SERVERS * PER_SERVER + SERVERS * SHARED
        assert len(index_of) == n
        assert sorted(index_of.values()) == list(range(n)), "indexes are not exactly 0..N-1"

        # All servers agree on the final checkpoint (a reader serves one read at most
        # 0.5 s ago: twice its refresh interval).
        await asyncio.sleep(0.6)
        async with aiohttp.ClientSession() as session:
            finals = {s.name: await fetch(session, s.base, "/checkpoint") for s in servers}
            newest = finals[servers[0].name]
            assert set(finals.values()) == {newest}, f"servers disagree: {finals}"
            seen.notes.update(finals.values())
            sizes = await asyncio.gather(
                *(check_checkpoints(session, s.base, keys.log, seen.notes, newest) for s in servers)
            )

        # The whole log, from each server's tiles and entry bundles.
        for s in servers:
            checked = await verify_whole_log(s.base, keys.log)
            assert checked.note == newest
            assert checked.checkpoint.tree_size == n
            for entry, index in index_of.items():
                assert checked.entries[index] == entry, f"{s.name}: entry {index} differs"

        assert_no_errors(servers)
        print(
            f"{n} entries, {len(seen.bundles)} bundles, {len(seen.notes)} checkpoint notes "
            f"({sizes[0]} sizes) from {seen.polls} polls, {seen.retries} retries after 503; "
            f"start {ready - started:.1f} s, submit {driven - ready:.1f} s, "
            f"check {time.monotonic() - driven:.1f} s"
        )
