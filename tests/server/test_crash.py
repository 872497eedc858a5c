"""Crash safety: a server killed with SIGKILL loses no acknowledged entry (DESIGN.md 4, 7).

One real ``firmlog-server serve`` process takes sustained concurrent
submissions and is killed with SIGKILL at random moments (seeded; the seed
is printed, and ``FIRMLOG_CRASH_SEED`` replays its kill times), then
restarted on the same data directory and database each time. Clients keep
submitting: a submission answered 200 is *acknowledged* (its bundle
verifies at once against its own checkpoint); one that saw a connection
error or a 503 is retried later, so some retried entries were in fact
logged before the kill and must come back with their first index. Some
acknowledged entries are resubmitted on purpose and must keep their index.
A 503 other than pushback (PoolFull, ShuttingDown) fails the test, and so
does any error the server logs. Pollers record every checkpoint the server
serves. The sequencer runs with short batches (20 ms, at most 16 entries)
so that a kill often lands in or right after an integration. After each
restart the log must be at least as large as the highest index
acknowledged before the kill.

At the end, entries never acknowledged are submitted once more, and then:

- every acknowledged entry is in the final log at the index its bundle
  named, and ``/v1/bundle/<index>`` proves the same leaf against the newest
  checkpoint;
- every checkpoint ever served (polled, or in a bundle) is signed by the
  log, no larger than the newest, and consistent with it (a consistency
  proof from the server, verified with the client's ``verify_consistency``);
- the log holds only entries the clients submitted, each once;
- the whole log re-verifies from its tiles and entry bundles.

A second test crashes a server and then resubmits, in one batch, old
entries from several tiles: with the tile cache empty, each proof needs a
tile loaded from storage (this once answered 503 after the commit).

Both backends: SQLite in the data directory (the default) and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import deque
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
    open_cp,
    running_servers,
    write_config,
)
from support.logcheck import VerifiedLog, fetch, verify_whole_log
from support.processes import until

from firmlog.client.bundle import ProofBundle
from firmlog.client.tiles import TILE_WIDTH

pytestmark = pytest.mark.slow

KILLS = 5
KILL_AFTER_S = (0.2, 1.5)  # each kill comes this long after the server answered /healthz
FINAL_RUN_S = 0.5  # submitting after the last restart, without a kill
CONCURRENCY = 24  # submissions in flight
RESUBMIT_SHARE = 0.05  # of submissions: an acknowledged entry again
DOWN_PAUSE_S = 0.1  # after a connection error: the server is down
PUSHBACK_PAUSE_S = 0.05  # after a 503
POLL_INTERVAL_S = 0.01
RUN_TIMEOUT_S = 60.0  # the kills and restarts; a safety bound
READER_REFRESH_S = 0.25  # LogReader's refresh_interval: a worker lags a commit by at most twice it


@pytest.fixture
def seed() -> int:
    value = os.environ.get("FIRMLOG_CRASH_SEED")
    chosen = int(value) if value else random.SystemRandom().randrange(2**32)
    print(f"crash test seed {chosen} (FIRMLOG_CRASH_SEED={chosen} replays the kill times)")
    return chosen


@dataclass
class Clients:
    """The clients' side: what was submitted, acknowledged and served."""

    keys: LogKeys
    rng: random.Random
    next_i: int = 0
    submitted: set[bytes] = field(default_factory=set)
    acked: dict[bytes, int] = field(default_factory=dict)  # entry -> index its bundle named
    by_index: dict[int, bytes] = field(default_factory=dict)
    bundles: int = 0
    retry: deque[bytes] = field(default_factory=deque)
    failed: set[bytes] = field(default_factory=set)  # since the last restart
    in_doubt: dict[bytes, int] = field(default_factory=dict)  # entry -> tree size at restart
    notes: set[bytes] = field(default_factory=set)  # every checkpoint note seen
    failed_attempts: int = 0
    server_errors: list[bytes] = field(default_factory=list)  # 503s that are not pushback
    resubmissions: int = 0
    polls: int = 0

    def next_entry(self) -> bytes:
        if self.retry:
            return self.retry.popleft()
        if self.acked and self.rng.random() < RESUBMIT_SHARE:
            self.resubmissions += 1
            return self.rng.choice(list(self.acked))
        entry = make_entry(self.keys.operator, "crash", self.next_i)
        self.next_i += 1
        self.submitted.add(entry)
        return entry

    def acknowledged(self, entry: bytes, raw: bytes) -> ProofBundle:
        """Record a 200 answer: the bundle must verify and agree with earlier answers."""
        bundle = check_bundle(raw, entry, self.keys.log)
        self.bundles += 1
        self.notes.add(bundle.checkpoint)
        first = self.acked.setdefault(entry, bundle.index)
        assert first == bundle.index, (
            f"an acknowledged entry moved: first index {first}, now {bundle.index}"
        )
        holder = self.by_index.setdefault(bundle.index, entry)
        assert holder == entry, f"two entries acknowledged at index {bundle.index}"
        return bundle

    def not_acknowledged(self, entry: bytes) -> None:
        self.failed_attempts += 1
        if entry not in self.acked:
            self.failed.add(entry)
            self.retry.append(entry)

    def restarted(self, tree_size: int) -> None:
        """Entries that failed since the kill were maybe logged, below ``tree_size``."""
        for entry in self.failed - self.acked.keys():
            self.in_doubt.setdefault(entry, tree_size)
        self.failed.clear()

    def logged_before_a_kill(self) -> int:
        """In-doubt entries later acknowledged at an index the log had before the restart."""
        return sum(1 for e, size in self.in_doubt.items() if self.acked.get(e, size) < size)


async def submitter(
    session: aiohttp.ClientSession, base: str, clients: Clients, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        entry = clients.next_entry()
        try:
            async with session.post(f"{base}/v1/entries", data=entry) as resp:
                status, body = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            status, body = 0, b""  # the server is down, or died while we waited
        if status == 200:
            clients.acknowledged(entry, body)
        elif status == 0 or is_pushback(status, body):
            clients.not_acknowledged(entry)
            await asyncio.sleep(DOWN_PAUSE_S if status == 0 else PUSHBACK_PAUSE_S)
        elif status == 503:  # the server failed: retry, and fail the test at the end
            clients.server_errors.append(body)
            clients.not_acknowledged(entry)
            await asyncio.sleep(PUSHBACK_PAUSE_S)
        else:
            raise AssertionError(f"POST /v1/entries: {status} {body[:300]!r}")


async def poller(
    session: aiohttp.ClientSession, base: str, clients: Clients, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        try:
            async with session.get(f"{base}/checkpoint") as resp:
                if resp.status == 200:
                    clients.notes.add(await resp.read())
                    clients.polls += 1
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(POLL_INTERVAL_S)


async def settled_checkpoint(base: str) -> bytes:
    """The checkpoint every worker serves once the log is quiet.

    A worker serves a checkpoint read from the database at most twice
    READER_REFRESH_S ago: the checkpoint is settled once it was the answer on
    new connections (to any worker) for longer than that."""
    deadline = time.monotonic() + 30
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as fresh:
        note, since = b"", time.monotonic()
        while True:
            got = await fetch(fresh, base, "/checkpoint")
            if got != note:
                note, since = got, time.monotonic()
            elif time.monotonic() - since > 3 * READER_REFRESH_S:
                return note
            assert time.monotonic() < deadline, "the served checkpoint never settled"
            await asyncio.sleep(0.01)


@dataclass(frozen=True)
class Kill:
    after: float  # seconds after /healthz answered
    acked: int  # entries acknowledged before it
    recovered_size: int  # tree size after the restart


@pytest.mark.parametrize("workers", [1, 2])
async def test_killed_server_loses_no_acknowledged_entry(
    tmp_path: Path, new_database: Callable[[], Awaitable[str | None]], seed: int, workers: int
) -> None:
    database = await new_database()
    rng = random.Random(seed)
    kill_after = [rng.uniform(*KILL_AFTER_S) for _ in range(KILLS)]
    data_dir = tmp_path / "firmlog-data"
    write_config(data_dir, batch_interval=0.02, batch_size=16)
    started = time.monotonic()
    with running_servers() as servers:
        server = ServerProcess(
            "server", data_dir, tmp_path / "server.log", database, workers=workers
        )
        servers.append(server)
        await server.start()
        keys = load_keys(data_dir)
        clients = Clients(keys, random.Random(seed + 1))
        kills: list[Kill] = []

        stop = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=CONCURRENCY + 4)
        timeout = aiohttp.ClientTimeout(total=15)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            aiohttp.ClientSession(timeout=timeout) as polling,
        ):

            async def crash_and_restart() -> None:
                for delay in kill_after:
                    await asyncio.sleep(delay)
                    server.kill()
                    acked = len(clients.acked)
                    acked_below = max(clients.acked.values(), default=-1) + 1
                    await server.start()
                    note = await fetch(polling, server.base, "/checkpoint")
                    clients.notes.add(note)
                    size = open_cp(note, keys.log).tree_size
                    assert size >= acked_below, (
                        f"restarted with {size} entries, but entries up to index "
                        f"{acked_below - 1} were acknowledged before the kill"
                    )
                    clients.restarted(size)
                    kills.append(Kill(delay, acked, size))
                await asyncio.sleep(FINAL_RUN_S)
                stop.set()

            async with asyncio.timeout(RUN_TIMEOUT_S), asyncio.TaskGroup() as tg:
                for _ in range(CONCURRENCY):
                    tg.create_task(submitter(session, server.base, clients, stop))
                tg.create_task(poller(polling, server.base, clients, stop))
                tg.create_task(crash_and_restart())
            driven = time.monotonic()

            # Entries never acknowledged get one more try (those logged keep their index).
            last_try = sorted(clients.submitted - clients.acked.keys())
            for entry in last_try:
                async with session.post(f"{server.base}/v1/entries", data=entry) as resp:
                    body = await resp.read()
                    assert resp.status == 200, f"after the run: {resp.status} {body[:300]!r}"
                clients.acknowledged(entry, body)
            newest_note = await settled_checkpoint(server.base)
            newest = open_cp(newest_note, keys.log)

            # Every acknowledged entry is where its bundle said, provably in the newest tree.
            limit = asyncio.Semaphore(16)

            async def check_latest_bundle(entry: bytes, index: int) -> None:
                async with limit:
                    raw = await fetch(session, server.base, f"/v1/bundle/{index}")
                bundle = check_bundle(raw, entry, keys.log)
                assert bundle.index == index
                assert bundle.checkpoint == newest_note, (
                    f"/v1/bundle/{index} is not against the newest checkpoint"
                )

            await asyncio.gather(*(check_latest_bundle(e, i) for e, i in clients.acked.items()))
            # Every checkpoint served (polled, or in a bundle) is consistent with the newest.
            sizes = await check_checkpoints(
                session, server.base, keys.log, clients.notes, newest_note
            )

        checked = await verify_whole_log(server.base, keys.log)
        assert checked.note == newest_note
        for entry, index in clients.acked.items():
            assert checked.entries[index] == entry, f"entry {index} is not the acknowledged one"
        assert len(set(checked.entries)) == len(checked.entries), "an entry is logged twice"
        assert set(checked.entries) == clients.submitted, "the log holds unknown entries"
        assert newest.tree_size == len(clients.submitted)

        print(
            f"seed {seed}, {'PostgreSQL' if database else 'SQLite'}: kills at "
            + ", ".join(
                f"{k.after:.2f} s ({k.acked} acked, {k.recovered_size} logged)" for k in kills
            )
            + f"; {len(clients.submitted)} entries, {clients.bundles} bundles, "
            f"{clients.resubmissions} resubmissions, {clients.failed_attempts} failed attempts, "
            f"{len(clients.in_doubt)} entries in doubt after a kill, "
            f"{clients.logged_before_a_kill()} of them logged before it, "
            f"{len(last_try)} tried once more at the end; "
            f"{len(clients.notes)} checkpoints ({sizes} sizes) from {clients.polls} polls; "
            f"run {driven - started:.1f} s, check {time.monotonic() - driven:.1f} s"
        )
        # Only pushback and a dead server excuse a failed submission.
        assert not clients.server_errors, (
            f"{len(clients.server_errors)} submissions were answered 503 without pushback, "
            f"e.g. {clients.server_errors[0][:200]!r}; errors in the server's log:\n"
            f"{server.errors(3)}"
        )
        assert_no_errors(servers)


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_restarted_server_answers_resubmissions_from_many_tiles(
    tmp_path: Path, new_database: Callable[[], Awaitable[str | None]], workers: int
) -> None:
    """One batch of old entries from different tiles, right after a crash: same indexes.

    After a restart the server has no tile cached, so each old entry's proof
    needs a tile of its own loaded from storage.
    """
    database = await new_database()
    data_dir = tmp_path / "firmlog-data"
    write_config(data_dir, batch_interval=0.2, batch_size=1024)
    with running_servers() as servers:
        server = ServerProcess(
            "server", data_dir, tmp_path / "server.log", database, workers=workers
        )
        servers.append(server)
        await server.start()
        keys = load_keys(data_dir)
        entries = [make_entry(keys.operator, "tiles", i) for i in range(TILE_WIDTH * 5 + 10)]
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def submit(entry: bytes) -> int:
                async with session.post(f"{server.base}/v1/entries", data=entry) as resp:
                    body = await resp.read()
                    assert resp.status == 200, (
                        f"POST /v1/entries: {resp.status} {body[:200]!r}\n{server.errors(3)}"
                    )
                return check_bundle(body, entry, keys.log).index

            first = await asyncio.gather(*(submit(e) for e in entries))
            assert sorted(first) == list(range(len(entries)))
            server.kill()
            await server.start()
            # One entry from each full tile, and a new one, in one batch.
            again = [entries[first.index(t * TILE_WIDTH + 7)] for t in range(5)]
            fresh = make_entry(keys.operator, "tiles", len(entries))
            indexes = await asyncio.gather(*(submit(e) for e in [*again, fresh]))
        assert indexes[:-1] == [t * TILE_WIDTH + 7 for t in range(5)]
        assert indexes[-1] == len(entries)
        # With several workers, one re-reads the latest checkpoint a moment after
        # another one's commit: check the log once the one served covers every entry.
        found: list[VerifiedLog] = []

        async def whole() -> bool:
            found[:] = [await verify_whole_log(server.base, keys.log)]
            return found[0].checkpoint.tree_size >= len(entries) + 1

        await until(whole, 30, "a checkpoint covering every entry")
        assert found[0].checkpoint.tree_size == len(entries) + 1
        assert_no_errors(servers)
