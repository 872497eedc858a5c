"""SQLite backend: the embedded default, one file in the data directory.

Implements the storage contract of :mod:`firmlog.server.storage` with the
stdlib :mod:`sqlite3` module. What it guarantees:

- Durability: the database runs in WAL mode with ``synchronous=FULL``, so the
  WAL is fsynced at every commit. Once :meth:`SQLiteStorage.integration` exits
  without an exception its writes survive a killed process and, as far as
  SQLite and the file system honour fsync, a power loss.
- Serialization: integrations of one storage queue on an :class:`asyncio.Lock`;
  across connections and processes each runs in a ``BEGIN IMMEDIATE``
  transaction, which holds SQLite's single write lock from its first statement
  (waiting up to :data:`BUSY_TIMEOUT_S` for it, trying every millisecond). Two
  writers sharing the file can never fork the log. A killed writer's lock is
  released by the operating system and its uncommitted writes are discarded.
- The event loop never blocks: writes run on one dedicated writer thread with
  its own connection, reads on :data:`READERS` reader threads, each read on a
  reader connection of its own for its time (WAL lets them read side by side).
  Readers see only committed data and are not blocked by a running
  integration; a read of several tiles sees them in one snapshot.
- Tiles: ``tiles`` is a rowid table keyed by one integer, ``level << 56 | index``
  (:func:`_tile_id`), holding each tile's bytes (up to 8 KiB). A lookup walks
  one B-tree of small interior cells, then the row's overflow pages: about 3
  page reads. (Until schema version 4 it was ``WITHOUT ROWID`` on
  ``(level, idx)``, whose interior cells carry the rows themselves: about 22.)
  Opening a version 2 or 3 database rebuilds the table in one transaction
  (:func:`_upgrade_tiles`); killed midway, it leaves the old database intact,
  and the next open upgrades it.
- Unavailability: an error of the file or its lock (disk I/O, disk full,
  read-only, cannot open, still locked after the busy timeout) raises
  :class:`~firmlog.server.storage.StorageUnavailable`; other SQLite errors
  propagate as they are.
- Last line of defence against a fork: an integration refuses (RuntimeError)
  entries that do not start at the stored size, a duplicate leaf hash, a state
  that shrinks the tree or changes its right edge without growing it, and a
  tile that does not extend what is stored. After any failed write the
  integration can only roll back, even if the caller swallows the exception.

The guarded integration, the reads and their SQL are written once for both
backends (:mod:`firmlog.server.storage._backend`); this file says how to open
the file, hold the lock and run a statement on its threads.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, ClassVar, ParamSpec, TypeVar

from firmlog.server.storage import KeySetRow, StorageOpenError, StorageUnavailable, StoredTile
from firmlog.server.storage import _sql as sql
from firmlog.server.storage._backend import (
    FULL_TILE_SIZE,
    EntryRecord,
    Row,
    Session,
    SQLStorage,
    Step,
)
from firmlog.server.storage._checks import (
    MAX_TILE_LEVEL,
    MAX_TREE_SIZE,
    SCHEMA_VERSION,
    UPGRADABLE,
    check_schema_version,
    tile_in_reach,
)

T = TypeVar("T")
P = ParamSpec("P")

BUSY_TIMEOUT_S = 60.0
"""How long a connection waits for SQLite's write lock before it fails."""

LOCK_POLL_S = 0.001
"""How often a writer waiting for another process's write lock tries again."""

READERS = 4
"""Reader threads and connections: how many reads (tile misses of concurrent
requests...) run side by side."""

HEALTH_TIMEOUT_S = 5.0
"""How long a health check waits for the write lock before it says the log cannot write."""

# Primary result codes that mean "the file cannot be read or written now", not a bug.
_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_PROTOCOL,
    }
)

# SQL. Every statement is static; the schema has the same shape as PostgreSQL's,
# but for ``tiles``. ``INTEGER PRIMARY KEY`` (not BIGINT) makes ``entries.idx``
# the rowid; it is a 64-bit integer either way.

_TILE_INDEX_BITS = 56
"""``tiles.id`` is ``level << 56 | index``: one B-tree, no index beside it. Sound for
every tile a log can hold (``_checks.tile_in_reach``: level <= 7, index < 2**55),
so distinct tiles never share an id, ids are below 2**59 (a positive 64-bit
integer), and their order is (level, index)."""

_TILE_INDEX_MASK = (1 << _TILE_INDEX_BITS) - 1

_CREATE_TILES = (
    "CREATE TABLE IF NOT EXISTS tiles ("  # id: _tile_id(); summary: of a full tile (version 5)
    " id INTEGER PRIMARY KEY CHECK (id >= 0), data BLOB NOT NULL, summary BLOB)"
)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS entries ("
    " idx INTEGER PRIMARY KEY CHECK (idx >= 0),"
    " identity BLOB NOT NULL UNIQUE, leaf_hash BLOB NOT NULL UNIQUE, data BLOB NOT NULL)",
    _CREATE_TILES,
    "CREATE TABLE IF NOT EXISTS log_state ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), tree_size INTEGER NOT NULL,"
    " right_edge BLOB NOT NULL, checkpoint BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS checkpoints (tree_size INTEGER PRIMARY KEY, note BLOB NOT NULL)",
    # Where the summaries of tiles stored before version 5 are being filled in (one
    # row while that is not finished; summarize_tiles).
    "CREATE TABLE IF NOT EXISTS summary_backfill ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), level INTEGER NOT NULL, idx INTEGER NOT NULL)",
    # The latest checkpoint cosigned by a quorum of witnesses (schema version 3).
    "CREATE TABLE IF NOT EXISTS cosigned_checkpoint ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), tree_size INTEGER NOT NULL, note BLOB NOT NULL)",
    "INSERT INTO log_state (id, tree_size, right_edge, checkpoint)"
    " VALUES (1, 0, x'', x'') ON CONFLICT (id) DO NOTHING",
    # The ledger index (see firmlog.server.storage): derived from the entries.
    "CREATE TABLE IF NOT EXISTS key_sets ("
    " vendor TEXT NOT NULL, idx INTEGER NOT NULL, keys TEXT NOT NULL,"
    " threshold INTEGER NOT NULL, serial INTEGER NOT NULL,"
    " PRIMARY KEY (vendor, idx), UNIQUE (vendor, serial)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS key_sets_by_idx ON key_sets (idx)",
    "CREATE TABLE IF NOT EXISTS releases ("
    " idx INTEGER PRIMARY KEY, vendor TEXT NOT NULL, product TEXT NOT NULL,"
    " version TEXT NOT NULL, security_version INTEGER NOT NULL,"
    " image_sha256 TEXT NOT NULL, image_size INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS releases_by_vendor ON releases (vendor, product, version, idx)",
    "CREATE INDEX IF NOT EXISTS releases_by_product ON releases (product, idx)",
    "CREATE INDEX IF NOT EXISTS releases_by_image ON releases (image_sha256, idx)",
    "CREATE TABLE IF NOT EXISTS release_fixes ("
    " cve TEXT NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY (cve, idx)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS revocations ("
    " idx INTEGER PRIMARY KEY, vendor TEXT NOT NULL, release_idx INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS revocations_by_release ON revocations (release_idx)",
    # Which log this database holds (firmlog.server.signing): one row, written once.
    "CREATE TABLE IF NOT EXISTS log_identity ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), origin TEXT NOT NULL, vkey TEXT NOT NULL)",
)
# The statements both backends run are in _sql; SQLite's own look up one key each.
_INSERT_ENTRY = "INSERT INTO entries (idx, identity, leaf_hash, data) VALUES (?, ?, ?, ?)"
_SELECT_TILE = "SELECT data, summary FROM tiles WHERE id = ?"
_UPSERT_TILE = (
    "INSERT INTO tiles (id, data, summary) VALUES (?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET data = excluded.data, summary = excluded.summary"
)
# Schema version 4 to 5: full tiles get a summary; those stored before have none
# until summarize_tiles gives them one (length() of a blob reads only its header).
_ADD_TILE_SUMMARY = "ALTER TABLE tiles ADD COLUMN summary BLOB"
_TILES_WITHOUT_SUMMARY = (
    "SELECT id, data FROM tiles WHERE id > ? AND summary IS NULL AND length(data) = ?"
    " ORDER BY id LIMIT ?"
)
_SET_TILE_SUMMARY = "UPDATE tiles SET summary = ? WHERE id = ?"
# Schema version 2 or 3 to 4: the WITHOUT ROWID tiles table, renamed, copied
# into the new one in key order (the same order as its own) and dropped.
_OLD_TILES = "tiles_v3"
_RENAME_OLD_TILES = f"ALTER TABLE tiles RENAME TO {_OLD_TILES}"
_OLD_TILE_OUT_OF_REACH = (  # the first stored tile that fails _checks.tile_in_reach
    f"SELECT level, idx FROM {_OLD_TILES} WHERE level NOT BETWEEN 0 AND {MAX_TILE_LEVEL}"  # noqa: S608
    f" OR idx < 0 OR idx > {MAX_TREE_SIZE} >> (8 * (level + 1)) LIMIT 1"
)
_COPY_OLD_TILES = (
    f"INSERT INTO tiles (id, data) SELECT level << {_TILE_INDEX_BITS} | idx, data"  # noqa: S608
    f" FROM {_OLD_TILES} ORDER BY level, idx"
)
_DROP_OLD_TILES = f"DROP TABLE {_OLD_TILES}"
_SELECT_KEY_SET = (
    "SELECT vendor, idx, keys, threshold, serial FROM key_sets WHERE vendor = ?"
    " ORDER BY idx DESC LIMIT 1"
)
_ENTRY_BY_IDENTITY = "SELECT idx, data FROM entries WHERE identity = ?"
_SELECT_REVOCATIONS = "SELECT idx FROM revocations WHERE release_idx = ? ORDER BY idx"


# Functions run on the storage's threads; each gets that thread's connection.


def _connect(path: str, *, any_thread: bool = False) -> sqlite3.Connection:
    # timeout: SQLite's busy timeout, how long to wait for a lock.
    # isolation_level=None: no implicit transactions; BEGIN/COMMIT are explicit.
    # any_thread: used by one thread at a time, not always the same (the readers).
    return sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=not any_thread
    )


def _enable_wal(conn: sqlite3.Connection) -> object:
    """Switch to WAL. While another process creates the same new file, SQLite can
    answer "database is locked" at once, without waiting for the busy timeout:
    retry for up to BUSY_TIMEOUT_S."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            return mode
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _open_writer(path: str) -> sqlite3.Connection:
    conn = _connect(path)
    try:
        mode = _enable_wal(conn)
        if str(mode).lower() != "wal":
            raise RuntimeError(f"SQLite database {path}: cannot enable WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA fullfsync = ON")  # macOS: a real flush to the disk
        _create_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _tile_id(level: int, index: int) -> int | None:
    """The ``tiles.id`` of hash tile ``level/index``; None for one no log can hold
    (:func:`~firmlog.server.storage._checks.tile_in_reach`), which is never stored."""
    if not tile_in_reach(level, index):
        return None
    return level << _TILE_INDEX_BITS | index


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")  # serializes schema creation across processes
    upgraded = False
    try:
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(sql.sqlite(sql.INSERT_VERSION), (SCHEMA_VERSION,))
        (version,) = conn.execute(sql.SELECT_VERSION).fetchone()
        if version in UPGRADABLE:  # the missing tables were just created
            if version < 4:
                _upgrade_tiles(conn)  # made with the summary column
                upgraded = True  # the whole tiles table went through the WAL
            else:
                conn.execute(_ADD_TILE_SUMMARY)
            conn.execute(sql.sqlite(sql.START_SUMMARY_BACKFILL))
            conn.execute(sql.sqlite(sql.UPGRADE_VERSION), (SCHEMA_VERSION, version))
            version = SCHEMA_VERSION
        check_schema_version(version)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if upgraded:
        _shrink_wal(conn)


def _upgrade_tiles(conn: sqlite3.Connection) -> None:
    """Rebuild a version 2 or 3 ``tiles`` table (``WITHOUT ROWID`` on ``(level, idx)``)
    as the current one, every tile's bytes copied as they are (with no summary).

    Runs in the caller's transaction: if it fails, or the process dies, nothing
    of it is committed and the next open starts again from the old table.
    StorageOpenError if a stored tile cannot be keyed (the database is damaged)."""
    conn.execute(_RENAME_OLD_TILES)
    conn.execute(_CREATE_TILES)
    bad = conn.execute(_OLD_TILE_OUT_OF_REACH).fetchone()
    if bad is not None:
        raise StorageOpenError(
            f"cannot upgrade the tiles table to schema version {SCHEMA_VERSION}: it holds tile "
            f"{bad[0]}/{bad[1]}, beyond every tree of at most 2**63 - 1 leaves; the database "
            "is damaged: restore it from a backup, or run the firmlog-server version that made it"
        )
    conn.execute(_COPY_OLD_TILES)
    conn.execute(_DROP_OLD_TILES)


def _shrink_wal(conn: sqlite3.Connection) -> None:
    """After an upgrade (which wrote the whole tiles table to the WAL): copy the WAL
    into the database and truncate it, if no reader of another process is in the
    way (this does not wait for them; the WAL is checkpointed later then)."""
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")


def _open_reader(path: str) -> sqlite3.Connection:
    conn = _connect(path, any_thread=True)
    try:
        conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _close(conn: sqlite3.Connection) -> None:
    conn.close()


def _begin(conn: sqlite3.Connection, timeout: float | None = None) -> None:
    """``BEGIN IMMEDIATE``, waiting at most ``timeout`` seconds (BUSY_TIMEOUT_S) for the
    write lock.

    SQLite's own busy handler sleeps up to 100 ms between attempts, so a writer
    in another process (``--workers``) would wait long after the lock is free:
    this tries again every LOCK_POLL_S instead."""
    if conn.in_transaction:  # left behind by a caller cancelled mid-rollback; never committed
        conn.execute("ROLLBACK")
    deadline = time.monotonic() + (BUSY_TIMEOUT_S if timeout is None else timeout)
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(LOCK_POLL_S)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")


def _commit(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _check_writable(conn: sqlite3.Connection) -> None:
    """Take the write lock and let it go, waiting at most HEALTH_TIMEOUT_S for it."""
    _begin(conn, HEALTH_TIMEOUT_S)
    conn.execute("ROLLBACK")


class _SQLiteStatements:
    """:class:`~firmlog.server.storage._backend.Statements` on one connection, run on
    its thread. Every method is synchronous inside: a step awaiting them never suspends."""

    unique_violation: ClassVar[tuple[type[Exception], ...]] = (sqlite3.IntegrityError,)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def fetch(self, statement: str, *args: object) -> list[Row]:
        return self._conn.execute(sql.sqlite(statement), args).fetchall()

    async def execute(self, statement: str, *args: object) -> None:
        self._conn.execute(sql.sqlite(statement), args)

    async def executemany(self, statement: str, rows: Sequence[tuple[object, ...]]) -> None:
        self._conn.executemany(sql.sqlite(statement), rows)

    async def insert_entries(self, records: Sequence[EntryRecord]) -> None:
        self._conn.executemany(_INSERT_ENTRY, records)

    async def read_tiles(
        self, keys: Collection[tuple[int, int]]
    ) -> dict[tuple[int, int], StoredTile]:
        # On a reader: one snapshot for all tiles (one statement is one already).
        snapshot = len(keys) > 1 and not self._conn.in_transaction
        if snapshot:
            self._conn.execute("BEGIN")
        try:
            found: dict[tuple[int, int], StoredTile] = {}
            for key in keys:
                tile_id = _tile_id(*key)
                if tile_id is None:
                    continue
                row = self._conn.execute(_SELECT_TILE, (tile_id,)).fetchone()
                if row is not None:
                    found[key] = (bytes(row[0]), None if row[1] is None else bytes(row[1]))
            return found
        finally:
            if snapshot:
                self._conn.execute("COMMIT")

    async def upsert_tiles(self, rows: Sequence[tuple[int, int, bytes, bytes | None]]) -> None:
        records = []
        for level, index, data, summary in rows:
            tile_id = _tile_id(level, index)
            if tile_id is None:  # check_tile_growth refused it already
                raise ValueError(f"tile {level}/{index} is beyond every tree a log can hold")
            records.append((tile_id, data, summary))
        self._conn.executemany(_UPSERT_TILE, records)

    async def tiles_without_summary(
        self, after: tuple[int, int] | None, limit: int
    ) -> list[tuple[int, int, bytes]]:
        start: int | None = -1
        if after is not None:
            start = _tile_id(*after)
            if start is None:
                raise ValueError(f"tile {after[0]}/{after[1]} is beyond every tree a log can hold")
        rows = self._conn.execute(_TILES_WITHOUT_SUMMARY, (start, FULL_TILE_SIZE, limit))
        return [(i >> _TILE_INDEX_BITS, i & _TILE_INDEX_MASK, bytes(d)) for i, d in rows]

    async def set_tile_summaries(self, rows: Sequence[tuple[int, int, bytes]]) -> None:
        self._conn.executemany(
            _SET_TILE_SUMMARY, [(summary, _tile_id(lv, i)) for lv, i, summary in rows]
        )

    async def entries_by_identity(
        self, identities: Collection[bytes]
    ) -> dict[bytes, tuple[int, bytes]]:
        found: dict[bytes, tuple[int, bytes]] = {}
        for identity in identities:
            row = self._conn.execute(_ENTRY_BY_IDENTITY, (identity,)).fetchone()
            if row is not None:
                found[identity] = (int(row[0]), bytes(row[1]))
        return found

    async def key_sets(self, vendors: Collection[str]) -> dict[str, KeySetRow]:
        found: dict[str, KeySetRow] = {}
        for vendor in vendors:
            row = self._conn.execute(_SELECT_KEY_SET, (vendor,)).fetchone()
            if row is not None:
                found[vendor] = sql.key_set_row(row)
        return found

    async def revocations_of(self, release_indexes: Collection[int]) -> dict[int, list[int]]:
        found: dict[int, list[int]] = {}
        for index in release_indexes:
            revocations = [int(r[0]) for r in self._conn.execute(_SELECT_REVOCATIONS, (index,))]
            if revocations:
                found[index] = revocations
        return found


def _complete(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a step that never suspends (it awaits only _SQLiteStatements) to its end."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("a SQLite storage step awaited something other than its statements")


def _guarded(path: str, fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """``fn``, raising StorageUnavailable for an error of the file or its lock."""

    def run(conn: sqlite3.Connection) -> T:
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if code is None or code & 0xFF not in _UNAVAILABLE:
                raise
            name = getattr(exc, "sqlite_errorname", "SQLITE_ERROR")
            raise StorageUnavailable(
                f"SQLite database {path} cannot be used just now: {exc} ({name})"
            ) from exc

    return run


class _Threads:
    """The threads of an open storage: a writer owning its connection, and readers
    sharing as many reader connections (each read takes one that is free)."""

    def __init__(self, writer: ThreadPoolExecutor, reader: ThreadPoolExecutor, path: str) -> None:
        self.writer = writer
        self.reader = reader
        self.path = path
        self.write_conn: sqlite3.Connection | None = None  # used on the writer thread only
        # As many as reader threads: a read never waits for a connection.
        self.read_conns: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self.readers_open = 0
        self.writing: Session = _ThreadSession(self.write)
        self.reading: Session = _ThreadSession(self.read)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self.write_conn is not None
        return await asyncio.get_running_loop().run_in_executor(
            self.writer, _guarded(self.path, fn), self.write_conn
        )

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self.readers_open:
            raise RuntimeError(f"SQLite storage {self.path} has no reader connection open")
        return await asyncio.get_running_loop().run_in_executor(
            self.reader, self._on_reader, _guarded(self.path, fn)
        )

    def _on_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn = self.read_conns.get_nowait()  # one per reader thread: empty once closed
        except queue.Empty:
            raise RuntimeError(f"SQLite storage {self.path} is closed") from None
        try:
            return fn(conn)
        finally:
            self.read_conns.put(conn)

    async def open_readers(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(count):
            conn = await loop.run_in_executor(self.reader, _open_reader, self.path)
            self.read_conns.put(conn)
            self.readers_open += 1

    def _close_reader(self) -> None:
        _close(self.read_conns.get())  # waits for a read in progress to give it back

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            readers, self.readers_open = self.readers_open, 0
            for _ in range(readers):
                await loop.run_in_executor(self.reader, self._close_reader)
            if self.write_conn is not None:
                await loop.run_in_executor(self.writer, _close, self.write_conn)
        finally:
            self.write_conn = None
            self.reader.shutdown(wait=False)
            self.writer.shutdown(wait=False)


class _ThreadSession:
    """A session on one of the threads: each step runs there whole, in one hop."""

    def __init__(
        self, on_thread: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
    ) -> None:
        self._on_thread = on_thread

    async def run(
        self,
        step: Step[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        def on_thread(conn: sqlite3.Connection) -> T:
            return _complete(step(_SQLiteStatements(conn), *args, **kwargs))

        result: T = await self._on_thread(on_thread)
        return result


class SQLiteStorage(SQLStorage):
    """The log in one SQLite file (see the module docstring for its guarantees)."""

    def __init__(self, path: str) -> None:
        if path in ("", ":memory:") or path.startswith("file:"):
            raise ValueError(
                f"SQLite storage needs a file path, got {path!r} "
                "(its reader and writer connections must share one file)"
            )
        self._path = path
        self._lock = asyncio.Lock()  # one integration at a time in this process
        self._threads: _Threads | None = None

    def _open_threads(self) -> _Threads:
        if self._threads is None:
            raise RuntimeError(f"SQLite storage {self._path} is not open: call open() first")
        return self._threads

    async def open(self) -> None:
        async with self._lock:
            if self._threads is not None:
                return
            threads = _Threads(
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="firmlog-sqlite-writer"),
                ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="firmlog-sqlite-reader"),
                self._path,
            )
            loop = asyncio.get_running_loop()
            try:
                threads.write_conn = await loop.run_in_executor(
                    threads.writer, _open_writer, self._path
                )
                await threads.open_readers(READERS)
            except BaseException as exc:
                await threads.close()
                if isinstance(exc, sqlite3.Error):
                    raise StorageOpenError(
                        f"cannot open the SQLite database {self._path}: {exc}; check that its "
                        "directory exists and is writable and that the file is a firmlog "
                        "database, or set another database"
                    ) from exc
                raise
            self._threads = threads

    async def close(self) -> None:
        async with self._lock:  # waits for a running integration
            threads, self._threads = self._threads, None
            if threads is not None:
                await threads.close()

    async def check_writable(self) -> None:
        threads = self._open_threads()
        try:
            await asyncio.wait_for(self._lock.acquire(), HEALTH_TIMEOUT_S)
        except TimeoutError:
            raise StorageUnavailable(
                f"SQLite database {self._path}: an integration has held the write lock "
                f"for more than {HEALTH_TIMEOUT_S:.0f} s"
            ) from None
        try:
            await threads.write(_check_writable)
        finally:
            self._lock.release()

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[Session]:
        """``BEGIN IMMEDIATE`` on the writer thread, after this process's lock."""
        async with self._lock:
            threads = self._open_threads()
            committed = False
            try:
                await threads.write(_begin)
                yield threads.writing
                await threads.write(_commit)
                committed = True
            finally:
                if not committed:
                    # Shielded: a second cancellation must not drop the rollback. The
                    # writer thread runs jobs in order, so it rolls back before the
                    # next integration's BEGIN even if this await is interrupted.
                    await asyncio.shield(threads.write(_rollback))

    def _committed(self) -> Session:
        return self._open_threads().reading
