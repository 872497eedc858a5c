"""Checks shared by both storage backends: the last line of defence against a fork.

Malformed input raises ValueError; anything that would fork the log raises
RuntimeError. After any failed write an integration can only roll back.
"""

from __future__ import annotations

from firmlog.client.merkle import HASH_SIZE
from firmlog.client.tiles import TILE_HEIGHT, TILE_WIDTH
from firmlog.server.storage import LogIdentity, LogState, StorageOpenError

SCHEMA_VERSION = 5
"""Version of the schema this code writes; stored in ``schema_version``.

2 -> 3 added the ``cosigned_checkpoint`` table (the latest checkpoint a quorum
of witnesses cosigned); its ``CREATE TABLE IF NOT EXISTS`` is part of the
schema every open runs. 3 -> 4 changed SQLite's ``tiles`` table from
``WITHOUT ROWID`` to a rowid table keyed by one integer (see
``firmlog.server.storage.sqlite``); opening a SQLite database of version 2 or
3 rebuilds that table in the upgrade's transaction. PostgreSQL's schema is
unchanged by 3 -> 4: upgrading is recording the version (:data:`UPGRADABLE`).
4 -> 5 added the ``tiles.summary`` column on both (a full tile's
:func:`firmlog.client.tiles.tile_summary`, written with it; tiles stored before
have none, and readers hash their nodes as before)."""

UPGRADABLE = frozenset({2, 3, 4})
"""Older versions that opening the database upgrades in place, in the transaction
that creates the missing tables."""

MAX_TREE_SIZE = (1 << 63) - 1
"""The largest tree either backend can hold: tree sizes and entry indexes are
signed 64-bit integers in both."""

MAX_TILE_LEVEL = 7
"""The highest hash tile level of a tree of at most MAX_TREE_SIZE leaves: level 8
would need 256**8 = 2**64 of them."""


def tile_in_reach(level: int, index: int) -> bool:
    """Whether hash tile ``level/index`` exists in some tree of at most MAX_TREE_SIZE
    leaves: the smallest such tree has ``(256 * index + 1) * 256**level`` leaves.
    Then ``level <= 7`` and ``index < 2**55``."""
    if not 0 <= level <= MAX_TILE_LEVEL or index < 0:
        return False
    return (index * TILE_WIDTH + 1) << (TILE_HEIGHT * level) <= MAX_TREE_SIZE


def check_schema_version(version: int) -> None:
    """Raise StorageOpenError unless the database has the schema this code writes."""
    if version != SCHEMA_VERSION:
        raise StorageOpenError(
            f"the database has schema version {version}, made by another firmlog-server; "
            f"this one needs {SCHEMA_VERSION} and upgrades only "
            f"{', '.join(map(str, sorted(UPGRADABLE)))}: start a new log (a new data dir or "
            "database), or run the firmlog-server version that made it"
        )


def check_append_start(next_index: int, start_index: int) -> None:
    """Raise RuntimeError unless new entries start right after the stored ones."""
    if start_index != next_index:
        raise RuntimeError(
            f"append_entries must start at the stored tree size: expected index {next_index}, "
            f"got {start_index} (a sequencer bug, or a writer without the integration lock)"
        )


def check_state_transition(old: LogState, new: LogState) -> None:
    """Raise unless ``new`` may replace the stored state ``old``.

    ValueError for a malformed state; RuntimeError for one that would shrink the
    tree or change its right edge at an unchanged size (a fork).
    """
    if new.tree_size < 0:
        raise ValueError(f"tree size must not be negative, got {new.tree_size}")
    edge_size = HASH_SIZE * new.tree_size.bit_count()
    if len(new.right_edge) != edge_size:
        raise ValueError(
            f"right edge of tree size {new.tree_size} must be {edge_size} bytes, "
            f"got {len(new.right_edge)}"
        )
    if new.tree_size < old.tree_size:
        raise RuntimeError(
            f"write_state must not shrink the tree: stored size {old.tree_size}, "
            f"got {new.tree_size}"
        )
    if new.tree_size == old.tree_size and new.right_edge != old.right_edge:
        raise RuntimeError(
            f"write_state changes the right edge of tree size {new.tree_size} without "
            "growing the tree: the log would fork"
        )
    if new.tree_size == old.tree_size and old.checkpoint and new.checkpoint != old.checkpoint:
        raise RuntimeError(
            f"write_state replaces the checkpoint of tree size {new.tree_size} without "
            "growing the tree: one size, one checkpoint"
        )


def check_tile_growth(key: tuple[int, int], stored: bytes | None, data: bytes) -> None:
    """Raise unless ``data`` may replace the stored bytes of hash tile ``key``.

    ValueError for a malformed tile; RuntimeError for one that does not start with
    what is stored (a changed or shrunk tile: the log would fork).
    """
    level, index = key
    if level < 0 or index < 0:
        raise ValueError(f"tile coordinates must not be negative, got level {level}, index {index}")
    if not tile_in_reach(level, index):
        raise ValueError(
            f"tile {level}/{index} is beyond every tree of at most 2**63 - 1 leaves "
            f"(levels 0 to {MAX_TILE_LEVEL}; at level 0, indexes below 2**55)"
        )
    if not data or len(data) % HASH_SIZE or len(data) > HASH_SIZE * TILE_WIDTH:
        raise ValueError(
            f"tile {level}/{index} must be 1 to {TILE_WIDTH} hashes of {HASH_SIZE} bytes, "
            f"got {len(data)} bytes"
        )
    if stored is not None and not data.startswith(stored):
        raise RuntimeError(
            f"tile {level}/{index} may only grow: the stored {len(stored) // HASH_SIZE} hashes "
            f"are not a prefix of the new {len(data) // HASH_SIZE}; the log would fork"
        )


def check_state_covers_entries(next_index: int, new: LogState) -> None:
    """Raise RuntimeError unless the new tree size is exactly the number of stored entries.

    A checkpoint must never name entries that were not stored with it.
    """
    if new.tree_size != next_index:
        raise RuntimeError(
            f"write_state names tree size {new.tree_size} but {next_index} entries are "
            "stored: a checkpoint must cover exactly the stored entries"
        )


def check_cosigned(tree_size: int, recorded: bytes | None, note: bytes) -> None:
    """Raise RuntimeError unless ``note`` is the checkpoint an integration recorded
    for ``tree_size`` (the same text), with its signatures and maybe more."""
    if recorded is None:
        raise RuntimeError(
            f"record_cosigned: no checkpoint of tree size {tree_size} was recorded by an "
            "integration; only a checkpoint the log signed can be cosigned"
        )
    if _note_text(note) != _note_text(recorded) or not _signature_lines(note).issuperset(
        _signature_lines(recorded)
    ):
        raise RuntimeError(
            f"record_cosigned: the note for tree size {tree_size} is not the recorded "
            "checkpoint with added signatures: one size, one checkpoint"
        )


def _note_text(note: bytes) -> bytes:
    return note.split(b"\n\n", 1)[0]


def _signature_lines(note: bytes) -> set[bytes]:
    parts = note.split(b"\n\n", 1)
    return set(parts[1].splitlines()) if len(parts) == 2 else set()


def check_identity_unset(stored: LogIdentity | None, new: LogIdentity) -> None:
    """Raise RuntimeError if the database records a log identity already: it never changes."""
    if stored is not None:
        raise RuntimeError(
            f"write_identity: the database already records the log {stored.vkey}, "
            f"got {new.vkey}; a log's identity is written once"
        )
