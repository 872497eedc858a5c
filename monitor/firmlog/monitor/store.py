"""The monitor's state in SQLite (stdlib ``sqlite3``, WAL), so a restart resumes exactly.

What is kept, per log (one row of ``log_state``):

- ``trusted_note``: the latest checkpoint the monitor verified (log signature
  and consistency with everything before), byte for byte as received, and
  ``cosigned_note``: the same checkpoint with the monitor's cosignature line;
- ``next_index`` and ``edge``: how far the entries were checked, and the
  compact range (RFC 9162 right edge) of the leaves checked so far;
- ``split_view``: set once a split view was proven; the monitor then never
  cosigns that log again.

plus the ledger replay (``vendors``: the key sets the monitor's own replay
derived; ``entries``: the entries it accepted, by log index, and
``entry_ids``: their identities, for duplicates and revocations), ``alerts``
and ``evidence`` (split views, both notes byte for byte and the proof). An
alert is stored with ``notified = 0`` until ``--alert-command`` ran for it
(firmlog.monitor.alerts), so one stored just before a crash is handed to the
command at the next start; a split-view alert names its ``evidence`` row.

The entries are never all in memory: the replay asks
:class:`StoredEntryIndex` about one identity at a time (an indexed read, a
small cache of recent entries), and the content checks ask
:class:`StoredVersions` about one release version at a time, so a monitor
of a log of millions of entries stays small and starts without reading them.

:class:`MonitorStore` is synchronous; :class:`AsyncStore` runs it on one
thread of its own, off the event loop, so that calls are serialized. Every
change is one transaction, and each checks the state it expects
(compare-and-swap): two writers can never roll the state back.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from firmlog.client.entries import Entry, entry_identity, parse_entry
from firmlog.client.evidence import SplitViewEvidence
from firmlog.client.ledger import VendorKeys
from firmlog.client.merkle import HASH_SIZE, CompactRange
from firmlog.client.note import split_note
from firmlog.monitor.config import ConfigError

__all__ = [
    "MAX_ENTRY_SIZE",
    "AcceptedRow",
    "Alert",
    "AsyncStore",
    "ContentRows",
    "MonitorStore",
    "SecurityRow",
    "Snapshot",
    "StoredEntryIndex",
    "StoredVersions",
    "VersionLookup",
    "VersionRow",
]

P = ParamSpec("P")
T = TypeVar("T")

VersionRow = tuple[str, str, str, int, bytes]  # vendor, product, version -> first index, identity
SecurityRow = tuple[str, str, str, int, int]  # vendor, product, channel -> highest sv, its index
ContentRows = tuple[Sequence[VersionRow], Sequence[SecurityRow]]
AcceptedRow = tuple[int, bytes, bytes]  # log index, identity, the entry's bytes
_QUERY_PARAMS = 900  # per statement: below SQLite's smallest limit (999)

MAX_ENTRY_SIZE = 0xFFFF  # what an entry bundle can hold; the log enforces its own limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    trusted_note BLOB,
    trusted_size INTEGER,
    cosigned_note BLOB,
    next_index INTEGER NOT NULL DEFAULT 0,
    edge BLOB NOT NULL DEFAULT x'',
    split_view INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO log_state (id) VALUES (1);
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS entry_ids (
    identity BLOB PRIMARY KEY,
    idx INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vendors (
    vendor TEXT PRIMARY KEY,
    keys TEXT NOT NULL,
    threshold INTEGER NOT NULL,
    since_index INTEGER NOT NULL,
    serial INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    idx INTEGER,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    created INTEGER NOT NULL,
    notified INTEGER NOT NULL DEFAULT 0,
    evidence INTEGER
);
CREATE TABLE IF NOT EXISTS release_versions (
    vendor TEXT NOT NULL,
    product TEXT NOT NULL,
    version TEXT NOT NULL,
    idx INTEGER NOT NULL,
    identity BLOB NOT NULL,
    PRIMARY KEY (vendor, product, version)
);
CREATE TABLE IF NOT EXISTS security_versions (
    vendor TEXT NOT NULL,
    product TEXT NOT NULL,
    channel TEXT NOT NULL,
    security_version INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    PRIMARY KEY (vendor, product, channel)
);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    old_note BLOB NOT NULL,
    new_note BLOB NOT NULL,
    proof BLOB NOT NULL,
    smaller_root BLOB,
    detail TEXT NOT NULL,
    created INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Alert:
    """A content alert: ``index`` is the log index of the entry it is about (if any)."""

    index: int | None
    kind: str
    detail: str
    created: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "kind": self.kind, "detail": self.detail, "time": self.created}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state as stored, loaded at start."""

    trusted_note: bytes | None
    cosigned_note: bytes | None
    next_index: int
    edge: CompactRange
    split_view: bool
    vendors: tuple[VendorKeys, ...]


def _join(hashes: Sequence[bytes]) -> bytes:
    return b"".join(hashes)


def _split(data: bytes) -> tuple[bytes, ...]:
    return tuple(data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE))


class MonitorStore:
    """The SQLite database of one monitor watching one log. Not thread-safe: one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the monitor store is not open")
        return self._db

    def open(self, meta: dict[str, str]) -> None:
        """Open (creating) the database; ``meta`` (the log's origin and keys) must match
        what it was created with (ConfigError otherwise)."""
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)  # idempotent
            _add_alert_columns(db)
            db.execute("BEGIN IMMEDIATE")
            stored = dict(db.execute("SELECT key, value FROM meta").fetchall())
            for key, value in meta.items():
                if key not in stored:
                    db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
                elif stored[key] != value:
                    raise ConfigError(
                        f"{self.path} watches a log with {key} {stored[key]!r}, not {value!r}: "
                        "use another --data-dir for another log"
                    )
            _index_identities(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()
            raise
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        for reader in self._readers:
            reader.close()
        self._readers.clear()

    def _reader(self) -> sqlite3.Connection:
        """A connection of its own for a lookup object that is used off the store's
        thread (WAL: it reads the last commit while the store writes)."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA query_only=ON")
        self._readers.append(db)
        return db

    def entry_index(self, cache_size: int = 1024) -> StoredEntryIndex:
        """The replay's entries by identity, read from this database (open it first)."""
        self.db  # noqa: B018 -- raises if the store is not open
        return StoredEntryIndex(self._reader(), cache_size)

    def stored_versions(self, cache_size: int = 16384) -> StoredVersions:
        """The content checks' first release of each version, read from this database."""
        self.db  # noqa: B018 -- raises if the store is not open
        return StoredVersions(self._reader(), cache_size)

    def load(self) -> Snapshot:
        db = self.db
        row = db.execute(
            "SELECT trusted_note, cosigned_note, next_index, edge, split_view FROM log_state"
        ).fetchone()
        trusted, cosigned, next_index, edge, split_view = row
        vendors = tuple(
            VendorKeys(vendor, tuple(json.loads(keys)), threshold, since, serial)
            for vendor, keys, threshold, since, serial in db.execute(
                "SELECT vendor, keys, threshold, since_index, serial FROM vendors"
            )
        )
        return Snapshot(
            trusted_note=bytes(trusted) if trusted is not None else None,
            cosigned_note=bytes(cosigned) if cosigned is not None else None,
            next_index=next_index,
            edge=CompactRange.from_bytes(next_index, bytes(edge)),
            split_view=bool(split_view),
            vendors=vendors,
        )

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            result = body(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    def save_checkpoint(
        self, expected_size: int | None, trusted_note: bytes, tree_size: int, cosigned_note: bytes
    ) -> bool:
        """Replace the trusted (and cosigned) checkpoint if the stored one has
        ``expected_size`` (None: no checkpoint yet) and the log is not split.
        False, changing nothing, otherwise."""

        def body(db: sqlite3.Connection) -> bool:
            size, split = db.execute("SELECT trusted_size, split_view FROM log_state").fetchone()
            if size != expected_size or split:
                return False
            db.execute(
                "UPDATE log_state SET trusted_note = ?, trusted_size = ?, cosigned_note = ?",
                (trusted_note, tree_size, cosigned_note),
            )
            return True

        return self._transaction(body)

    def save_entries(
        self,
        from_index: int,
        edge: CompactRange,
        accepted: Sequence[AcceptedRow],
        vendors: Sequence[VendorKeys],
        alerts: Sequence[Alert],
        content: ContentRows = ((), ()),
    ) -> bool:
        """Record that the entries from ``from_index`` up to ``edge.tree_size`` were
        checked: the ones the replay accepted (index, identity, bytes), the key sets
        they set, the alerts,
        and what the content checks remember (firmlog.monitor.alerts).
        False, changing nothing, if ``next_index`` is not ``from_index``."""

        def body(db: sqlite3.Connection) -> bool:
            (next_index,) = db.execute("SELECT next_index FROM log_state").fetchone()
            if next_index != from_index:
                return False
            db.executemany(
                "INSERT INTO entries (idx, raw) VALUES (?, ?)", [(i, raw) for i, _, raw in accepted]
            )
            db.executemany(
                "INSERT INTO entry_ids (identity, idx) VALUES (?, ?)",
                [(ident, i) for i, ident, _ in accepted],
            )
            db.executemany(
                "INSERT OR REPLACE INTO vendors (vendor, keys, threshold, since_index, serial) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (v.vendor, json.dumps(list(v.keys)), v.threshold, v.since_index, v.serial)
                    for v in vendors
                ],
            )
            db.executemany(
                "INSERT INTO alerts (idx, kind, detail, created, notified) VALUES (?, ?, ?, ?, 0)",
                [(a.index, a.kind, a.detail, a.created) for a in alerts],
            )
            versions, security = content
            db.executemany(
                "INSERT OR REPLACE INTO release_versions (vendor, product, version, idx, "
                "identity) VALUES (?, ?, ?, ?, ?)",
                versions,
            )
            db.executemany(
                "INSERT OR REPLACE INTO security_versions (vendor, product, channel, "
                "security_version, idx) VALUES (?, ?, ?, ?, ?)",
                security,
            )
            db.execute(
                "UPDATE log_state SET next_index = ?, edge = ?", (edge.tree_size, edge.to_bytes())
            )
            return True

        return self._transaction(body)

    def save_split_view(self, evidence: SplitViewEvidence, alert: Alert) -> int:
        """Keep the evidence and its ``alert``, and stop cosigning the log, in one
        transaction; returns the evidence's number (its place in ``evidence()``, from 1)."""

        def body(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO evidence (kind, old_note, new_note, proof, smaller_root, detail, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    evidence.kind,
                    evidence.old_note,
                    evidence.new_note,
                    _join(evidence.proof),
                    evidence.smaller_root,
                    evidence.detail,
                    int(time.time()),
                ),
            )
            number = cur.lastrowid
            assert number is not None
            db.execute(
                "INSERT INTO alerts (idx, kind, detail, created, notified, evidence) "
                "VALUES (?, ?, ?, ?, 0, ?)",
                (
                    alert.index,
                    alert.kind,
                    f"{alert.detail} (evidence #{number})",
                    alert.created,
                    number,
                ),
            )
            db.execute("UPDATE log_state SET split_view = 1")
            return number

        return self._transaction(body)

    def alerts(self) -> list[Alert]:
        """Every alert, newest first."""
        return [
            Alert(idx, kind, detail, created)
            for idx, kind, detail, created in self.db.execute(
                "SELECT idx, kind, detail, created FROM alerts ORDER BY id DESC"
            )
        ]

    def content_rows(self, versions: bool = True) -> ContentRows:
        """What the content checks remember (firmlog.monitor.alerts); without the
        release versions (one row per release: read them with
        :meth:`stored_versions` instead) if ``versions`` is False."""
        db = self.db
        version_rows = (
            [
                (v, p, ver, idx, bytes(ident))
                for v, p, ver, idx, ident in db.execute(
                    "SELECT vendor, product, version, idx, identity FROM release_versions"
                )
            ]
            if versions
            else []
        )
        security = [
            (v, p, ch, sv, idx)
            for v, p, ch, sv, idx in db.execute(
                "SELECT vendor, product, channel, security_version, idx FROM security_versions"
            )
        ]
        return version_rows, security

    def evidence(self) -> list[SplitViewEvidence]:
        return [
            _evidence(*row)
            for row in self.db.execute(
                "SELECT kind, old_note, new_note, proof, smaller_root, detail FROM evidence "
                "ORDER BY id"
            )
        ]

    def unnotified(self, limit: int = 100) -> list[tuple[int, Alert, SplitViewEvidence | None]]:
        """The oldest alerts the alert command was not run for yet: (row id, alert, its
        evidence for a split view)."""
        out = []
        for alert_id, idx, kind, detail, created, *ev in self.db.execute(
            "SELECT a.id, a.idx, a.kind, a.detail, a.created, e.kind, e.old_note, e.new_note, "
            "e.proof, e.smaller_root, e.detail FROM alerts a LEFT JOIN evidence e "
            "ON e.id = a.evidence WHERE a.notified = 0 ORDER BY a.id LIMIT ?",
            (limit,),
        ):
            evidence = _evidence(*ev) if ev[0] is not None else None
            out.append((alert_id, Alert(idx, kind, detail, created), evidence))
        return out

    def mark_notified(self, alert_id: int) -> None:
        """The alert command ran for this alert."""
        self._transaction(
            lambda db: db.execute("UPDATE alerts SET notified = 1 WHERE id = ?", (alert_id,))
        )


def _evidence(
    kind: str, old: bytes, new: bytes, proof: bytes, root: bytes | None, detail: str
) -> SplitViewEvidence:
    return SplitViewEvidence(
        kind,
        bytes(old),
        bytes(new),
        _split(bytes(proof)),
        None if root is None else bytes(root),
        detail,
    )


def _add_alert_columns(db: sqlite3.Connection) -> None:
    """Give the alerts table of an older store its ``notified`` and ``evidence`` columns
    (its alerts were handed to the command already)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(alerts)")}
    if "notified" not in columns:
        db.execute("ALTER TABLE alerts ADD COLUMN notified INTEGER NOT NULL DEFAULT 1")
    if "evidence" not in columns:
        db.execute("ALTER TABLE alerts ADD COLUMN evidence INTEGER")


def _index_identities(db: sqlite3.Connection) -> None:
    """Fill ``entry_ids`` for a database written before it existed (in the open
    transaction)."""
    if db.execute("SELECT 1 FROM entry_ids LIMIT 1").fetchone() is not None:
        return
    rows = db.execute("SELECT idx, raw FROM entries").fetchall()
    db.executemany(
        "INSERT INTO entry_ids (identity, idx) VALUES (?, ?)",
        [(entry_identity(split_note(bytes(raw), MAX_ENTRY_SIZE)[0]), idx) for idx, raw in rows],
    )


class StoredEntryIndex:
    """The entries the replay accepted, by identity, from the store
    (a :class:`firmlog.client.ledger.EntryIndex`).

    ``get`` answers from the entries recorded since the last :meth:`saved`
    (the chunk being replayed, not stored yet), a cache of the last
    ``cache_size`` entries recorded or found, and the database. Only the replay
    uses it, one call at a time, from whichever thread runs the replay.
    :meth:`saved` says the recorded entries are committed;
    :meth:`discard` forgets them (their chunk was not stored).
    """

    def __init__(self, db: sqlite3.Connection, cache_size: int) -> None:
        self._db = db
        self._pending: dict[bytes, tuple[int, Entry]] = {}
        self._cache: OrderedDict[bytes, tuple[int, Entry]] = OrderedDict()
        self._cache_size = cache_size
        self._absent: set[bytes] = set()  # not in the database (prefetch)
        self.reads = 0  # entries read back from the database

    def prefetch(self, identities: Iterable[bytes]) -> None:
        """Look ``identities`` up in a few queries, so that :meth:`get` answers those
        not in the database without one each (a chunk's entries: almost all new)."""
        wanted = [i for i in set(identities) if i not in self._pending and i not in self._cache]
        present: set[bytes] = set()
        for k in range(0, len(wanted), _QUERY_PARAMS):
            part = wanted[k : k + _QUERY_PARAMS]
            marks = ",".join("?" * len(part))
            present.update(
                bytes(row[0])
                for row in self._db.execute(
                    f"SELECT identity FROM entry_ids WHERE identity IN ({marks})",  # noqa: S608 -- placeholders only
                    part,
                )
            )
        self._absent = set(wanted) - present

    def get(self, identity: bytes, /) -> tuple[int, Entry] | None:
        found = self._pending.get(identity)
        if found is not None:
            return found
        found = self._cache.get(identity)
        if found is not None:
            self._cache.move_to_end(identity)
            return found
        if identity in self._absent:
            return None
        row = self._db.execute(
            "SELECT e.idx, e.raw FROM entry_ids AS i JOIN entries AS e ON e.idx = i.idx "
            "WHERE i.identity = ?",
            (identity,),
        ).fetchone()
        if row is None:
            return None
        self.reads += 1
        found = (row[0], parse_entry(bytes(row[1]), max_size=MAX_ENTRY_SIZE))
        self._remember([(identity, found)])
        return found

    def __setitem__(self, identity: bytes, value: tuple[int, Entry], /) -> None:
        self._pending[identity] = value

    def saved(self) -> None:
        self._remember(self._pending.items())
        self._pending = {}
        self._absent = set()

    def discard(self) -> None:
        """Forget what is not known to be stored: the pending entries, and the cache
        (after a failed save, what is stored is read again)."""
        self._pending = {}
        self._absent = set()
        self._cache.clear()

    def _remember(self, items: Iterable[tuple[bytes, tuple[int, Entry]]]) -> None:
        cache = self._cache
        for identity, value in items:
            cache[identity] = value
            cache.move_to_end(identity)
        while len(cache) > self._cache_size:
            cache.popitem(last=False)


VersionKey = tuple[str, str, str]  # vendor, product, version


class VersionLookup(Protocol):
    """The first release (index, identity) of each version: a dict, or :class:`StoredVersions`."""

    def get(self, key: VersionKey, /) -> tuple[int, bytes] | None: ...

    def update(self, committed: Mapping[VersionKey, tuple[int, bytes]], /) -> None: ...


class StoredVersions:
    """The first release of each (vendor, product, version), from the store's
    ``release_versions``: what :class:`firmlog.monitor.alerts.ContentChecks`
    looks up, one key at a time, with a cache of the last ``cache_size``.
    ``update`` is told what was just committed."""

    def __init__(self, db: sqlite3.Connection, cache_size: int) -> None:
        self._db = db
        self._cache: OrderedDict[VersionKey, tuple[int, bytes]] = OrderedDict()
        self._cache_size = cache_size
        self._absent: set[VersionKey] = set()

    def prefetch(self, keys: Iterable[VersionKey]) -> None:
        """Look ``keys`` up in a few queries (a chunk's releases), for :meth:`get`."""
        wanted = [k for k in set(keys) if k not in self._cache]
        found: dict[VersionKey, tuple[int, bytes]] = {}
        step = _QUERY_PARAMS // 3
        for k in range(0, len(wanted), step):
            part = wanted[k : k + step]
            marks = ",".join(["(?,?,?)"] * len(part))
            # CROSS JOIN keeps the wanted keys outside, so each is one search of the
            # primary key (a row-value IN would scan the whole table).
            query = (
                "SELECT r.vendor, r.product, r.version, r.idx, r.identity "  # noqa: S608 -- placeholders only
                f"FROM (VALUES {marks}) AS w CROSS JOIN release_versions AS r "
                "ON r.vendor = w.column1 AND r.product = w.column2 AND r.version = w.column3"
            )
            for v, p, ver, idx, ident in self._db.execute(
                query,
                [x for key in part for x in key],
            ):
                found[(v, p, ver)] = (idx, bytes(ident))
        self._absent = set(wanted) - found.keys()
        self.update(found)

    def get(self, key: VersionKey, /) -> tuple[int, bytes] | None:
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        if key in self._absent:
            return None
        row = self._db.execute(
            "SELECT idx, identity FROM release_versions "
            "WHERE vendor = ? AND product = ? AND version = ?",
            key,
        ).fetchone()
        if row is None:
            return None
        found = (row[0], bytes(row[1]))
        self.update({key: found})
        return found

    def clear(self) -> None:
        self._cache.clear()

    def update(self, committed: Mapping[VersionKey, tuple[int, bytes]], /) -> None:
        cache = self._cache
        for key, value in committed.items():
            cache[key] = value
            cache.move_to_end(key)
        while len(cache) > self._cache_size:
            cache.popitem(last=False)


class AsyncStore:
    """A :class:`MonitorStore` driven from the event loop, on one thread of its own."""

    def __init__(self, store: MonitorStore) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-db")

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def close(self) -> None:
        await self.run(self.store.close)
        self._executor.shutdown(wait=True)
