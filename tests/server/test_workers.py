"""``firmlog-server serve --workers N``: N processes serve one port and one log.

Real servers on loopback (firmlog.server.workers), on both backends. A worker
is told apart by the ``pid`` of its ``/healthz`` answer; a test that needs to
talk to two different workers keeps one keep-alive connection to each.

- every worker answers on the one port, and the banner comes once;
- concurrent submissions through the port are logged exactly once each, at
  indexes 0..N-1, by the sequencers of both workers in turn, and the whole
  log verifies;
- what one worker commits binds the other at once: an admission through
  one worker lets another accept the vendor's release, and a key rotation
  through one makes another refuse the old keys it has cached;
- a client reads its writes through any worker: once given a bundle under
  tree size N, it is never shown a smaller checkpoint, nor a bundle or proof
  against a smaller tree, by another worker;
- SIGTERM stops every worker gracefully and the supervisor exits 0;
- a worker killed with SIGKILL is replaced, and no acknowledged entry is lost;
- a start that fails in the workers is refused in one line, with status 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from procs import (
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
from support.entries import admission, release
from support.logcheck import VerifiedLog, fetch, verify_whole_log

from firmlog.client.bundle import ProofBundle
from firmlog.client.entries import KeySet, sign_entry
from firmlog.client.keys import Ed25519Signer
from firmlog.server.workers import TreeSizeBoard

pytestmark = pytest.mark.slow

DEADLINE_S = 30.0


async def until(check: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds; AssertionError past DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not await _holds(check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {DEADLINE_S} s for {what}")
        await asyncio.sleep(0.02)


async def _holds(value: bool | Awaitable[bool]) -> bool:
    return await value if inspect.isawaitable(value) else value


async def health(session: aiohttp.ClientSession, base: str) -> dict[str, int | str]:
    async with session.get(f"{base}/healthz") as resp:
        assert resp.status == 200, await resp.text()
        found: dict[str, int | str] = await resp.json()
        return found


async def answering_pid(base: str) -> int:
    """The pid of the worker that answers a new connection."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        return int((await health(session, base))["pid"])


@asynccontextmanager
async def pinned_sessions(base: str, count: int) -> AsyncIterator[list[aiohttp.ClientSession]]:
    """``count`` sessions, each with one keep-alive connection to a different worker."""
    found: dict[int, aiohttp.ClientSession] = {}
    spare: list[aiohttp.ClientSession] = []
    try:
        deadline = time.monotonic() + DEADLINE_S
        while len(found) < count:
            assert time.monotonic() < deadline, f"only workers {sorted(found)} took connections"
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            pid = int((await health(session, base))["pid"])
            if pid in found:
                spare.append(session)
            else:
                found[pid] = session
        sessions = list(found.values())
        for session in sessions:  # still the same connection, to the same worker
            assert int((await health(session, base))["pid"]) in found
        yield sessions
    finally:
        for session in [*found.values(), *spare]:
            await session.close()


def log_records(server: ServerProcess) -> list[dict[str, object]]:
    """The JSON lines of the server's log; each whole, though several workers write it."""
    records = []
    for line in server.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("{"):
            continue  # the banner, the test's notes
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"a log line is not one JSON object: {line[:300]}") from None
        assert isinstance(record, dict), line
        records.append(record)
    return records


def test_the_tree_size_board_is_shared_across_the_fork_and_only_grows() -> None:
    board = TreeSizeBoard(2)
    pid = os.fork()
    if pid == 0:  # a worker in slot 1
        code = 1
        try:
            board.claim(1)
            board.raise_to(7)
            board.raise_to(5)  # never back
            code = 0 if board.largest() == 7 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert board.largest() == 7  # the parent sees what the worker wrote
    with pytest.raises(RuntimeError, match="claimed a slot"):
        board.raise_to(9)  # the parent writes no slot
    board.claim(0)
    board.raise_to(3)
    assert board.largest() == 7
    board.raise_to(8)
    assert board.largest() == 8
    with pytest.raises(ValueError, match="slot 2 is not on a board of 2"):
        board.claim(2)


async def test_every_worker_answers_on_the_one_port(
    tmp_path: Path, new_database: Callable[[], Awaitable[str | None]]
) -> None:
    database = await new_database()
    data_dir = tmp_path / "firmlog-data"
    with running_servers() as servers:
        server = ServerProcess("server", data_dir, tmp_path / "server.log", database, workers=3)
        servers.append(server)
        await server.start()
        workers = server.children()
        assert len(workers) == 3, f"expected 3 worker processes, found {workers}"
        seen: set[int] = set()

        async def all_answered() -> bool:
            seen.add(await answering_pid(server.base))
            assert seen <= workers, f"pids {seen - workers} answered, but are not its workers"
            return seen == workers

        await until(all_answered, f"all of {sorted(workers)} to answer")

        def events(name: str) -> int:
            """How many times the banner event ``name`` was logged (JSON lines)."""
            found = 0
            for line in server.log_path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    found += json.loads(line).get("event") == name
            return found

        async def banner() -> bool:
            return events("listening") > 0

        await until(banner, "the banner")
        text = server.log_path.read_text()
        assert events("listening") == 1, text
        assert events("keys") == 1, text
        assert_no_errors(servers)


async def test_concurrent_submissions_are_logged_once_by_every_worker_in_turn(
    tmp_path: Path, new_database: Callable[[], Awaitable[str | None]]
) -> None:
    entries_count, concurrency = 400, 48
    database = await new_database()
    data_dir = tmp_path / "firmlog-data"
    write_config(data_dir, batch_interval=0.01, batch_size=16)
    with running_servers() as servers:
        server = ServerProcess("server", data_dir, tmp_path / "server.log", database, workers=2)
        servers.append(server)
        await server.start()
        keys = load_keys(data_dir)
        entries = [make_entry(keys.operator, "workers", i) for i in range(entries_count)]
        acked: dict[bytes, int] = {}
        notes: set[bytes] = set()
        queue = list(reversed(entries))
        # A connection per request: which worker answers is decided at accept, and
        # one worker may accept a burst of kept-alive connections all at once.
        connector = aiohttp.TCPConnector(limit=concurrency, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def submitter() -> None:
                while queue:
                    entry = queue.pop()
                    async with session.post(f"{server.base}/v1/entries", data=entry) as resp:
                        status, body = resp.status, await resp.read()
                    if is_pushback(status, body):
                        queue.insert(0, entry)
                        continue
                    assert status == 200, f"POST /v1/entries: {status} {body[:300]!r}"
                    bundle = check_bundle(body, entry, keys.log)
                    assert entry not in acked
                    acked[entry] = bundle.index
                    notes.add(bundle.checkpoint)

            async with asyncio.timeout(120), asyncio.TaskGroup() as tg:
                for _ in range(concurrency):
                    tg.create_task(submitter())
            assert sorted(acked.values()) == list(range(entries_count))
            newest = await fetch(session, server.base, "/checkpoint")
            await check_checkpoints(session, server.base, keys.log, notes, newest)
        verified = await verify_whole_log(server.base, keys.log)
        assert verified.checkpoint.tree_size == entries_count
        assert {e: i for i, e in enumerate(verified.entries)} == acked
        integrated_by = {
            r.get("worker") for r in log_records(server) if r.get("event") == "integrated"
        }
        assert integrated_by == {0, 1}, f"batches integrated by workers {integrated_by}"
        assert_no_errors(servers)


async def submit(session: aiohttp.ClientSession, base: str, entry: bytes) -> tuple[int, str]:
    async with session.post(f"{base}/v1/entries", data=entry) as resp:
        return resp.status, await resp.text()


async def test_what_one_worker_commits_binds_the_other(
    tmp_path: Path, new_database: Callable[[], Awaitable[str | None]]
) -> None:
    vendor = "widgets.example"
    old_key = Ed25519Signer.from_seed(f"{vendor}/release", b"\x41" * 32)
    new_key = Ed25519Signer.from_seed(f"{vendor}/release", b"\x42" * 32)
    database = await new_database()
    data_dir = tmp_path / "firmlog-data"
    with running_servers() as servers:
        server = ServerProcess("server", data_dir, tmp_path / "server.log", database, workers=2)
        servers.append(server)
        await server.start()
        operator = load_keys(data_dir).operator
        async with pinned_sessions(server.base, 2) as (a, b):
            first = sign_entry(release("1.0", vendor), [old_key])
            status, text = await submit(b, server.base, first)
            assert status == 403, text  # b has nothing to cache
            assert "not admitted" in text
            admitted = admission(operator, vendor, old_key)
            assert (await submit(a, server.base, admitted))[0] == 200
            status, text = await submit(b, server.base, first)
            assert status == 200, f"b refused a release a admitted: {status} {text}"
            rotation = sign_entry(KeySet(vendor, (new_key.verifier.vkey,), 1, 2), [old_key])
            status, text = await submit(a, server.base, rotation)
            assert status == 200, text
            # b verified the old key set; the log's current one is a's rotation
            status, text = await submit(
                b, server.base, sign_entry(release("2.0", vendor), [old_key])
            )
            assert status == 400, f"b honoured keys a rotated away: {status} {text}"
            assert "serial 2" in text
            status, text = await submit(
                b, server.base, sign_entry(release("2.0", vendor), [new_key])
            )
            assert status == 200, f"b refused the rotated key: {status} {text}"
        assert_no_errors(servers)


async def test_a_client_reads_its_writes_through_another_worker(
    tmp_path: Path, new_database: Callable[[], Awaitable[str | None]]
) -> None:
    # Each worker re-reads the latest checkpoint from storage only every 0.25 s on
    # its own; without the tree size the workers share, the other worker answers
    # with the tree before the submission most of the time.
    rounds = 24
    database = await new_database()
    data_dir = tmp_path / "firmlog-data"
    write_config(data_dir, batch_interval=0.01, batch_size=16)
    with running_servers() as servers:
        server = ServerProcess("server", data_dir, tmp_path / "server.log", database, workers=2)
        servers.append(server)
        await server.start()
        keys = load_keys(data_dir)
        async with pinned_sessions(server.base, 2) as pinned:
            for i in range(rounds):
                writer, reader = pinned[i % 2], pinned[(i + 1) % 2]
                entry = make_entry(keys.operator, "ryw", i)
                async with writer.post(f"{server.base}/v1/entries", data=entry) as resp:
                    body = await resp.read()
                    assert resp.status == 200, body
                bundle = check_bundle(body, entry, keys.log)
                size = open_cp(bundle.checkpoint, keys.log).tree_size
                shown = open_cp(await fetch(reader, server.base, "/checkpoint"), keys.log)
                assert shown.tree_size >= size, (
                    f"round {i}: one worker answered a submission under tree size {size}, "
                    f"then the other served the checkpoint of size {shown.tree_size}"
                )
                path = f"/v1/bundle/{bundle.index}"
                again = ProofBundle.parse(await fetch(reader, server.base, path))
                assert open_cp(again.checkpoint, keys.log).tree_size >= size
                path = f"/v1/proof/inclusion?index={bundle.index}&tree_size={size}"
                assert json.loads(await fetch(reader, server.base, path))["tree_size"] == size
        assert_no_errors(servers)


async def test_sigterm_stops_every_worker_gracefully(
    tmp_path: Path, new_database: Callable[[], Awaitable[str | None]]
) -> None:
    database = await new_database()
    data_dir = tmp_path / "firmlog-data"
    with running_servers() as servers:
        server = ServerProcess("server", data_dir, tmp_path / "server.log", database, workers=2)
        servers.append(server)
        await server.start()
        workers = server.children()
        assert len(workers) == 2
        operator = load_keys(data_dir).operator
        async with aiohttp.ClientSession() as session:
            for i in range(4):
                assert (await submit(session, server.base, make_entry(operator, "t", i)))[0] == 200
        server.terminate()
        assert server.wait_stopped(time.monotonic() + DEADLINE_S) == 0, server.tail()
        assert not server.children()
        for pid in workers:  # gone, not only orphaned
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"worker {pid} still runs"
        stopped = {r.get("worker") for r in log_records(server) if r.get("event") == "log stopped"}
        assert stopped == {0, 1}, f"workers {stopped} stopped their logs gracefully"
        assert_no_errors(servers)


def _zombie(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rindex(")") + 2] == "Z"


async def test_a_killed_worker_is_replaced_and_no_acknowledged_entry_is_lost(
    tmp_path: Path, new_database: Callable[[], Awaitable[str | None]]
) -> None:
    database = await new_database()
    data_dir = tmp_path / "firmlog-data"
    write_config(data_dir, batch_interval=0.02, batch_size=16)
    with running_servers() as servers:
        server = ServerProcess("server", data_dir, tmp_path / "server.log", database, workers=2)
        servers.append(server)
        await server.start()
        supervisor = server.pid
        keys = load_keys(data_dir)
        workers = server.children()
        assert len(workers) == 2
        acked: dict[bytes, int] = {}
        unacked: set[bytes] = set()
        counter = iter(range(10**6))
        stop = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def submitter() -> None:
                while not stop.is_set():
                    entry = make_entry(keys.operator, "kill", next(counter))
                    try:
                        status, text = await submit(session, server.base, entry)
                    except (aiohttp.ClientError, TimeoutError):
                        unacked.add(entry)  # its worker died under it
                        continue
                    if status == 200:
                        acked[entry] = check_bundle(text.encode(), entry, keys.log).index
                    elif is_pushback(status, text.encode()):
                        unacked.add(entry)
                    else:
                        raise AssertionError(f"POST /v1/entries: {status} {text[:300]}")

            async def kill_one() -> None:
                await until(lambda: len(acked) >= 50, "50 acknowledged entries")
                victim = min(workers)
                os.kill(victim, signal.SIGKILL)
                before = len(acked)

                async def replaced() -> bool:
                    now = server.children()
                    return len(now) == 2 and victim not in now

                await until(replaced, f"a worker in place of {victim}")
                (new,) = server.children() - workers

                async def answers() -> bool:
                    return await answering_pid(server.base) == new

                await until(answers, f"the new worker {new} to answer")
                await until(lambda: len(acked) >= before + 50, "50 more acknowledged")
                stop.set()

            async with asyncio.timeout(120), asyncio.TaskGroup() as tg:
                for _ in range(16):
                    tg.create_task(submitter())
                tg.create_task(kill_one())
            assert server.pid == supervisor
            assert server.children().isdisjoint({min(workers)})
            for entry in unacked:  # logged before the kill, or not: once either way
                status, text = await submit(session, server.base, entry)
                assert status == 200, f"{status} {text[:300]}"
                acked[entry] = check_bundle(text.encode(), entry, keys.log).index
        # A worker re-reads the latest checkpoint a moment after another one's commit:
        # check the log once the checkpoint served covers every acknowledged entry.
        checked: list[VerifiedLog] = []

        async def whole() -> bool:
            checked[:] = [await verify_whole_log(server.base, keys.log)]
            return checked[0].checkpoint.tree_size >= len(acked)

        await until(whole, "a checkpoint covering every acknowledged entry")
        assert {e: i for i, e in enumerate(checked[0].entries)} == acked
        died = [r for r in log_records(server) if r.get("event") == "worker died; restarting it"]
        assert [r.get("outcome") for r in died] == ["killed by SIGKILL"], died


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("workers", [2, 3])
def test_a_start_the_workers_refuse_is_one_line_and_status_2(tmp_path: Path, workers: int) -> None:
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/firmlog"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRMLOG_")}
    command = [sys.executable, "-m", "firmlog.server.cli", "serve"]
    command += ["--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0"]
    command += ["--database", url, "--workers", str(workers)]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 2, stderr
    assert stderr.splitlines() == [
        f"firmlog-server: cannot connect to PostgreSQL ({url}): "
        + stderr.split(f"({url}): ", 1)[1].rstrip("\n")
    ], stderr
    assert "; start PostgreSQL there, or fix the host and port" in stderr


async def test_workers_never_mix_their_log_lines(tmp_path: Path) -> None:
    """Two workers log at once into one file: every line stays one JSON object."""
    data_dir = tmp_path / "firmlog-data"
    with running_servers() as servers:
        server = ServerProcess("server", data_dir, tmp_path / "server.log", workers=2)
        servers.append(server)
        await server.start()
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def miss(i: int) -> None:
                async with session.get(f"{server.base}/v1/bundle/{10**6 + i}") as resp:
                    assert resp.status == 404  # logged: every answer >= 400 is

            async with asyncio.timeout(120), asyncio.TaskGroup() as tg:
                for i in range(3000):
                    tg.create_task(miss(i))
        records = [r for r in log_records(server) if r.get("status") == 404]
        assert len(records) == 3000
        assert {r.get("worker") for r in records} == {0, 1}
