"""Publishing the log as static files: the layout of c2sp.org/tlog-tiles in a directory.

With ``publish_dir`` (``--publish-dir``), after each checkpoint the log
publishes (with witnesses: each one cosigned by the quorum, never an
integrated tree before that) :class:`StaticPublisher` writes under the
directory everything a reader of that checkpoint needs that the directory's
previous checkpoint did not: the new full hash tiles and entry bundles, the
partial ones at the new tree size (``tile/<L>/<N>.p/<W>``,
``tile/entries/<N>.p/<W>``), and then ``checkpoint``. Any static web server
or CDN then serves the whole tlog-tiles read API without this server.

What the directory promises a reader, whatever happens to the writers:

- No torn files: each file is written under a temporary name in its own
  directory, fsynced, and then put in place by one atomic link or rename.
  A temporary name says whose it is (``.<name>.<host>.<pid>.<random>.tmp``);
  those a crash left behind are removed when a publisher starts: a process
  of this host that no longer runs (or is a zombie), or any left for
  ``STALE_AFTER`` seconds.
- ``checkpoint`` is written last: only after every tile and bundle of its
  tree is in place (and the directories holding them are fsynced), so a
  reader never sees a checkpoint whose tiles are missing. A crash leaves the
  old checkpoint, perhaps with some tiles of the next.
- ``checkpoint`` only moves forward: it is replaced, under an exclusive lock
  on the directory (flock), only by a checkpoint of a larger tree. So
  several server processes sharing a database may publish to one directory.
- A tile path's content never changes: a file already there (full, or
  ``.p/<W>``) is compared, never rewritten. If it differs, the directory
  holds another log or was damaged: nothing more is published
  (:class:`PublishConflict`, logged and counted) until an operator fixes it.
  Superseded partial tiles are kept (the spec allows deleting them).

Failures to write (disk full, permissions) are logged and counted in
``firmlog_publish_failures_total``; they never reach a submitter, and the
publication is retried at the next checkpoint, or after ``retry_interval``.
Catch-up: the task starts with the newest public checkpoint (so a server
restarted after a crash, or behind another process, writes what is missing
while it serves), and re-reads it every ``retry_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path

import structlog

from firmlog.client.checkpoint import Checkpoint
from firmlog.client.errors import FormatError
from firmlog.client.merkle import HASH_SIZE
from firmlog.client.note import split_note
from firmlog.client.tiles import ENTRY_LEVEL, TILE_WIDTH, Tile, encode_entry_bundle, tiles_touched
from firmlog.server.metrics import ServerMetrics
from firmlog.server.reader import LatestCheckpoint
from firmlog.server.storage import Storage

__all__ = ["PublishConflict", "StaticDirectory", "StaticPublisher", "files_of"]

log = structlog.get_logger("firmlog.publish")

CHECKPOINT = "checkpoint"
TILES_PER_READ = 64  # hash tiles read from storage in one query
BUNDLES_PER_READ = 4  # entry bundles (of up to 256 entries each) read in one query
STALE_AFTER = 3600.0
"""Seconds after which a temporary file is removed whoever wrote it (a live writer
holds one for the time of one write and fsync)."""
HOST_ID = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
"""This host, in the names of temporary files (a short hash of its name)."""


class PublishConflict(Exception):
    """The directory holds a file this log would write with other content, or a
    checkpoint of another log: it is not this log's; an operator must look."""


def files_of(old_size: int, new_size: int) -> list[Tile]:
    """The hash tiles and entry bundles a reader of a tree of ``new_size`` needs
    beyond those of ``old_size``, at their widths at ``new_size``; hash tiles
    first, level by level, then entry bundles."""
    hashes = tiles_touched(old_size, new_size)
    bundles = [Tile(ENTRY_LEVEL, t.index, t.width) for t in hashes if t.level == 0]
    return hashes + bundles


def _parse(note: bytes) -> Checkpoint:
    text, _ = split_note(note)
    return Checkpoint.parse(text)


class StaticDirectory:
    """The files of one publish directory. Blocking calls: run them in a thread.

    :meth:`put` promises that once it returns the file is in place with the
    given content (written now or found there); :meth:`sync` that what was put
    since the last sync is durable; :meth:`advance` that the checkpoint there
    is at least as large as the one given, and durable.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._unsynced: set[Path] = set()  # directories with new names since the last sync

    def checkpoint(self) -> bytes | None:
        """The checkpoint note in the directory, or None if there is none."""
        try:
            return (self.root / CHECKPOINT).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, path: str, data: bytes) -> bool:
        """Put ``data`` at ``path`` (relative) unless it is there; True if written now.

        Raises PublishConflict if a file there has other content."""
        target = self.root / path
        try:
            existing = target.read_bytes()
        except FileNotFoundError:
            pass
        else:
            return self._same(path, existing, data)
        self._make_parents(target)
        with self._temporary(target, data) as tmp:
            try:
                os.link(tmp, target)  # never replaces: a path's content never changes
            except FileExistsError:  # another process put it meanwhile
                return self._same(path, target.read_bytes(), data)
        self._unsynced.add(target.parent)
        return True

    def _make_parents(self, target: Path) -> None:
        """Create the directories above ``target``; each new one's name is synced too."""
        new: list[Path] = []
        parent = target.parent
        while not parent.is_dir():
            new.append(parent)
            parent = parent.parent
        for directory in reversed(new):
            directory.mkdir(exist_ok=True)
            self._unsynced.add(directory.parent)

    @staticmethod
    def _same(path: str, existing: bytes, data: bytes) -> bool:
        if existing != data:
            raise PublishConflict(
                f"{path} already exists with other content ({len(existing)} bytes, "
                f"expected {len(data)}): the directory is not this log's"
            )
        return False

    def remove_stale(self, now: float | None = None) -> list[Path]:
        """Remove the temporary files that nobody will ever put in place (a crash
        left them): those of a process of this host that no longer runs, and any
        older than :data:`STALE_AFTER`; the paths removed."""
        now = time.time() if now is None else now
        removed: list[Path] = []
        for directory, _, names in os.walk(self.root):
            for name in names:
                path = Path(directory, name)
                if name.startswith(".") and name.endswith(".tmp") and self._stale(path, now):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed.append(path)
        return removed

    @staticmethod
    def _stale(path: Path, now: float) -> bool:
        try:
            if now - path.stat().st_mtime > STALE_AFTER:
                return True
        except FileNotFoundError:
            return False  # put in place, or removed, meanwhile
        parts = path.name.rsplit(".", 4)  # [".<name>", host, pid, random, "tmp"]
        if len(parts) != 5 or parts[1] != HOST_ID or not parts[2].isdigit():
            return False  # another host's (or not ours): only by age
        return not _runs(int(parts[2]))

    def sync(self) -> None:
        """Make the names of what :meth:`put` wrote durable (fsync their directories)."""
        for directory in sorted(self._unsynced):
            _fsync_dir(directory)
        self._unsynced.clear()

    def advance(self, note: bytes, tree_size: int) -> bool:
        """Replace the checkpoint with ``note`` (of ``tree_size``) unless the one
        there is of a tree at least as large; True if replaced.

        Under an exclusive flock on the directory, so that of two processes the
        one with the smaller tree never replaces the larger."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = self.checkpoint()
            if current is not None and _parse(current).tree_size >= tree_size:
                return False
            target = self.root / CHECKPOINT
            with self._temporary(target, note) as tmp:
                os.replace(tmp, target)
            os.fsync(fd)
            return True
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def _temporary(self, target: Path, data: bytes) -> Iterator[Path]:
        """A fsynced file with ``data`` beside ``target``, removed afterwards if
        still there. Its name is this process's own, and starts with a dot."""
        unique = f"{HOST_ID}.{os.getpid()}.{secrets.token_hex(4)}"
        tmp = target.with_name(f".{target.name}.{unique}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            yield tmp
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _runs(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs: it exists and is not a
    zombie (a killed writer whose parent died stays one until init reaps it,
    which in a container may be never, and it writes nothing more)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:  # gone meanwhile, or a system without /proc
        return not Path("/proc/self").exists()
    except OSError:
        return True  # unreadable: believe kill
    # "pid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ")".
    state = stat[stat.rfind(")") + 2 :][:1]
    return state not in ("Z", "X")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _chunks(items: Sequence[Tile], size: int) -> Iterable[Sequence[Tile]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


Latest = Callable[[], Awaitable[LatestCheckpoint | None]]


class StaticPublisher:
    """Writes each public checkpoint, and the tiles it needs, to a directory.

    Who owns what: :meth:`offer` and :meth:`stop` are called from the log's
    tasks and only set ``_offered``, ``_stopping`` and ``_wake``; everything
    else belongs to :meth:`run`, this publisher's own task, which is the only
    one that writes (one publication at a time, always of the newest
    checkpoint it knows). ``latest`` returns the newest public checkpoint
    (:meth:`firmlog.server.reader.LogReader.latest`).
    """

    def __init__(
        self,
        directory: StaticDirectory | Path,
        storage: Storage,
        latest: Latest,
        metrics: ServerMetrics,
        *,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = (
            directory if isinstance(directory, StaticDirectory) else StaticDirectory(directory)
        )
        self._storage = storage
        self._latest = latest
        self._retry_interval = retry_interval
        self._clock = clock
        self._offered: LatestCheckpoint | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self.published_size = -1  # the tree size of the directory's checkpoint, once known
        self.failures = metrics.publish_failures
        self.files = metrics.publish_files
        self.tree_size = metrics.publish_tree_size
        self.seconds = metrics.publish_seconds

    def offer(self, checkpoint: LatestCheckpoint) -> None:
        """A checkpoint just made public (never one waiting for cosignatures)."""
        if self._offered is None or checkpoint.tree_size > self._offered.tree_size:
            self._offered = checkpoint
        self._wake.set()

    def stop(self) -> None:
        """Publish what was offered, then return from :meth:`run`."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Remove the temporary files a crash left; publish the newest public
        checkpoint, at start and after each offer, until :meth:`stop`; never
        raises but CancelledError."""
        await self._remove_stale()
        recheck = True  # at start: the newest public checkpoint (a catch-up)
        while True:
            self._wake.clear()
            target = self._offered
            if recheck and not self._stopping:
                newest = await self._newest()
                if newest is not None and (target is None or newest.tree_size > target.tree_size):
                    target = newest
            ok = True
            if target is not None and target.tree_size > self.published_size:
                ok = await self._attempt(target)
            behind = self._offered is not None and self._offered.tree_size > self.published_size
            if self._stopping and (not ok or not behind):
                return
            if ok and behind:
                recheck = False
                continue  # a newer checkpoint was offered meanwhile
            # Wait for the next offer; after a failure, or every retry_interval
            # without one, the newest public checkpoint is read again (another
            # process sharing the database may have published it).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._retry_interval)
            recheck = not self._wake.is_set()

    async def _remove_stale(self) -> None:
        """Remove the temporary files a crash left in the directory (logged)."""
        try:
            removed = await asyncio.to_thread(self.directory.remove_stale)
        except OSError as exc:  # not fatal: they are only clutter
            log.warning(
                "publish: removing stale temporary files failed",
                directory=str(self.directory.root),
                error=f"{type(exc).__name__}: {exc}",
            )
            return
        if removed:
            log.info(
                "publish: removed temporary files a crash left",
                directory=str(self.directory.root),
                files=len(removed),
            )

    async def _newest(self) -> LatestCheckpoint | None:
        try:
            return await self._latest()
        except Exception as exc:  # the database may be away for a while
            log.warning("publish: reading the latest checkpoint failed", error=repr(exc))
            return None

    async def _attempt(self, target: LatestCheckpoint) -> bool:
        started = self._clock()
        try:
            await self.publish(target)
        except Exception as exc:  # the log goes on; the next checkpoint retries
            self.failures.inc()
            log.error(
                "publish: writing the directory failed; retrying at the next checkpoint",
                directory=str(self.directory.root),
                tree_size=target.tree_size,
                error=f"{type(exc).__name__}: {exc}",
            )
            return False
        finally:
            self.seconds.inc(self._clock() - started)
        return True

    async def publish(self, target: LatestCheckpoint) -> None:
        """Write what ``target`` needs beyond the directory's checkpoint, then
        ``target`` itself (unless the directory's is as large). Raises OSError,
        PublishConflict, or RuntimeError if storage lacks a tile of ``target``."""
        d = self.directory
        current = await asyncio.to_thread(d.checkpoint)
        old = 0
        if current is not None:
            try:
                have = _parse(current)
            except (FormatError, ValueError) as exc:
                raise PublishConflict(f"{d.root / CHECKPOINT} is not a checkpoint: {exc}") from exc
            if have.origin != _parse(target.note).origin:
                raise PublishConflict(
                    f"{d.root / CHECKPOINT} is a checkpoint of {have.origin!r}, not of this log"
                )
            old = have.tree_size
            if old >= target.tree_size:
                self._published(old)
                return
        wanted = files_of(old, target.tree_size)
        hashes = [t for t in wanted if t.level != ENTRY_LEVEL]
        bundles = [t for t in wanted if t.level == ENTRY_LEVEL]
        for chunk in _chunks(hashes, TILES_PER_READ):
            stored = await self._storage.read_tiles([(t.level, t.index) for t in chunk])
            files: list[tuple[str, bytes]] = []
            for t in chunk:
                data = stored.get((t.level, t.index), b"")
                if len(data) < t.width * HASH_SIZE:
                    raise RuntimeError(f"storage lacks {t.path} for tree size {target.tree_size}")
                files.append((t.path, data[: t.width * HASH_SIZE]))
            await self._put(files)
        for chunk in _chunks(bundles, BUNDLES_PER_READ):
            start = chunk[0].index * TILE_WIDTH
            entries = await self._storage.read_entries(start, start + sum(t.width for t in chunk))
            files = []
            for t in chunk:
                first = t.index * TILE_WIDTH - start
                bundle = entries[first : first + t.width]
                if len(bundle) != t.width:
                    raise RuntimeError(f"storage lacks entries of {t.path}")
                files.append((t.path, encode_entry_bundle(bundle)))
            await self._put(files)
        await asyncio.to_thread(d.sync)
        # Last: every tile and bundle the checkpoint needs is in place and durable.
        if await asyncio.to_thread(d.advance, target.note, target.tree_size):
            log.info(
                "published to the directory",
                tree_size=target.tree_size,
                files=len(wanted),
                directory=str(d.root),
            )
            self._published(target.tree_size)
        else:  # another process got further meanwhile
            self._published(max(old, target.tree_size))

    def _published(self, tree_size: int) -> None:
        self.published_size = max(self.published_size, tree_size)
        self.tree_size.set(self.published_size)

    async def _put(self, files: list[tuple[str, bytes]]) -> None:
        def put_all() -> int:
            return sum(self.directory.put(path, data) for path, data in files)

        self.files.inc(await asyncio.to_thread(put_all))
