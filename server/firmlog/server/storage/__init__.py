"""The storage contract of the log server, and how to open a backend by URL.

One contract in two parts: the log itself (:class:`LogStorage`, and
:class:`LogIntegration` inside an integration: state, entries, hash tiles,
checkpoints, identity) and the ledger index derived from its entries
(:class:`LedgerIndex`, :class:`LedgerIntegration`). :class:`Storage` and
:class:`Integration` are both parts together. Two backends, each one file:
``sqlite.py`` (the embedded default, a file in the data directory) and
``postgres.py`` (asyncpg). The same conformance tests run against both.

Each rule is written once: the checks that keep a writer from forking the log
in ``_checks.py``; the guarded integration and every read, over a few
operations each backend provides, in ``_backend.py``; the SQL in ``_sql.py``.
A backend file says only how to open the database, hold the integration lock
and run a statement.

What is stored:

- ``entries``: index -> (identity, leaf hash, entry bytes). Identities (and
  so leaf hashes) are unique: a resubmitted entry is found by its identity and
  keeps its index. For a firmlog entry the identity is the SHA-256 of its
  signed text (:attr:`firmlog.client.entries.Entry.identity`), so the same
  text with other signature lines is the same entry.
- ``tiles``: (level, index) -> the widest version written so far of that hash
  tile (``width * 32`` bytes). A partial tile is always a prefix of the tile it
  grows into, so the stored bytes serve every width up to their own. A full
  tile is stored with its summary (:func:`firmlog.client.tiles.tile_summary`,
  512 bytes, since schema version 5), so that a reader missing it in memory
  hashes 22 of its nodes for a proof, not 254.
- the log state: tree size, the right edge of the tree
  (:meth:`firmlog.client.merkle.CompactRange.to_bytes`) and the latest signed
  checkpoint note; plus every checkpoint ever signed, by tree size.
- the latest checkpoint cosigned by a quorum of witnesses (with witnessing,
  the one the log publishes), recorded after the integration that signed it;
  its cosigned note also replaces the log-signed one in the history.
- the ledger index, derived from the entries and written in the same
  transaction: every vendor key set (admission and rotations) by log index
  and serial,
  one row per release with its searchable fields and fixed CVEs, one row per
  revocation. It can always be rebuilt by replaying the entries.
- the log's identity (:class:`LogIdentity`): its origin and verifier key,
  written once when the log is created, so that a server with other keys can
  tell that the database holds another log.

Writes are durable once :meth:`Storage.integration`'s context exits without
an exception. Integrations are serialized across every process sharing the
database: two writers can never fork the log.

Errors: when the database cannot be reached or written (connection refused or
lost, read-only or in recovery, disk full or failing, locked too long) every
method raises :class:`StorageUnavailable`, chained to the driver's error.
Anything else a backend raises is a bug or a damaged database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from firmlog.server.errors import StorageOpenError as StorageOpenError
from firmlog.server.errors import StorageUnavailable as StorageUnavailable

StoredTile = tuple[bytes, bytes | None]
"""A hash tile's stored bytes and summary: written with every full tile, None for a
partial tile and for one written before schema version 5."""


@dataclass(frozen=True, slots=True)
class LogState:
    """The sequencer's view of the log, read and written inside an integration."""

    tree_size: int
    right_edge: bytes  # CompactRange.to_bytes(): 32 bytes per set bit of tree_size
    checkpoint: bytes  # the latest signed checkpoint note; b"" before the first


EMPTY_STATE = LogState(tree_size=0, right_edge=b"", checkpoint=b"")


@dataclass(frozen=True, slots=True)
class EntryRow:
    """An entry to append: its identity, its RFC 6962 leaf hash and its bytes."""

    identity: bytes
    leaf_hash: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class LogIdentity:
    """Which log a database holds: recorded once, in the integration that creates the log."""

    origin: str
    vkey: str  # the log's verifier key, name+hexid+base64(type||pubkey)


@dataclass(frozen=True, slots=True)
class KeySetRow:
    """A vendor's key set number ``serial``, as set by the entry at ``index``
    (admission: serial 1, or rotation)."""

    vendor: str
    index: int
    keys: tuple[str, ...]  # vkeys
    threshold: int
    serial: int


@dataclass(frozen=True, slots=True)
class ReleaseRow:
    """The searchable fields of the release at ``index``."""

    index: int
    vendor: str
    product: str
    version: str
    security_version: int
    image_sha256: str
    image_size: int
    fixes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RevocationRow:
    """The revocation at ``index`` withdraws the release at ``release_index``."""

    index: int
    vendor: str
    release_index: int


@dataclass(frozen=True, slots=True)
class LedgerRows:
    """Ledger index rows written with the entries of one integration."""

    key_sets: Sequence[KeySetRow] = ()
    releases: Sequence[ReleaseRow] = ()
    revocations: Sequence[RevocationRow] = ()


@dataclass(frozen=True, slots=True)
class ReleaseQuery:
    """Exact-match filters of a release search; None matches anything."""

    vendor: str | None = None
    product: str | None = None
    version: str | None = None
    image_sha256: str | None = None
    cve: str | None = None


# -- the contract --------------------------------------------------------------------
#
# Two parts: the log itself (its state, entries, hash tiles, checkpoints and
# identity) and the ledger index derived from its entries. Each has the part an
# integration writes and the part readers see once it commits.


class LogIntegration(Protocol):
    """The log itself inside one integration: a transaction holding the log-wide lock.

    Reads see what earlier integrations committed and this one wrote. Writes are
    seen by nobody else until the integration commits, become durable when it
    does, and vanish if it rolls back. A write that fails (a check included)
    leaves the integration able only to roll back.
    """

    async def state(self) -> LogState:
        """The state as last written: by this integration, else by the last one
        committed (EMPTY_STATE for a new log)."""
        ...

    async def read_tiles(self, tiles: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Stored bytes of the hash tiles ``(level, index)`` that exist, this
        integration's writes included."""
        ...

    async def entries_by_identity(
        self, identities: Sequence[bytes]
    ) -> dict[bytes, tuple[int, bytes]]:
        """Index and bytes of the entries with these identities that are in the log,
        this integration's appends included."""
        ...

    async def append_entries(self, start_index: int, entries: Sequence[EntryRow]) -> None:
        """Store entries at ``start_index``, ``start_index + 1``, ...; durable with the commit.

        RuntimeError unless ``start_index`` is the number of stored entries, or if an
        identity or leaf hash is already stored or repeated."""
        ...

    async def write_tiles(self, tiles: Mapping[tuple[int, int], bytes]) -> None:
        """Insert or replace hash tiles; durable with the commit.

        ValueError for a malformed tile; RuntimeError for one that does not start
        with the stored bytes (each must be a wider version of what is stored)."""
        ...

    async def write_state(self, state: LogState) -> None:
        """Set the new state and record its checkpoint in the checkpoint history.

        Readers see the new checkpoint when the integration commits, together with
        the entries and tiles it covers. ValueError for a malformed state;
        RuntimeError for one that shrinks the tree, changes its right edge or
        checkpoint without growing it, or does not cover exactly the stored entries."""
        ...

    async def identity(self) -> LogIdentity | None:
        """The log's identity as recorded, or None if none is (a new or an older database)."""
        ...

    async def write_identity(self, identity: LogIdentity) -> None:
        """Record the log's identity, durably with the commit; RuntimeError if one is
        recorded already (it never changes)."""
        ...


class LedgerIntegration(Protocol):
    """The ledger index inside one integration, written in the same transaction as
    the entries it indexes: it is committed, or rolled back, with them."""

    async def key_sets(self, vendors: Sequence[str]) -> dict[str, KeySetRow]:
        """The current (latest) key set of each of these vendors that is admitted,
        this integration's rows included."""
        ...

    async def write_ledger(self, rows: LedgerRows) -> None:
        """Add ledger index rows for entries appended in this integration; durable
        with the commit, and seen by readers exactly when those entries are."""
        ...


class Integration(LogIntegration, LedgerIntegration, Protocol):
    """One database transaction holding the log-wide integration lock."""


class LogStorage(Protocol):
    """The log itself: the durable store, its integrations, and reads of what they committed.

    Reads outside an integration see committed data only and never wait for the
    integration lock.
    """

    async def open(self) -> None:
        """Connect and create the schema if it is missing (idempotent).

        Raises StorageOpenError if the database cannot be reached or opened.
        """
        ...

    async def close(self) -> None:
        """Wait for a running integration, then let go of every connection (idempotent)."""
        ...

    async def check_writable(self) -> None:
        """A round trip to the database that a write would need; returns if one could
        be written now, else raises StorageUnavailable saying what is wrong."""
        ...

    def integration(self) -> AbstractAsyncContextManager[Integration]:
        """A transaction holding the integration lock.

        Commits when the block exits normally, and the block's writes are durable
        once it has exited; rolls back on an exception (a cancellation included).
        Only one integration runs at a time across all processes sharing the
        database; others wait for the lock, then see what it committed.
        """
        ...

    async def latest_checkpoint(self) -> bytes | None:
        """The latest signed checkpoint note, or None before the first integration."""
        ...

    async def checkpoint_at(self, tree_size: int) -> bytes | None:
        """The checkpoint signed for exactly ``tree_size``, if one was (with the
        witnesses' cosignatures once :meth:`record_cosigned` recorded them)."""
        ...

    async def latest_cosigned(self) -> bytes | None:
        """The checkpoint of the largest tree recorded by :meth:`record_cosigned`, or None."""
        ...

    async def record_cosigned(self, tree_size: int, note: bytes) -> None:
        """Record ``note``, the checkpoint of ``tree_size`` with witness cosignatures.

        It replaces that size's note in the checkpoint history, and becomes
        :meth:`latest_cosigned` unless a larger tree is recorded already (so
        processes recording in any order agree). Durable once it returns; it
        waits for a running integration, and must not be called inside one.
        RuntimeError unless an integration recorded a checkpoint of ``tree_size``
        with the same text, whose signatures ``note`` keeps.
        """
        ...

    async def summarize_tiles(self, limit: int) -> int | None:
        """Give up to ``limit`` of the full tiles stored before schema version 5 their
        summary: the next ones of a backfill that the upgrade to 5 began and each
        call takes further (a new database has none to do). Returns how many it
        gave one, or None once the backfill is complete. Its own short transaction
        under the integration lock, like :meth:`record_cosigned`; a tile's bytes
        never change."""
        ...

    async def read_tiles(self, tiles: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Stored bytes of the hash tiles ``(level, index)`` that exist, all as of one commit."""
        ...

    async def read_tiles_summarized(
        self, tiles: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], StoredTile]:
        """:meth:`read_tiles`, each with its stored summary (None if it has none)."""
        ...

    async def read_entries(self, start: int, end: int) -> list[bytes]:
        """Entries with ``start <= index < end`` that exist, in index order."""
        ...

    async def find_leaf(self, leaf_hash: bytes) -> int | None:
        """The index of the entry with this leaf hash, if it is in the log."""
        ...

    async def find_identity(self, identity: bytes) -> int | None:
        """The index of the entry with this identity, if it is in the log."""
        ...


class LedgerIndex(Protocol):
    """The ledger index as committed: a row is seen exactly when its entry is."""

    async def key_sets(self, vendors: Sequence[str]) -> dict[str, KeySetRow]:
        """The current (latest) key set of each of these vendors that is admitted."""
        ...

    async def key_history(self, vendor: str | None, after: int, limit: int) -> list[KeySetRow]:
        """Key sets ordered by log index with ``index > after``, of one vendor or all."""
        ...

    async def search_releases(
        self, query: ReleaseQuery, cursor: int, limit: int, newest_first: bool = False
    ) -> list[tuple[int, bytes]]:
        """Releases matching ``query`` as (index, entry), ordered by index.

        Oldest first from ``index > cursor``, or newest first from ``index < cursor``.
        """
        ...

    async def revocations_of(self, release_indexes: Sequence[int]) -> dict[int, list[int]]:
        """For each of these release indexes that was revoked, the revocations' indexes."""
        ...

    async def image_sizes(self, image_sha256: str) -> set[int]:
        """The image sizes that logged releases name for this image digest."""
        ...


class Storage(LogStorage, LedgerIndex, Protocol):
    """A log's durable storage: the log and its ledger index. Writes are durable once
    the integration that made them has exited."""


def open_storage(url: str) -> Storage:
    """A backend for ``url``: ``sqlite:///path/to/file.db`` or ``postgresql://...``.

    Raises ValueError for any other scheme. The backend is not yet opened.
    """
    if url.startswith(("postgresql://", "postgres://")):
        from firmlog.server.storage.postgres import PostgresStorage

        return PostgresStorage(url)
    if url.startswith("sqlite:///"):
        from firmlog.server.storage.sqlite import SQLiteStorage

        return SQLiteStorage(url.removeprefix("sqlite:///"))
    raise ValueError(
        f"unsupported database URL {url!r}: expected sqlite:///PATH or postgresql://..."
    )
