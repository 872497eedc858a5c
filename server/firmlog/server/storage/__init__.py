"""The storage contract of the log server, and how to open a backend by URL.

One contract, two backends, each one file: ``sqlite.py`` (the embedded
default, a file in the data directory) and ``postgres.py`` (asyncpg). The
same conformance tests run against both.

What is stored:

- ``entries``: index -> (leaf hash, entry bytes); leaf hashes are unique, so a
  resubmitted entry is found by its hash and keeps its index.
- ``tiles``: (level, index) -> the widest version written so far of that hash
  tile (``width * 32`` bytes). A partial tile is always a prefix of the tile it
  grows into, so the stored bytes serve every width up to their own.
- the log state: tree size, the right edge of the tree
  (:meth:`firmlog.client.merkle.CompactRange.to_bytes`) and the latest signed
  checkpoint note; plus every checkpoint ever published, by tree size.

Writes are durable once :meth:`Storage.integration`'s context exits without
an exception. Integrations are serialized across every process sharing the
database: two writers can never fork the log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LogState:
    """The sequencer's view of the log, read and written inside an integration."""

    tree_size: int
    right_edge: bytes  # CompactRange.to_bytes(): 32 bytes per set bit of tree_size
    checkpoint: bytes  # the latest signed checkpoint note; b"" before the first


EMPTY_STATE = LogState(tree_size=0, right_edge=b"", checkpoint=b"")


class Integration(Protocol):
    """One database transaction holding the log-wide integration lock."""

    async def state(self) -> LogState:
        """The state as committed by the last integration (EMPTY_STATE for a new log)."""
        ...

    async def find_leaves(self, leaf_hashes: Sequence[bytes]) -> dict[bytes, int]:
        """The indexes of those leaf hashes that are already in the log."""
        ...

    async def read_tiles(self, tiles: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Stored bytes of the hash tiles ``(level, index)`` that exist."""
        ...

    async def append_entries(
        self, start_index: int, entries: Sequence[tuple[bytes, bytes]]
    ) -> None:
        """Store ``(leaf_hash, entry)`` pairs at ``start_index``, ``start_index + 1``, ..."""
        ...

    async def write_tiles(self, tiles: Mapping[tuple[int, int], bytes]) -> None:
        """Insert or replace hash tiles (each a wider version of what was stored)."""
        ...

    async def write_state(self, state: LogState) -> None:
        """Set the new state and record its checkpoint in the checkpoint history."""
        ...


class Storage(Protocol):
    """A log's durable storage. Writes are durable once they return."""

    async def open(self) -> None:
        """Connect and create the schema if it is missing (idempotent)."""
        ...

    async def close(self) -> None: ...

    def integration(self) -> AbstractAsyncContextManager[Integration]:
        """A transaction holding the integration lock.

        Commits when the block exits normally, rolls back on an exception.
        Only one integration runs at a time across all processes sharing the
        database; others wait for the lock.
        """
        ...

    async def latest_checkpoint(self) -> bytes | None:
        """The latest signed checkpoint note, or None before the first integration."""
        ...

    async def checkpoint_at(self, tree_size: int) -> bytes | None:
        """The checkpoint published for exactly ``tree_size``, if one was."""
        ...

    async def read_tiles(self, tiles: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Stored bytes of the hash tiles ``(level, index)`` that exist (committed data only)."""
        ...

    async def read_entries(self, start: int, end: int) -> list[bytes]:
        """Entries with ``start <= index < end`` that exist, in index order."""
        ...

    async def find_leaf(self, leaf_hash: bytes) -> int | None:
        """The index of the entry with this leaf hash, if it is in the log."""
        ...


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
