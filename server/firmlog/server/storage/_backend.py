"""What both backends share: the fork guard and every read, written once.

A backend (``sqlite.py``, ``postgres.py``) says only how to open and close
the database, how to hold the integration lock, and how to run a statement;
that is the contract below (:class:`Statements`, :class:`Session` and the
abstract methods of :class:`SQLStorage`), each promise in a sentence.
Everything else is here, once:

- :class:`GuardedIntegration`, the one implementation of
  :class:`~firmlog.server.storage.Integration`. Each write is one step inside
  the backend's transaction: read what is stored, check the transition with
  :mod:`firmlog.server.storage._checks`, write. After any failed write the
  integration can only roll back, even if the caller swallows the exception.
- :class:`SQLStorage`, the base of both storages: the integration context
  around the backend's lock, and every read of committed data.

The SQL is in :mod:`firmlog.server.storage._sql`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar, Concatenate, ParamSpec, Protocol, TypeAlias, TypeVar

from firmlog.client.merkle import HASH_SIZE
from firmlog.client.tiles import TILE_WIDTH, tile_summary
from firmlog.server.storage import (
    EntryRow,
    Integration,
    KeySetRow,
    LedgerRows,
    LogIdentity,
    LogState,
    ReleaseQuery,
    StoredTile,
)
from firmlog.server.storage import _sql as sql
from firmlog.server.storage._checks import (
    check_append_start,
    check_cosigned,
    check_identity_unset,
    check_state_covers_entries,
    check_state_transition,
    check_tile_growth,
)

T = TypeVar("T")
P = ParamSpec("P")

FULL_TILE_SIZE = TILE_WIDTH * HASH_SIZE  # a full tile is stored with its summary
Row: TypeAlias = Sequence[Any]
EntryRecord: TypeAlias = tuple[int, bytes, bytes, bytes]  # the columns sql.ENTRY_COLUMNS

# -- the backend contract -------------------------------------------------------------


class Statements(Protocol):
    """Static SQL on one connection: inside an integration's transaction, or on
    committed data.

    Statements come from :mod:`firmlog.server.storage._sql`; a backend may
    rewrite their placeholders, nothing else. Inside a transaction every
    statement sees the ones before it, and none is durable before the commit.
    An error of the driver propagates as it is: the :class:`Session` maps the
    ones that mean unavailability.
    """

    unique_violation: ClassVar[tuple[type[Exception], ...]]
    """The driver's errors for a row that breaks a UNIQUE or PRIMARY KEY constraint."""

    async def fetch(self, statement: str, *args: object) -> list[Row]:
        """The rows a query returns, in its order."""
        ...

    async def execute(self, statement: str, *args: object) -> None:
        """Run a statement once."""
        ...

    async def executemany(self, statement: str, rows: Sequence[tuple[object, ...]]) -> None:
        """Run a statement once for each of ``rows`` (at least one)."""
        ...

    # Where the backends really differ: batches, and lookups of many keys at once.

    async def insert_entries(self, records: Sequence[EntryRecord]) -> None:
        """Insert these rows into ``entries`` (at least one); raise one of
        :attr:`unique_violation` if an identity or leaf hash is stored or repeated."""
        ...

    async def read_tiles(
        self, keys: Collection[tuple[int, int]]
    ) -> dict[tuple[int, int], StoredTile]:
        """Stored bytes and summary of these hash tiles (distinct, at least one), all
        from one snapshot."""
        ...

    async def upsert_tiles(self, rows: Sequence[tuple[int, int, bytes, bytes | None]]) -> None:
        """Insert or replace these ``(level, index, data, summary)`` hash tiles (distinct,
        at least one, each checked by :func:`~firmlog.server.storage._checks.check_tile_growth`)."""
        ...

    async def tiles_without_summary(
        self, after: tuple[int, int] | None, limit: int
    ) -> list[tuple[int, int, bytes]]:
        """``(level, index, data)`` of up to ``limit`` full tiles stored without a
        summary, in key order, the first after ``after`` (None: from the start)."""
        ...

    async def set_tile_summaries(self, rows: Sequence[tuple[int, int, bytes]]) -> None:
        """Set the summary of these ``(level, index, summary)`` stored tiles."""
        ...

    async def entries_by_identity(
        self, identities: Collection[bytes]
    ) -> dict[bytes, tuple[int, bytes]]:
        """Index and bytes of the stored entries with these identities (distinct, at least one)."""
        ...

    async def key_sets(self, vendors: Collection[str]) -> dict[str, KeySetRow]:
        """The latest key set of each of these vendors (distinct, at least one) that has one."""
        ...

    async def revocations_of(self, release_indexes: Collection[int]) -> dict[int, list[int]]:
        """For each of these release indexes (distinct, at least one) that was revoked,
        the revocations' indexes in order."""
        ...


Step: TypeAlias = Callable[Concatenate[Statements, P], Coroutine[Any, Any, T]]
"""A step: an ``async def`` taking the statements first, awaiting nothing but them."""


class Session(Protocol):
    """Where steps run: the connection of an integration, or one for committed reads."""

    async def run(
        self,
        step: Step[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``step(statements, *args, **kwargs)`` on one connection, and what it returns.

        A step awaits only its statements: SQLite runs the whole step on its
        connection's thread in one go. An error that means the database cannot
        be reached or written is StorageUnavailable when it leaves the session
        (inside an integration: at the latest when the integration ends).
        """
        ...


# -- the steps, each run whole on one connection ---------------------------------------
#
# The log itself, in an integration: each write reads what is stored, checks, writes.


async def _first(q: Statements, statement: str, *args: object) -> Row | None:
    rows = await q.fetch(statement, *args)
    return rows[0] if rows else None


async def _read_state(q: Statements) -> LogState:
    row = await _first(q, sql.SELECT_STATE)
    if row is None:
        raise RuntimeError("the log_state row is missing: the database is damaged")
    return LogState(tree_size=int(row[0]), right_edge=bytes(row[1]), checkpoint=bytes(row[2]))


async def _next_index(q: Statements) -> int:
    row = await _first(q, sql.NEXT_INDEX)
    assert row is not None  # an aggregate always has a row
    return int(row[0])


async def _read_tiles(
    q: Statements, tiles: Collection[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    stored = await q.read_tiles(set(tiles)) if tiles else {}
    return {key: data for key, (data, _) in stored.items()}


async def _read_tiles_summarized(
    q: Statements, tiles: Collection[tuple[int, int]]
) -> dict[tuple[int, int], StoredTile]:
    return await q.read_tiles(set(tiles)) if tiles else {}


async def _entries_by_identity(
    q: Statements, identities: Sequence[bytes]
) -> dict[bytes, tuple[int, bytes]]:
    return await q.entries_by_identity(set(identities)) if identities else {}


async def _append_entries(q: Statements, start_index: int, entries: Sequence[EntryRow]) -> None:
    check_append_start(await _next_index(q), start_index)
    if not entries:
        return
    records = [(start_index + i, e.identity, e.leaf_hash, e.data) for i, e in enumerate(entries)]
    try:
        await q.insert_entries(records)
    except q.unique_violation as exc:
        raise RuntimeError(
            "append_entries: an identity or leaf hash is already in the log or repeated in "
            f"the batch (look entries up with entries_by_identity first): {exc}"
        ) from exc


async def _write_tiles(q: Statements, tiles: Mapping[tuple[int, int], bytes]) -> None:
    stored = await _read_tiles(q, tiles.keys())
    for key, data in tiles.items():
        check_tile_growth(key, stored.get(key), data)
    changed = [
        (level, index, data, tile_summary(data) if len(data) == FULL_TILE_SIZE else None)
        for (level, index), data in tiles.items()
        if stored.get((level, index)) != data
    ]
    if changed:
        await q.upsert_tiles(changed)


async def _summarize_tiles(q: Statements, limit: int) -> int | None:
    rows = await q.fetch(sql.SELECT_SUMMARY_BACKFILL)
    if not rows:
        return None
    after = (int(rows[0][0]), int(rows[0][1]))
    tiles = await q.tiles_without_summary(None if after[0] < 0 else after, limit)
    if tiles:
        await q.set_tile_summaries([(lv, i, tile_summary(data)) for lv, i, data in tiles])
    if len(tiles) < limit:
        await q.execute(sql.END_SUMMARY_BACKFILL)
    else:
        await q.execute(sql.UPDATE_SUMMARY_BACKFILL, tiles[-1][0], tiles[-1][1])
    return len(tiles)


async def _write_state(q: Statements, state: LogState) -> None:
    check_state_transition(await _read_state(q), state)
    check_state_covers_entries(await _next_index(q), state)
    await q.execute(sql.UPDATE_STATE, state.tree_size, state.right_edge, state.checkpoint)
    if state.checkpoint:
        await q.execute(sql.INSERT_CHECKPOINT, state.tree_size, state.checkpoint)


async def _record_cosigned(q: Statements, tree_size: int, note: bytes) -> None:
    check_cosigned(tree_size, await _checkpoint_at(q, tree_size), note)
    await q.execute(sql.UPDATE_CHECKPOINT, tree_size, note)
    await q.execute(sql.UPSERT_COSIGNED, tree_size, note)


async def _read_identity(q: Statements) -> LogIdentity | None:
    row = await _first(q, sql.SELECT_IDENTITY)
    return LogIdentity(origin=str(row[0]), vkey=str(row[1])) if row is not None else None


async def _write_identity(q: Statements, identity: LogIdentity) -> None:
    check_identity_unset(await _read_identity(q), identity)
    await q.execute(sql.INSERT_IDENTITY, identity.origin, identity.vkey)


# The ledger index, in an integration (and _key_sets for committed reads too).


async def _key_sets(q: Statements, vendors: Sequence[str]) -> dict[str, KeySetRow]:
    return await q.key_sets(set(vendors)) if vendors else {}


async def _write_ledger(q: Statements, rows: LedgerRows) -> None:
    key_sets = [
        (k.vendor, k.index, sql.join_keys(k.keys), k.threshold, k.serial) for k in rows.key_sets
    ]
    releases = [
        (r.index, r.vendor, r.product, r.version, r.security_version, r.image_sha256, r.image_size)
        for r in rows.releases
    ]
    fixes = [(cve, r.index) for r in rows.releases for cve in r.fixes]
    revocations = [(r.index, r.vendor, r.release_index) for r in rows.revocations]
    for statement, batch in (
        (sql.INSERT_KEY_SET, key_sets),
        (sql.INSERT_RELEASE, releases),
        (sql.INSERT_FIX, fixes),
        (sql.INSERT_REVOCATION, revocations),
    ):
        if batch:
            await q.executemany(statement, batch)


# Committed reads: the log itself, then the ledger index.


async def _latest_checkpoint(q: Statements) -> bytes | None:
    row = await _first(q, sql.SELECT_CHECKPOINT)
    return bytes(row[0]) if row is not None and row[0] else None


async def _latest_cosigned(q: Statements) -> bytes | None:
    row = await _first(q, sql.SELECT_COSIGNED)
    return bytes(row[0]) if row is not None else None


async def _checkpoint_at(q: Statements, tree_size: int) -> bytes | None:
    row = await _first(q, sql.SELECT_CHECKPOINT_AT, tree_size)
    return bytes(row[0]) if row is not None else None


async def _read_entries(q: Statements, start: int, end: int) -> list[bytes]:
    return [bytes(row[0]) for row in await q.fetch(sql.SELECT_ENTRIES, start, end)]


async def _find_index(q: Statements, statement: str, key: bytes) -> int | None:
    row = await _first(q, statement, key)
    return int(row[0]) if row is not None else None


async def _key_history(
    q: Statements, vendor: str | None, after: int, limit: int
) -> list[KeySetRow]:
    rows = (
        await q.fetch(sql.SELECT_KEY_HISTORY, after, limit)
        if vendor is None
        else await q.fetch(sql.SELECT_VENDOR_KEY_HISTORY, vendor, after, limit)
    )
    return [sql.key_set_row(r) for r in rows]


async def _search_releases(
    q: Statements, query: ReleaseQuery, cursor: int, limit: int, newest_first: bool
) -> list[tuple[int, bytes]]:
    statement, params = sql.release_search(query, cursor, limit, newest_first)
    return [(int(r[0]), bytes(r[1])) for r in await q.fetch(statement, *params)]


async def _revocations_of(q: Statements, release_indexes: Sequence[int]) -> dict[int, list[int]]:
    return await q.revocations_of(set(release_indexes)) if release_indexes else {}


async def _image_sizes(q: Statements, image_sha256: str) -> set[int]:
    return {int(r[0]) for r in await q.fetch(sql.SELECT_IMAGE_SIZES, image_sha256)}


# -- the one integration ------------------------------------------------------------


class GuardedIntegration:
    """An integration on the session of a backend's locked transaction.

    Once a write fails (a failed check included) the integration is poisoned:
    every later call raises, and the transaction rolls back when the block
    ends even if the caller caught the first exception.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._active = True
        self._failure: BaseException | None = None

    def _usable(self) -> None:
        if not self._active:
            raise RuntimeError("integration used after its transaction ended")
        if self._failure is not None:
            raise RuntimeError(
                "integration has a failed write and can only roll back"
            ) from self._failure

    async def _read(
        self,
        step: Step[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        self._usable()
        return await self._session.run(step, *args, **kwargs)

    async def _write(
        self,
        step: Step[P, None],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> None:
        self._usable()
        try:
            await self._session.run(step, *args, **kwargs)
        except BaseException as exc:
            if self._failure is None:
                self._failure = exc
            raise

    def _end(self) -> None:
        self._active = False

    def _raise_if_failed(self) -> None:
        """Called before commit: refuse to commit a transaction with a failed write."""
        if self._failure is not None:
            raise RuntimeError(
                "integration not committed: a write inside it failed"
            ) from self._failure

    # The log itself.

    async def state(self) -> LogState:
        return await self._read(_read_state)

    async def read_tiles(self, tiles: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return await self._read(_read_tiles, tiles)

    async def entries_by_identity(
        self, identities: Sequence[bytes]
    ) -> dict[bytes, tuple[int, bytes]]:
        return await self._read(_entries_by_identity, identities)

    async def append_entries(self, start_index: int, entries: Sequence[EntryRow]) -> None:
        await self._write(_append_entries, start_index, entries)

    async def write_tiles(self, tiles: Mapping[tuple[int, int], bytes]) -> None:
        await self._write(_write_tiles, tiles)

    async def write_state(self, state: LogState) -> None:
        await self._write(_write_state, state)

    async def identity(self) -> LogIdentity | None:
        return await self._read(_read_identity)

    async def write_identity(self, identity: LogIdentity) -> None:
        await self._write(_write_identity, identity)

    # The ledger index.

    async def key_sets(self, vendors: Sequence[str]) -> dict[str, KeySetRow]:
        return await self._read(_key_sets, vendors)

    async def write_ledger(self, rows: LedgerRows) -> None:
        await self._write(_write_ledger, rows)


# -- the storage over a backend ---------------------------------------------------------


class SQLStorage(ABC):
    """A :class:`~firmlog.server.storage.Storage` over a backend, which implements
    ``open``, ``close`` and ``check_writable`` as the Storage contract says, and:"""

    @abstractmethod
    def _locked(self) -> AbstractAsyncContextManager[Session]:
        """A transaction holding the log-wide integration lock, as the session to run in it.

        Entering waits for the lock, which one transaction holds at a time across
        every process sharing the database; it then sees everything its
        predecessors committed. Leaving normally commits, and returns once the
        commit is durable; leaving by an exception (a cancellation included)
        rolls back. The lock is released either way, and when the process dies.
        RuntimeError if the storage is not open.
        """

    @abstractmethod
    def _committed(self) -> Session:
        """A session for reads of committed data: it never sees a running
        integration's writes and never waits for the lock. RuntimeError if the
        storage is not open."""

    @asynccontextmanager
    async def integration(self) -> AsyncIterator[Integration]:
        async with self._locked() as session:
            integration = GuardedIntegration(session)
            try:
                yield integration
            finally:
                integration._end()
            integration._raise_if_failed()  # raising here rolls the transaction back

    # The log itself.

    async def latest_checkpoint(self) -> bytes | None:
        return await self._committed().run(_latest_checkpoint)

    async def checkpoint_at(self, tree_size: int) -> bytes | None:
        return await self._committed().run(_checkpoint_at, tree_size)

    async def latest_cosigned(self) -> bytes | None:
        return await self._committed().run(_latest_cosigned)

    async def record_cosigned(self, tree_size: int, note: bytes) -> None:
        # Its own short transaction under the integration lock: it waits for a
        # running integration, never inside one, and commits durably on exit.
        async with self._locked() as session:
            await session.run(_record_cosigned, tree_size, note)

    async def summarize_tiles(self, limit: int) -> int | None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        async with self._locked() as session:
            return await session.run(_summarize_tiles, limit)

    async def read_tiles(self, tiles: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        if not tiles:
            return {}
        return await self._committed().run(_read_tiles, tiles)

    async def read_tiles_summarized(
        self, tiles: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], StoredTile]:
        if not tiles:
            return {}
        return await self._committed().run(_read_tiles_summarized, tiles)

    async def read_entries(self, start: int, end: int) -> list[bytes]:
        if start < 0 or end < start:
            raise ValueError(f"entry range must satisfy 0 <= start <= end, got {start}..{end}")
        if start == end:
            return []
        return await self._committed().run(_read_entries, start, end)

    async def find_leaf(self, leaf_hash: bytes) -> int | None:
        return await self._committed().run(_find_index, sql.FIND_LEAF, leaf_hash)

    async def find_identity(self, identity: bytes) -> int | None:
        return await self._committed().run(_find_index, sql.FIND_IDENTITY, identity)

    # The ledger index.

    async def key_sets(self, vendors: Sequence[str]) -> dict[str, KeySetRow]:
        return await self._committed().run(_key_sets, vendors)

    async def key_history(self, vendor: str | None, after: int, limit: int) -> list[KeySetRow]:
        return await self._committed().run(_key_history, vendor, after, limit)

    async def search_releases(
        self, query: ReleaseQuery, cursor: int, limit: int, newest_first: bool = False
    ) -> list[tuple[int, bytes]]:
        return await self._committed().run(_search_releases, query, cursor, limit, newest_first)

    async def revocations_of(self, release_indexes: Sequence[int]) -> dict[int, list[int]]:
        return await self._committed().run(_revocations_of, release_indexes)

    async def image_sizes(self, image_sha256: str) -> set[int]:
        return await self._committed().run(_image_sizes, image_sha256)
