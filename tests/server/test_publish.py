"""--publish-dir: the server writes the tlog-tiles files into a directory that a
static web server serves in its place: the same bytes as the server's own
endpoints, the checkpoint always last, only what is public, caught up after a
restart, and never at the cost of a submission."""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import ClientSession
from support.entries import admission
from support.harness import BlackBoxLog, LogUnderTest, make_log, until
from support.logcheck import fetch
from support.metrics import Samples
from support.processes import LogProcess, script
from test_witnessing import start_witnessed, stop_witnessed

from firmlog.client.checkpoint import Checkpoint
from firmlog.client.note import split_note
from firmlog.server.app import PUBLISHER
from firmlog.server.publish import (
    HOST_ID,
    STALE_AFTER,
    StaticDirectory,
    StaticPublisher,
    files_of,
)

CLI_TIMEOUT_S = 120


def dir_size(root: Path) -> int:
    """The tree size of the directory's checkpoint (-1: none)."""
    path = root / "checkpoint"
    if not path.exists():
        return -1
    return Checkpoint.parse(split_note(path.read_bytes())[0]).tree_size


def failures(log: LogUnderTest) -> float:
    """How many publications to the directory failed."""
    return log.sample("firmlog_publish_failures_total")


async def served_failures(log: BlackBoxLog, session: ClientSession) -> float:
    """How many publications to the directory failed, from the log's /metrics."""
    samples = Samples((await fetch(session, log.base, "metrics")).decode())
    return samples.get("firmlog_publish_failures_total", 0.0)


def publisher(log: LogUnderTest) -> StaticPublisher:
    assert log.server is not None
    return log.server.app[PUBLISHER]


async def submit_all(log: BlackBoxLog, session: ClientSession, start: int, count: int) -> None:
    results = await asyncio.gather(
        *(log.submit(session, log.entry(i)) for i in range(start, start + count))
    )
    assert all(status == 200 for status, _ in results), results[:3]


async def published(log: BlackBoxLog, root: Path, size: int) -> None:
    await until(lambda: dir_size(root) == size, f"the directory's checkpoint at size {size}")


def missing(root: Path) -> list[str]:
    """The tiles and bundles the directory's checkpoint needs that are not there."""
    return [t.path for t in files_of(0, max(0, dir_size(root))) if not (root / t.path).is_file()]


async def check_served_alike(
    log: BlackBoxLog | LogProcess, session: ClientSession, root: Path, *, crashed: bool = False
) -> int:
    """Every file of the directory is byte for byte what the server serves at its
    path, and the directory has every tile and bundle its checkpoint needs.
    Temporary files are left only by a writer that ``crashed``."""
    size = dir_size(root)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    temporary = [f for f in files if Path(f).name.startswith(".")]
    assert crashed or not temporary, temporary
    files = [f for f in files if f not in temporary]
    assert (root / "checkpoint").read_bytes() == await fetch(session, log.base, "checkpoint")
    for path in files:
        assert (root / path).read_bytes() == await fetch(session, log.base, path), path
    needed = {t.path for t in files_of(0, size)}
    assert needed <= set(files), sorted(needed - set(files))
    return len(files)


async def test_the_directory_holds_what_the_server_serves(
    served_by: str, database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    root = tmp_path / "public"
    log = make_log(served_by, database_url, tmp_path / "data", publish_dir=root)
    log.config.data_dir.mkdir()
    await log.start()
    try:
        await published(log, root, 0)  # the empty tree, at start
        done = 0
        for count in (5, 300, 11):  # partial tiles of several widths, a full one, level 1
            await submit_all(log, session, done, count)
            done += count
            await published(log, root, done)
            await check_served_alike(log, session, root)
        assert (root / "tile/0/000").stat().st_size == 8192
        assert (root / "tile/0/000.p/5").is_file()  # kept: a reader of size 5 may want it
        assert (root / "tile/entries/001.p/60").is_file()
        assert (root / "tile/1/000.p/1").is_file()
        assert await served_failures(log, session) == 0
    finally:
        await log.stop()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def static_server(root: Path) -> Iterator[str]:
    """Python's own static file server on loopback, in a thread: no firmlog code."""
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def firmlog(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [script("firmlog"), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


async def test_a_mirror_of_the_directory_served_by_http_server_verifies(
    served_by: str, database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    root = tmp_path / "public"
    log = make_log(served_by, database_url, tmp_path / "data", publish_dir=root)
    log.config.data_dir.mkdir()
    await log.start()
    try:
        await submit_all(log, session, 0, 270)
        await published(log, root, 270)
    finally:
        await log.stop()  # the directory alone from here on
    vkey = log.verifier.vkey
    mirror = tmp_path / "mirror"
    with static_server(root) as url:
        got = await asyncio.to_thread(
            firmlog, "mirror", "--log", url, "--log-key", vkey, "--dir", str(mirror)
        )
    assert got.returncode == 0, got.stderr
    assert "at tree size 270" in got.stdout + got.stderr
    verified = await asyncio.to_thread(
        firmlog, "mirror", "--verify", "--log-key", vkey, "--dir", str(mirror)
    )
    assert verified.returncode == 0, verified.stderr
    assert (mirror / "checkpoint").read_bytes() == (root / "checkpoint").read_bytes()


class RecordingDirectory(StaticDirectory):
    """The real directory, which records each write and, when the checkpoint is
    replaced, what was on disk at that moment; ``fail_after`` puts fail
    (OSError, as a full disk) after that many files, like a crash mid-publish."""

    def __init__(self, root: Path, fail_after: int | None = None) -> None:
        super().__init__(root)
        self.events: list[str] = []
        self.missing_at_checkpoint: list[str] = []
        self.notes: list[bytes] = []
        self.fail_after = fail_after

    def put(self, path: str, data: bytes) -> bool:
        if self.fail_after is not None and len(self.events) >= self.fail_after:
            raise OSError(28, "No space left on device (injected)")
        self.events.append(path)
        return super().put(path, data)

    def advance(self, note: bytes, tree_size: int) -> bool:
        self.events.append(f"checkpoint {tree_size}")
        self.notes.append(note)
        self.missing_at_checkpoint += [
            t.path for t in files_of(0, tree_size) if not (self.root / t.path).is_file()
        ]
        return super().advance(note, tree_size)


async def test_the_checkpoint_is_written_after_every_file_it_needs(
    database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    root = tmp_path / "public"
    log = LogUnderTest(database_url, tmp_path / "data", publish_dir=root)
    log.config.data_dir.mkdir()
    await log.start()
    try:
        await published(log, root, 0)
        recording = RecordingDirectory(root)
        publisher(log).directory = recording
        await submit_all(log, session, 0, 260)
        await published(log, root, 260)
    finally:
        await log.stop()
    assert recording.missing_at_checkpoint == []
    assert recording.events[-1] == "checkpoint 260"
    last = max(i for i, e in enumerate(recording.events) if e.startswith("checkpoint"))
    assert recording.events.index("tile/0/000") < last
    assert recording.events.index("tile/entries/001.p/4") < last


async def test_a_publication_cut_short_leaves_the_old_checkpoint_and_is_retried(
    database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    root = tmp_path / "public"
    log = LogUnderTest(database_url, tmp_path / "data", publish_dir=root)
    log.config.data_dir.mkdir()
    await log.start()
    try:
        await submit_all(log, session, 0, 3)
        await published(log, root, 3)
        before = (root / "checkpoint").read_bytes()
        cut = RecordingDirectory(root, fail_after=1)  # some tiles, then a full disk
        publisher(log).directory = cut
        await submit_all(log, session, 3, 300)  # answered although the directory fails
        await until(lambda: failures(log) >= 1, "a failed publication")
        assert (root / "checkpoint").read_bytes() == before
        assert cut.events  # some files were written before the disk was full
        assert not [e for e in cut.events if e.startswith("checkpoint")]
        assert not cut.missing_at_checkpoint
        cut.fail_after = None  # the disk has room again: the next checkpoint catches up
        await submit_all(log, session, 303, 1)
        await published(log, root, 304)
        await check_served_alike(log, session, root)
    finally:
        await log.stop()


async def test_a_directory_it_cannot_write_never_fails_a_submission(
    database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    root = tmp_path / "public"
    root.mkdir()
    # A file where the tile directory must be: no tile can be written (the tests
    # run as root, whom file permissions would not stop).
    (root / "tile").write_bytes(b"not a directory\n")
    log = LogUnderTest(database_url, tmp_path / "data", publish_dir=root)
    log.config.data_dir.mkdir()
    await log.start()
    try:
        await published(log, root, 0)  # the empty tree needs no tile
        await submit_all(log, session, 0, 20)
        await until(lambda: failures(log) >= 1, "a failed publication")
        assert dir_size(root) == 0  # never a checkpoint without its tiles
        async with session.get(f"{log.base}/metrics") as resp:
            assert "firmlog_publish_failures_total" in await resp.text()
        (root / "tile").unlink()
        await submit_all(log, session, 20, 1)  # retried at the next checkpoint
        await published(log, root, 21)
        await check_served_alike(log, session, root)
    finally:
        await log.stop()


async def test_a_restarted_server_catches_the_directory_up(
    database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    root = tmp_path / "public"
    log = LogUnderTest(database_url, tmp_path / "data", publish_dir=root)
    log.config.data_dir.mkdir()
    await log.start()
    try:
        await submit_all(log, session, 0, 5)
        await published(log, root, 5)
    finally:
        await log.stop()
    # The log grows while nothing publishes to the directory (say it crashed).
    log.config = replace(log.config, publish_dir="")
    await log.start()
    try:
        await submit_all(log, session, 5, 300)
    finally:
        await log.stop()
    assert dir_size(root) == 5
    log.config = replace(log.config, publish_dir=str(root))
    await log.start()
    try:  # no submission: the start alone catches up (sooner than the 5 s recheck)
        await until(lambda: dir_size(root) == 305, "the catch-up at start", timeout=2.5)
        await check_served_alike(log, session, root)
    finally:
        await log.stop()
    fresh = tmp_path / "fresh"  # and an empty directory gets the whole log
    log.config = replace(log.config, publish_dir=str(fresh))
    await log.start()
    try:
        await published(log, fresh, 305)
        # Exactly what a reader of 305 needs: no partial tile of an older size.
        assert await check_served_alike(log, session, fresh) == len(files_of(0, 305)) + 1
    finally:
        await log.stop()


async def test_two_servers_publish_to_one_directory(
    database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    root = tmp_path / "public"
    one = LogUnderTest(database_url, tmp_path / "one", publish_dir=root)
    two = LogUnderTest(database_url, tmp_path / "two", one.log_key, one.operator, publish_dir=root)
    for log in (one, two):
        log.config.data_dir.mkdir()
        await log.start()
    try:
        for start in range(0, 300, 60):
            await asyncio.gather(
                submit_all(one, session, start, 30), submit_all(two, session, start + 30, 30)
            )
        await published(one, root, 300)
        assert failures(one) == failures(two) == 0
        # The other server may have committed the last batch: one serves it once it
        # has read the latest checkpoint again (within twice its refresh interval).
        deadline = time.monotonic() + 5
        while served_size(await fetch(session, one.base, "checkpoint")) != 300:
            assert time.monotonic() < deadline, "server one never caught up with size 300"
            await asyncio.sleep(0.01)
        await check_served_alike(one, session, root)
    finally:
        await one.stop()
        await two.stop()


def served_size(note: bytes) -> int:
    return Checkpoint.parse(split_note(note)[0]).tree_size


async def test_with_witnesses_only_cosigned_checkpoints_reach_the_directory(
    database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    w = await start_witnessed("in-process", database_url, tmp_path, held=True, witness_timeout=60)
    root = tmp_path / "public"
    log = w.another_log(tmp_path / "log2")  # the same log, publishing to the directory
    log.config = replace(log.config, publish_dir=str(root))
    try:
        await log.start()
        await until(lambda: publisher(log).published_size >= 0, "the first publication")
        recording = RecordingDirectory(root)
        publisher(log).directory = recording
        for i in range(3):
            w.held[i].hold()
        waiting = asyncio.ensure_future(submit_all(log, session, 0, 2))
        await until(lambda: log.sample("firmlog_tree_size") == 2, "the integration")
        await until(lambda: sum(h.waiting for h in w.held) >= 2, "the witnesses asked")
        assert dir_size(root) < 2
        assert not (root / "tile/0/000.p/2").exists()
        for i in range(3):
            w.held[i].release(fail=False)
        await waiting
        await published(log, root, 2)
        await check_served_alike(log, session, root)
        # Every checkpoint ever written to the directory carried the quorum.
        assert recording.notes
        for note in recording.notes:
            w.device_policy.verify_checkpoint(note)

        # The database runs ahead of the cosigned tree: a server starting now
        # publishes the cosigned checkpoint with its tiles at its own size.
        for i in range(3):
            w.held[i].hold()
        waiting = asyncio.ensure_future(submit_all(log, session, 2, 2))
        await until(lambda: log.sample("firmlog_tree_size") == 4, "the integration")
        other = tmp_path / "other"
        late = w.another_log(tmp_path / "log3")
        late.config = replace(late.config, publish_dir=str(other))
        await late.start()
        await until(lambda: publisher(late).published_size == 2, "the catch-up")
        assert (other / "tile/0/000.p/2").stat().st_size == 64
        assert sorted(p.name for p in (other / "tile/0/000.p").iterdir()) == ["2"]
        await check_served_alike(late, session, other)
        assert dir_size(root) == 2
        for i in range(3):
            w.held[i].release(fail=False)
        await waiting
        await published(log, root, 4)
    finally:
        await stop_witnessed(w)


class PublishingProcess(LogProcess):
    """A real ``firmlog-server serve --publish-dir DIR`` process."""

    def __init__(self, data_dir: Path, origin: str, publish_dir: Path, workers: int) -> None:
        super().__init__(data_dir, origin, workers=workers)
        self.publish_dir = publish_dir

    def command(self) -> list[str]:
        return [*super().command(), "--publish-dir", str(self.publish_dir)]


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_killed_server_leaves_a_consistent_directory_and_catches_it_up(
    tmp_path: Path, session: ClientSession, workers: int
) -> None:
    """SIGKILL in the middle of submissions and publications: a reader polling the
    directory meanwhile never sees a checkpoint whose files are missing, nor does
    one after the kill; the restarted server completes the directory."""
    root = tmp_path / "public"
    server = PublishingProcess(tmp_path / "data", "test.firmlog.example/log", root, workers)
    await server.start()
    seen: list[int] = []
    torn: list[list[str]] = []
    stop = asyncio.Event()

    async def reader() -> None:  # what a static web server's client could see
        while not stop.is_set():
            # The checkpoint is read first, then its files are looked for.
            lacking = await asyncio.to_thread(missing, root)
            if lacking:
                torn.append(lacking)
            size = dir_size(root)
            if size >= 0 and (not seen or seen[-1] != size):
                seen.append(size)
            await asyncio.sleep(0.001)

    async def submitter(k: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                await server.submit(session, admission(server.operator, f"c{k}-{i}.example"))
            except (aiohttp.ClientError, OSError, TimeoutError):
                return  # killed
            i += 1

    watching = asyncio.ensure_future(reader())
    submitting = [asyncio.ensure_future(submitter(k)) for k in range(8)]
    try:
        await until(lambda: len(seen) >= 4 and seen[-1] >= 300, "publications", timeout=60)
        server.kill()  # while the submitters go on
    finally:
        stop.set()
        await asyncio.gather(*submitting, return_exceptions=True)
        await watching
        server.kill()
    assert torn == []
    assert missing(root) == []
    # What a writer killed between writing a temporary file and linking it leaves.
    dead = server.pid
    assert dead is not None
    (root / "tile" / "0" / f".000.{HOST_ID}.{dead}.0badf00d.tmp").write_bytes(b"torn")
    try:
        await server.start()  # no submission: the start alone catches up
        async with session.get(f"{server.base}/checkpoint") as resp:
            newest = await resp.read()
        await until(lambda: (root / "checkpoint").read_bytes() == newest, "the catch-up")
        # and removes the temporary files of the processes killed
        await check_served_alike(server, session, root)
    finally:
        server.stop()
        server.close()


def test_only_the_temporary_files_nobody_will_put_in_place_are_removed(tmp_path: Path) -> None:
    dead = _exited_pid()
    zombie = subprocess.Popen(["true"])  # exits, and is not reaped until the end
    until_zombie(zombie.pid)
    names = {
        "dead writer": f".000.{HOST_ID}.{dead}.00000001.tmp",
        "killed writer, not yet reaped": f".000.{HOST_ID}.{zombie.pid}.00000005.tmp",
        "live writer": f".000.{HOST_ID}.{os.getpid()}.00000002.tmp",
        "other host": f".000.0123abcd.{dead}.00000003.tmp",
        "other host, old": f".001.0123abcd.{dead}.00000004.tmp",
        "not a temporary": ".keep",
        "a tile": "002",
    }
    level = tmp_path / "tile" / "0"
    level.mkdir(parents=True)
    for name in names.values():
        (level / name).write_bytes(b"x")
    old = time.time() - STALE_AFTER - 1
    os.utime(level / names["other host, old"], (old, old))
    try:
        removed = StaticDirectory(tmp_path).remove_stale()
    finally:
        zombie.wait()
    assert sorted(p.name for p in removed) == sorted(
        [names["dead writer"], names["killed writer, not yet reaped"], names["other host, old"]]
    )
    left = {p.name for p in level.iterdir()}
    assert left == {names[k] for k in ("live writer", "other host", "not a temporary", "a tile")}


def until_zombie(pid: int, timeout: float = 10.0) -> None:
    """Wait until child ``pid`` has exited (and, not reaped, is a zombie)."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, f"{pid} has not exited"
        time.sleep(0.005)


def _exited_pid() -> int:
    """The pid of a child process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_publish_dir_must_be_a_directory(tmp_path: Path) -> None:
    from firmlog.server.config import load_config
    from firmlog.server.errors import ConfigError

    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="publish_dir"):
        load_config(tmp_path, origin="example.com/log", publish_dir=str(tmp_path / "file"))
    cfg = load_config(
        tmp_path, origin="example.com/log", environ={"FIRMLOG_PUBLISH_DIR": str(tmp_path / "d")}
    )
    assert cfg.publish_dir == str(tmp_path / "d")
    (tmp_path / "config.toml").write_text(f'publish_dir = "{tmp_path / "toml"}"\n')
    assert load_config(tmp_path, origin="example.com/log").publish_dir == str(tmp_path / "toml")
