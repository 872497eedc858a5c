"""PostgreSQL backend (asyncpg): production storage, shareable by several servers.

Implements the storage contract of :mod:`firmlog.server.storage`. What it
guarantees:

- Durability: PostgreSQL's own. An integration's writes are durable once its
  COMMIT returns, i.e. once :meth:`PostgresStorage.integration` exits without an
  exception (given the server's defaults ``fsync = on`` and
  ``synchronous_commit = on``).
- Serialization: every integration is one READ COMMITTED transaction whose
  first statement locks the single ``log_state`` row (``SELECT ... FOR
  UPDATE``). All server processes sharing the database queue on that row lock,
  and each reads the state its predecessor committed, so two writers can never
  fork the log. A writer that dies mid-integration is rolled back by the server
  and its lock released.
- Schema creation: ``CREATE TABLE IF NOT EXISTS`` in a transaction holding a
  transaction-level advisory lock, so processes starting together do not race.
- One connection pool per storage; every statement is static SQL. Reads outside
  an integration see committed data only and never wait for the integration lock.
- Unavailability: a refused, lost or timed-out connection, a server shutting
  down, in recovery, read-only or out of resources raises
  :class:`~firmlog.server.storage.StorageUnavailable` (a connection waits at
  most :data:`ACQUIRE_TIMEOUT_S` for the pool); other errors propagate.
- Last line of defence against a fork: the guarded integration shared with
  the SQLite backend (:mod:`firmlog.server.storage._backend`) refuses entries
  that do not start at the stored size, duplicate leaf hashes, a shrinking
  state and a tile that does not extend what is stored; after any failed write
  the integration can only roll back. This file says how to connect, hold the
  lock and run a statement; the reads and their SQL are written once there.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, ClassVar, ParamSpec, TypeVar

import asyncpg

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
from firmlog.server.storage._checks import SCHEMA_VERSION, UPGRADABLE, check_schema_version

T = TypeVar("T")
P = ParamSpec("P")

POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 10
ACQUIRE_TIMEOUT_S = 30.0
"""How long a request waits for a pool connection before the database counts as unavailable."""
HEALTH_TIMEOUT_S = 5.0
_CHECK_WRITABLE = "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')"

# Errors of the connection or the server's state, not of the statement.
_UNAVAILABLE = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # connecting, or waiting for a pool connection
    asyncpg.PostgresConnectionError,  # class 08, and a connection lost mid-statement
    asyncpg.OperatorInterventionError,  # class 57: shutting down, starting up, cancelled
    asyncpg.InsufficientResourcesError,  # class 53: disk full, out of memory, connections
    asyncpg.ReadOnlySQLTransactionError,  # 25006: a read-only server or standby
)


@contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StorageUnavailable(
            f"PostgreSQL cannot be used just now: {type(exc).__name__}: {exc}"
        ) from exc


_SCHEMA_LOCK_KEY = 0x666972_6D6C6F67  # "firmlog": advisory lock around schema creation

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    id INT PRIMARY KEY CHECK (id = 1),
    version INT NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    idx BIGINT PRIMARY KEY CHECK (idx >= 0),
    identity BYTEA NOT NULL UNIQUE,
    leaf_hash BYTEA NOT NULL UNIQUE,
    data BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS tiles (
    level INT NOT NULL,
    idx BIGINT NOT NULL,
    data BYTEA NOT NULL,
    summary BYTEA,
    PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS summary_backfill (
    id INT PRIMARY KEY CHECK (id = 1),
    level INT NOT NULL,
    idx BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS log_state (
    id INT PRIMARY KEY CHECK (id = 1),
    tree_size BIGINT NOT NULL,
    right_edge BYTEA NOT NULL,
    checkpoint BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    tree_size BIGINT PRIMARY KEY,
    note BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS cosigned_checkpoint (
    id INT PRIMARY KEY CHECK (id = 1),
    tree_size BIGINT NOT NULL,
    note BYTEA NOT NULL
);
INSERT INTO log_state (id, tree_size, right_edge, checkpoint)
    VALUES (1, 0, '', '') ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS key_sets (
    vendor TEXT NOT NULL,
    idx BIGINT NOT NULL,
    keys TEXT NOT NULL,
    threshold INT NOT NULL,
    serial BIGINT NOT NULL,
    PRIMARY KEY (vendor, idx),
    UNIQUE (vendor, serial)
);
CREATE INDEX IF NOT EXISTS key_sets_by_idx ON key_sets (idx);
CREATE TABLE IF NOT EXISTS releases (
    idx BIGINT PRIMARY KEY,
    vendor TEXT NOT NULL,
    product TEXT NOT NULL,
    version TEXT NOT NULL,
    security_version BIGINT NOT NULL,
    image_sha256 TEXT NOT NULL,
    image_size BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS releases_by_vendor ON releases (vendor, product, version, idx);
CREATE INDEX IF NOT EXISTS releases_by_product ON releases (product, idx);
CREATE INDEX IF NOT EXISTS releases_by_image ON releases (image_sha256, idx);
CREATE TABLE IF NOT EXISTS release_fixes (
    cve TEXT NOT NULL,
    idx BIGINT NOT NULL,
    PRIMARY KEY (cve, idx)
);
CREATE TABLE IF NOT EXISTS revocations (
    idx BIGINT PRIMARY KEY,
    vendor TEXT NOT NULL,
    release_idx BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS revocations_by_release ON revocations (release_idx);
CREATE TABLE IF NOT EXISTS log_identity (
    id INT PRIMARY KEY CHECK (id = 1),
    origin TEXT NOT NULL,
    vkey TEXT NOT NULL
);
"""
_SCHEMA_LOCK = "SELECT pg_advisory_xact_lock($1)"
# Hash tiles are incompressible: EXTERNAL stores them out of line without trying
# pglz first (an 8 KiB tile upsert measured ~65 -> ~55 us; reads unchanged).
# CREATE TABLE cannot say so before PostgreSQL 16; altered once, when it is not yet.
_TILES_STORAGE = (
    "SELECT attstorage FROM pg_attribute WHERE attrelid = 'tiles'::regclass AND attname = 'data'"
)
_SET_TILES_STORAGE = "ALTER TABLE tiles ALTER COLUMN data SET STORAGE EXTERNAL"
# The statements both backends run are in _sql; PostgreSQL's own:
_LOCK_STATE = "SELECT id FROM log_state WHERE id = 1 FOR UPDATE"
# Schema version 4 (or older) to 5: full tiles get a summary; those stored before have none.
_ADD_TILE_SUMMARY = "ALTER TABLE tiles ADD COLUMN IF NOT EXISTS summary BYTEA"
_TILES_WITHOUT_SUMMARY = """
SELECT level, idx, data FROM tiles
WHERE (level, idx) > ($1, $2) AND summary IS NULL AND octet_length(data) = $3
ORDER BY level, idx LIMIT $4
"""
_SET_TILE_SUMMARY = "UPDATE tiles SET summary = $3 WHERE level = $1 AND idx = $2"
_SELECT_TILES = """
SELECT t.level, t.idx, t.data, t.summary
FROM tiles AS t
JOIN unnest($1::int[], $2::bigint[]) AS k (level, idx) ON t.level = k.level AND t.idx = k.idx
"""
_UPSERT_TILE = (
    "INSERT INTO tiles (level, idx, data, summary) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (level, idx) DO UPDATE SET data = excluded.data, summary = excluded.summary"
)
_SELECT_KEY_SETS = """
SELECT DISTINCT ON (vendor) vendor, idx, keys, threshold, serial FROM key_sets
WHERE vendor = ANY($1::text[]) ORDER BY vendor, idx DESC
"""
_ENTRIES_BY_IDENTITY = "SELECT identity, idx, data FROM entries WHERE identity = ANY($1::bytea[])"
_SELECT_REVOCATIONS = (
    "SELECT release_idx, idx FROM revocations WHERE release_idx = ANY($1::bigint[]) ORDER BY idx"
)
_URL_FORM = "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
_PASSWORD = re.compile(r"(://[^/@:]*:)[^/@]*@")


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``, to be shown in messages."""
    return _PASSWORD.sub(r"\1***@", url)


def _open_problem(url: str, exc: BaseException) -> str:
    """One line: why ``url`` could not be opened, and what to do."""
    where = redact(url)
    if isinstance(exc, ValueError):  # asyncpg's DSN parser, ClientConfigurationError
        return f"the database URL {where} is malformed: {exc}; write it as {_URL_FORM}"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return (
            f"PostgreSQL has no such database ({where}): {exc}; create it "
            "(createdb NAME) or name an existing database in the URL"
        )
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):  # also a bad password
        return (
            f"PostgreSQL refused the login ({where}): {exc}; create that role or grant it "
            "access, or fix the user and password in the URL"
        )
    if isinstance(exc, asyncpg.PostgresError):
        return f"PostgreSQL refused the connection ({where}): {exc}; fix the database URL"
    if isinstance(exc, TimeoutError):
        return f"PostgreSQL did not answer ({where}); check that it is running and reachable"
    if isinstance(exc, OSError):
        return (
            f"cannot connect to PostgreSQL ({where}): {exc.strerror or exc}; start PostgreSQL "
            "there, or fix the host and port in the database URL"
        )
    return f"cannot open the PostgreSQL database {where}: {exc}; fix the database URL"


class _PostgresStatements:
    """:class:`~firmlog.server.storage._backend.Statements` on one asyncpg connection;
    inside an integration also its session (a step runs on the transaction's connection)."""

    unique_violation: ClassVar[tuple[type[Exception], ...]] = (asyncpg.UniqueViolationError,)

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def run(
        self,
        step: Step[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return await step(self, *args, **kwargs)

    async def fetch(self, statement: str, *args: object) -> list[Row]:
        rows: list[Row] = await self._conn.fetch(statement, *args)
        return rows

    async def execute(self, statement: str, *args: object) -> None:
        await self._conn.execute(statement, *args)

    async def executemany(self, statement: str, rows: Sequence[tuple[object, ...]]) -> None:
        await self._conn.executemany(statement, rows)

    async def insert_entries(self, records: Sequence[EntryRecord]) -> None:
        await self._conn.copy_records_to_table(
            "entries", records=records, columns=sql.ENTRY_COLUMNS
        )

    async def read_tiles(
        self, keys: Collection[tuple[int, int]]
    ) -> dict[tuple[int, int], StoredTile]:
        rows = await self._conn.fetch(_SELECT_TILES, [k[0] for k in keys], [k[1] for k in keys])
        return {
            (int(row[0]), int(row[1])): (bytes(row[2]), None if row[3] is None else bytes(row[3]))
            for row in rows
        }

    async def upsert_tiles(self, rows: Sequence[tuple[int, int, bytes, bytes | None]]) -> None:
        await self._conn.executemany(_UPSERT_TILE, rows)

    async def tiles_without_summary(
        self, after: tuple[int, int] | None, limit: int
    ) -> list[tuple[int, int, bytes]]:
        level, index = (-1, -1) if after is None else after
        rows = await self._conn.fetch(_TILES_WITHOUT_SUMMARY, level, index, FULL_TILE_SIZE, limit)
        return [(int(r[0]), int(r[1]), bytes(r[2])) for r in rows]

    async def set_tile_summaries(self, rows: Sequence[tuple[int, int, bytes]]) -> None:
        await self._conn.executemany(_SET_TILE_SUMMARY, rows)

    async def entries_by_identity(
        self, identities: Collection[bytes]
    ) -> dict[bytes, tuple[int, bytes]]:
        rows = await self._conn.fetch(_ENTRIES_BY_IDENTITY, list(identities))
        return {bytes(r[0]): (int(r[1]), bytes(r[2])) for r in rows}

    async def key_sets(self, vendors: Collection[str]) -> dict[str, KeySetRow]:
        rows = await self._conn.fetch(_SELECT_KEY_SETS, list(vendors))
        return {r[0]: sql.key_set_row(r) for r in rows}

    async def revocations_of(self, release_indexes: Collection[int]) -> dict[int, list[int]]:
        rows = await self._conn.fetch(_SELECT_REVOCATIONS, list(release_indexes))
        found: dict[int, list[int]] = {}
        for r in rows:
            found.setdefault(int(r[0]), []).append(int(r[1]))
        return found


class _PoolSession:
    """Committed reads: each step on a pool connection, waiting at most
    ACQUIRE_TIMEOUT_S for one, with StorageUnavailable for an unavailable database."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def run(
        self,
        step: Step[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        with _unavailable():
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                return await step(_PostgresStatements(conn), *args, **kwargs)


class PostgresStorage(SQLStorage):
    """The log in a PostgreSQL database (see the module docstring for its guarantees)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._pool: Any = None  # asyncpg.Pool once open

    def _open_pool(self) -> Any:
        if self._pool is None:
            raise RuntimeError("PostgreSQL storage is not open: call open() first")
        return self._pool

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self._url, min_size=POOL_MIN_SIZE, max_size=POOL_MAX_SIZE
            )
        except (OSError, TimeoutError, ValueError, asyncpg.PostgresError) as exc:
            raise StorageOpenError(_open_problem(self._url, exc)) from exc
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(_SCHEMA_LOCK, _SCHEMA_LOCK_KEY)
                await conn.execute(_SCHEMA)
                if await conn.fetchval(_TILES_STORAGE) != b"e":  # "char": one byte
                    await conn.execute(_SET_TILES_STORAGE)
                await conn.execute(sql.INSERT_VERSION, SCHEMA_VERSION)
                version = await conn.fetchval(sql.SELECT_VERSION)
                if version in UPGRADABLE:  # the missing tables were just created
                    await conn.execute(_ADD_TILE_SUMMARY)
                    await conn.execute(sql.START_SUMMARY_BACKFILL)
                    await conn.execute(sql.UPGRADE_VERSION, SCHEMA_VERSION, version)
                    version = SCHEMA_VERSION
                check_schema_version(version)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()  # waits for connections in use to be released

    async def check_writable(self) -> None:
        pool = self._open_pool()
        with _unavailable():
            async with pool.acquire(timeout=HEALTH_TIMEOUT_S) as conn:
                recovery, read_only = await conn.fetchrow(_CHECK_WRITABLE, timeout=HEALTH_TIMEOUT_S)
        if recovery:
            raise StorageUnavailable("PostgreSQL is in recovery (a standby): it cannot be written")
        if read_only != "off":
            raise StorageUnavailable(
                f"PostgreSQL sessions are read-only (transaction_read_only = {read_only})"
            )

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[Session]:
        """A READ COMMITTED transaction whose first statement locks the state row."""
        pool = self._open_pool()
        # READ COMMITTED whatever the server's default: after the row lock is
        # granted, every statement sees the predecessor's committed writes.
        with _unavailable():
            async with (
                pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn,
                conn.transaction(isolation="read_committed"),
            ):
                if await conn.fetchval(_LOCK_STATE) is None:
                    raise RuntimeError("the log_state row is missing: the database is damaged")
                yield _PostgresStatements(conn)

    def _committed(self) -> Session:
        return _PoolSession(self._open_pool())
