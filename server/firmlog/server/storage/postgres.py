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
- Last line of defence against a fork: the checks shared with the SQLite
  backend (:mod:`firmlog.server.storage.sqlite`) refuse entries that do not
  start at the stored size, duplicate leaf hashes, a shrinking state and a tile
  that does not extend what is stored; after any failed write the integration
  can only roll back.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg

from firmlog.server.storage import (
    EntryRow,
    Integration,
    KeySetRow,
    LedgerRows,
    LogIdentity,
    LogState,
    ReleaseQuery,
    StorageOpenError,
    StorageUnavailable,
    _sql,
)
from firmlog.server.storage._checks import (
    SCHEMA_VERSION,
    IntegrationGuard,
    check_append_start,
    check_identity_unset,
    check_schema_version,
    check_state_covers_entries,
    check_state_transition,
    check_tile_growth,
)
from firmlog.server.storage._sql import join_keys, key_set_row, release_search

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


class _GuardedPool:
    """The pool's query methods, with an acquire timeout and StorageUnavailable."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def acquire(self, timeout: float = ACQUIRE_TIMEOUT_S) -> Any:
        return self._pool.acquire(timeout=timeout)

    async def fetch(self, query: str, *args: Any) -> Any:
        with _unavailable():
            async with self.acquire() as conn:
                return await conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        with _unavailable():
            async with self.acquire() as conn:
                return await conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        with _unavailable():
            async with self.acquire() as conn:
                return await conn.fetchval(query, *args)


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
    PRIMARY KEY (level, idx)
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
# The statements both backends run are in _sql; PostgreSQL's own:
_LOCK_STATE = "SELECT id FROM log_state WHERE id = 1 FOR UPDATE"
_SELECT_TILES = """
SELECT t.level, t.idx, t.data
FROM tiles AS t
JOIN unnest($1::int[], $2::bigint[]) AS k (level, idx) ON t.level = k.level AND t.idx = k.idx
"""
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


async def _key_sets(conn: Any, vendors: Sequence[str]) -> dict[str, KeySetRow]:
    if not vendors:
        return {}
    rows = await conn.fetch(_SELECT_KEY_SETS, list(set(vendors)))
    return {r[0]: key_set_row(r) for r in rows}


async def _read_tiles(
    conn: Any,  # an asyncpg connection, or the pool for committed data
    tiles: Sequence[tuple[int, int]],
) -> dict[tuple[int, int], bytes]:
    if not tiles:
        return {}
    keys = set(tiles)
    rows = await conn.fetch(_SELECT_TILES, [k[0] for k in keys], [k[1] for k in keys])
    return {(int(row[0]), int(row[1])): bytes(row[2]) for row in rows}


async def _read_state(conn: Any) -> LogState:
    row = await conn.fetchrow(_sql.SELECT_STATE)
    if row is None:
        raise RuntimeError("the log_state row is missing: the database is damaged")
    return LogState(tree_size=int(row[0]), right_edge=bytes(row[1]), checkpoint=bytes(row[2]))


class _PostgresIntegration(IntegrationGuard):
    """One READ COMMITTED transaction holding the ``log_state`` row lock."""

    def __init__(self, conn: Any) -> None:
        super().__init__()
        self._conn = conn

    async def state(self) -> LogState:
        self._usable()
        return await _read_state(self._conn)

    async def read_tiles(self, tiles: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        self._usable()
        return await _read_tiles(self._conn, tiles)

    async def append_entries(self, start_index: int, entries: Sequence[EntryRow]) -> None:
        self._usable()
        try:
            check_append_start(int(await self._conn.fetchval(_sql.NEXT_INDEX)), start_index)
            if not entries:
                return
            records = [
                (start_index + i, e.identity, e.leaf_hash, e.data) for i, e in enumerate(entries)
            ]
            try:
                await self._conn.copy_records_to_table(
                    "entries", records=records, columns=_sql.ENTRY_COLUMNS
                )
            except asyncpg.UniqueViolationError as exc:
                raise RuntimeError(
                    "append_entries: an identity or leaf hash is already in the log or "
                    f"repeated in the batch (look entries up with entries_by_identity first): "
                    f"{exc}"
                ) from exc
        except BaseException as exc:
            self._failed(exc)
            raise

    async def write_tiles(self, tiles: Mapping[tuple[int, int], bytes]) -> None:
        self._usable()
        try:
            stored = await _read_tiles(self._conn, list(tiles))
            for key, data in tiles.items():
                check_tile_growth(key, stored.get(key), data)
            changed = [
                (lvl, idx, data)
                for (lvl, idx), data in tiles.items()
                if stored.get((lvl, idx)) != data
            ]
            if changed:
                await self._conn.executemany(_sql.UPSERT_TILE, changed)
        except BaseException as exc:
            self._failed(exc)
            raise

    async def write_state(self, state: LogState) -> None:
        self._usable()
        try:
            check_state_transition(await _read_state(self._conn), state)
            check_state_covers_entries(int(await self._conn.fetchval(_sql.NEXT_INDEX)), state)
            await self._conn.execute(
                _sql.UPDATE_STATE, state.tree_size, state.right_edge, state.checkpoint
            )
            if state.checkpoint:
                await self._conn.execute(_sql.INSERT_CHECKPOINT, state.tree_size, state.checkpoint)
        except BaseException as exc:
            self._failed(exc)
            raise

    async def key_sets(self, vendors: Sequence[str]) -> dict[str, KeySetRow]:
        self._usable()
        return await _key_sets(self._conn, vendors)

    async def entries_by_identity(
        self, identities: Sequence[bytes]
    ) -> dict[bytes, tuple[int, bytes]]:
        self._usable()
        if not identities:
            return {}
        rows = await self._conn.fetch(_ENTRIES_BY_IDENTITY, list(set(identities)))
        return {bytes(r[0]): (int(r[1]), bytes(r[2])) for r in rows}

    async def identity(self) -> LogIdentity | None:
        self._usable()
        row = await self._conn.fetchrow(_sql.SELECT_IDENTITY)
        return LogIdentity(origin=str(row[0]), vkey=str(row[1])) if row is not None else None

    async def write_identity(self, identity: LogIdentity) -> None:
        self._usable()
        try:
            check_identity_unset(await self.identity(), identity)
            await self._conn.execute(_sql.INSERT_IDENTITY, identity.origin, identity.vkey)
        except BaseException as exc:
            self._failed(exc)
            raise

    async def write_ledger(self, rows: LedgerRows) -> None:
        self._usable()
        try:
            conn = self._conn
            if rows.key_sets:
                await conn.executemany(
                    _sql.INSERT_KEY_SET,
                    [
                        (k.vendor, k.index, join_keys(k.keys), k.threshold, k.serial)
                        for k in rows.key_sets
                    ],
                )
            if rows.releases:
                await conn.executemany(
                    _sql.INSERT_RELEASE,
                    [
                        (
                            r.index,
                            r.vendor,
                            r.product,
                            r.version,
                            r.security_version,
                            r.image_sha256,
                            r.image_size,
                        )
                        for r in rows.releases
                    ],
                )
            fixes = [(cve, r.index) for r in rows.releases for cve in r.fixes]
            if fixes:
                await conn.executemany(_sql.INSERT_FIX, fixes)
            if rows.revocations:
                await conn.executemany(
                    _sql.INSERT_REVOCATION,
                    [(r.index, r.vendor, r.release_index) for r in rows.revocations],
                )
        except BaseException as exc:
            self._failed(exc)
            raise


class PostgresStorage:
    """The log in a PostgreSQL database (see the module docstring for its guarantees)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._pool: Any = None  # asyncpg.Pool once open

    def _open_pool(self) -> _GuardedPool:
        if self._pool is None:
            raise RuntimeError("PostgreSQL storage is not open: call open() first")
        return _GuardedPool(self._pool)

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
                await conn.execute(_sql.INSERT_VERSION, SCHEMA_VERSION)
                check_schema_version(await conn.fetchval(_sql.SELECT_VERSION))
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
            async with pool.acquire(HEALTH_TIMEOUT_S) as conn:
                recovery, read_only = await conn.fetchrow(_CHECK_WRITABLE, timeout=HEALTH_TIMEOUT_S)
        if recovery:
            raise StorageUnavailable("PostgreSQL is in recovery (a standby): it cannot be written")
        if read_only != "off":
            raise StorageUnavailable(
                f"PostgreSQL sessions are read-only (transaction_read_only = {read_only})"
            )

    @asynccontextmanager
    async def integration(self) -> AsyncIterator[Integration]:
        pool = self._open_pool()
        # READ COMMITTED whatever the server's default: after the row lock is
        # granted, every statement sees the predecessor's committed writes.
        with _unavailable():
            async with pool.acquire() as conn, conn.transaction(isolation="read_committed"):
                if await conn.fetchval(_LOCK_STATE) is None:
                    raise RuntimeError("the log_state row is missing: the database is damaged")
                integration = _PostgresIntegration(conn)
                try:
                    yield integration
                finally:
                    integration._end()
                integration._raise_if_failed()  # raising here rolls the transaction back

    async def latest_checkpoint(self) -> bytes | None:
        note = await self._open_pool().fetchval(_sql.SELECT_CHECKPOINT)
        return bytes(note) if note else None

    async def checkpoint_at(self, tree_size: int) -> bytes | None:
        note = await self._open_pool().fetchval(_sql.SELECT_CHECKPOINT_AT, tree_size)
        return bytes(note) if note is not None else None

    async def read_tiles(self, tiles: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        if not tiles:
            return {}
        return await _read_tiles(self._open_pool(), tiles)

    async def read_entries(self, start: int, end: int) -> list[bytes]:
        if start < 0 or end < start:
            raise ValueError(f"entry range must satisfy 0 <= start <= end, got {start}..{end}")
        if start == end:
            return []
        rows = await self._open_pool().fetch(_sql.SELECT_ENTRIES, start, end)
        return [bytes(row[0]) for row in rows]

    async def find_leaf(self, leaf_hash: bytes) -> int | None:
        index = await self._open_pool().fetchval(_sql.FIND_LEAF, leaf_hash)
        return int(index) if index is not None else None

    async def find_identity(self, identity: bytes) -> int | None:
        index = await self._open_pool().fetchval(_sql.FIND_IDENTITY, identity)
        return int(index) if index is not None else None

    async def key_sets(self, vendors: Sequence[str]) -> dict[str, KeySetRow]:
        return await _key_sets(self._open_pool(), vendors)

    async def key_history(self, vendor: str | None, after: int, limit: int) -> list[KeySetRow]:
        pool = self._open_pool()
        rows = (
            await pool.fetch(_sql.SELECT_KEY_HISTORY, after, limit)
            if vendor is None
            else await pool.fetch(_sql.SELECT_VENDOR_KEY_HISTORY, vendor, after, limit)
        )
        return [key_set_row(r) for r in rows]

    async def search_releases(
        self, query: ReleaseQuery, cursor: int, limit: int, newest_first: bool = False
    ) -> list[tuple[int, bytes]]:
        sql, params = release_search(query, cursor, limit, newest_first)
        rows = await self._open_pool().fetch(sql, *params)
        return [(int(r[0]), bytes(r[1])) for r in rows]

    async def revocations_of(self, release_indexes: Sequence[int]) -> dict[int, list[int]]:
        if not release_indexes:
            return {}
        rows = await self._open_pool().fetch(_SELECT_REVOCATIONS, list(set(release_indexes)))
        found: dict[int, list[int]] = {}
        for r in rows:
            found.setdefault(int(r[0]), []).append(int(r[1]))
        return found

    async def image_sizes(self, image_sha256: str) -> set[int]:
        rows = await self._open_pool().fetch(_sql.SELECT_IMAGE_SIZES, image_sha256)
        return {int(r[0]) for r in rows}
