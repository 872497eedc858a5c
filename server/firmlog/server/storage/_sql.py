"""The SQL both backends run, written once.

Every statement is static text in PostgreSQL's numbered placeholder style
(``$1``, ``$2``, ...); the SQLite backend runs it with ``$n`` rewritten to
``?n``, SQLite's placeholder for the same n-th parameter (:func:`sqlite`). The
statements that really differ (the schema's types, the ``tiles`` table's key,
PostgreSQL's row lock, ``COPY`` and ``= ANY($1::...[])`` lookups of many keys
at once) stay in their backend's file.

The release search is composed from fixed clauses only: no caller text ever
reaches the SQL, filters choose among constant clauses and every value is a
bound parameter.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from firmlog.server.storage import KeySetRow, ReleaseQuery

# -- schema version --------------------------------------------------------------------

INSERT_VERSION = (
    "INSERT INTO schema_version (id, version) VALUES (1, $1) ON CONFLICT (id) DO NOTHING"
)
SELECT_VERSION = "SELECT version FROM schema_version WHERE id = 1"
UPGRADE_VERSION = "UPDATE schema_version SET version = $1 WHERE id = 1 AND version = $2"

# -- tile summaries of a database upgraded to version 5: where the backfill is --------

START_SUMMARY_BACKFILL = (
    "INSERT INTO summary_backfill (id, level, idx) VALUES (1, -1, -1) ON CONFLICT (id) DO NOTHING"
)
SELECT_SUMMARY_BACKFILL = "SELECT level, idx FROM summary_backfill WHERE id = 1"
UPDATE_SUMMARY_BACKFILL = "UPDATE summary_backfill SET level = $1, idx = $2 WHERE id = 1"
END_SUMMARY_BACKFILL = "DELETE FROM summary_backfill WHERE id = 1"

# -- the log: state, checkpoints, entries, tiles, identity ----------------------------

SELECT_STATE = "SELECT tree_size, right_edge, checkpoint FROM log_state WHERE id = 1"
UPDATE_STATE = "UPDATE log_state SET tree_size = $1, right_edge = $2, checkpoint = $3 WHERE id = 1"
INSERT_CHECKPOINT = (
    "INSERT INTO checkpoints (tree_size, note) VALUES ($1, $2) ON CONFLICT (tree_size) DO NOTHING"
)
SELECT_CHECKPOINT = "SELECT checkpoint FROM log_state WHERE id = 1"
SELECT_CHECKPOINT_AT = "SELECT note FROM checkpoints WHERE tree_size = $1"
SELECT_COSIGNED = "SELECT note FROM cosigned_checkpoint WHERE id = 1"
# Only a larger tree replaces the recorded one: processes publishing in any order agree.
UPSERT_COSIGNED = (
    "INSERT INTO cosigned_checkpoint (id, tree_size, note) VALUES (1, $1, $2)"
    " ON CONFLICT (id) DO UPDATE SET tree_size = excluded.tree_size, note = excluded.note"
    " WHERE cosigned_checkpoint.tree_size < excluded.tree_size"
)
UPDATE_CHECKPOINT = "UPDATE checkpoints SET note = $2 WHERE tree_size = $1"
NEXT_INDEX = "SELECT COALESCE(MAX(idx) + 1, 0) FROM entries"
ENTRY_COLUMNS = ("idx", "identity", "leaf_hash", "data")
SELECT_ENTRIES = "SELECT data FROM entries WHERE idx >= $1 AND idx < $2 ORDER BY idx"
FIND_LEAF = "SELECT idx FROM entries WHERE leaf_hash = $1"
FIND_IDENTITY = "SELECT idx FROM entries WHERE identity = $1"
SELECT_IDENTITY = "SELECT origin, vkey FROM log_identity WHERE id = 1"
INSERT_IDENTITY = "INSERT INTO log_identity (id, origin, vkey) VALUES (1, $1, $2)"

# -- the ledger index: key sets, releases and their fixes, revocations ------------------

SELECT_KEY_HISTORY = (
    "SELECT vendor, idx, keys, threshold, serial FROM key_sets WHERE idx > $1 ORDER BY idx LIMIT $2"
)
SELECT_VENDOR_KEY_HISTORY = (
    "SELECT vendor, idx, keys, threshold, serial FROM key_sets"
    " WHERE vendor = $1 AND idx > $2 ORDER BY idx LIMIT $3"
)
INSERT_KEY_SET = (
    "INSERT INTO key_sets (vendor, idx, keys, threshold, serial) VALUES ($1, $2, $3, $4, $5)"
)
INSERT_RELEASE = (
    "INSERT INTO releases (idx, vendor, product, version, security_version, image_sha256,"
    " image_size) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
INSERT_FIX = "INSERT INTO release_fixes (cve, idx) VALUES ($1, $2)"
INSERT_REVOCATION = "INSERT INTO revocations (idx, vendor, release_idx) VALUES ($1, $2, $3)"
SELECT_IMAGE_SIZES = "SELECT DISTINCT image_size FROM releases WHERE image_sha256 = $1"

_FILTERS = (
    ("vendor", "r.vendor = ${}"),
    ("product", "r.product = ${}"),
    ("version", "r.version = ${}"),
    ("image_sha256", "r.image_sha256 = ${}"),
    ("cve", "r.idx IN (SELECT f.idx FROM release_fixes AS f WHERE f.cve = ${})"),
)


def release_search(
    query: ReleaseQuery, cursor: int, limit: int, newest_first: bool = False
) -> tuple[str, list[object]]:
    """SQL and parameters selecting ``(idx, data)`` of matching releases.

    Oldest first: indexes above ``cursor``; newest first: indexes below it.
    """
    params: list[object] = [cursor]
    clauses = [f"r.idx {'<' if newest_first else '>'} $1"]
    for field, clause in _FILTERS:
        value = getattr(query, field)
        if value is not None:
            params.append(value)
            clauses.append(clause.format(len(params)))
    params.append(limit)
    # Constant clauses only; every value is a bound parameter.
    sql = (
        "SELECT r.idx, e.data FROM releases AS r JOIN entries AS e ON e.idx = r.idx"  # noqa: S608
        f" WHERE {' AND '.join(clauses)} ORDER BY r.idx {'DESC' if newest_first else 'ASC'}"
        f" LIMIT ${len(params)}"
    )
    return sql, params


# -- how rows are stored ------------------------------------------------------------------


def join_keys(keys: tuple[str, ...]) -> str:
    """Key sets are stored as newline-separated vkeys (a vkey has no newline)."""
    return "\n".join(keys)


def split_keys(text: str) -> tuple[str, ...]:
    return tuple(text.split("\n"))


def key_set_row(row: Sequence[Any]) -> KeySetRow:
    """A key set from the columns ``vendor, idx, keys, threshold, serial`` of ``key_sets``."""
    return KeySetRow(row[0], int(row[1]), split_keys(row[2]), int(row[3]), int(row[4]))


_NUMBERED = re.compile(r"\$([0-9]+)")


@functools.cache
def sqlite(sql: str) -> str:
    """``sql`` with SQLite's placeholders: ``$n`` becomes ``?n``, the same n-th parameter.

    Only for the statements above and their compositions (a bounded set: the
    cache holds each once). No statement has a ``$`` anywhere else.
    """
    return _NUMBERED.sub(r"?\1", sql)
