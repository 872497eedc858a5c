"""SQLite's ``tiles`` table since schema version 4 (firmlog.server.storage.sqlite), and
the in-place upgrade of a version 3 or 2 database, whose ``tiles`` was ``WITHOUT ROWID``,
and of a version 4 one, whose tiles had no summaries.

The old databases are made here with the old DDL: a log grown through the
storage (real tiles of a real tree), then its tiles table rebuilt as schema 3
had it. Interruptions are real: an upgrade interrupted inside its copy
statement (SQLite's progress handler, the fault injected in the writer's
connection), and a process SIGKILLed in the middle of the copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

from firmlog.client.checkpoint import Checkpoint
from firmlog.client.integrate import edge_tiles, integrate
from firmlog.client.merkle import EMPTY_ROOT, inclusion_proof, leaf_hash, verify_inclusion
from firmlog.client.tiles import (
    Tile,
    TileHashReader,
    tile_summary,
    tiles_for_size,
    verify_tree_root,
)
from firmlog.server.reader import summarize_stored_tiles
from firmlog.server.storage import EntryRow, LogState, Storage, StorageOpenError, open_storage
from firmlog.server.storage import sqlite as sqlite_storage
from firmlog.server.storage._checks import SCHEMA_VERSION

ORIGIN = "example.com/tiles-table"

# The tiles table as firmlog-server made it up to schema version 3.
OLD_TILES_DDL = (
    "CREATE TABLE tiles ("
    " level INTEGER NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL,"
    " PRIMARY KEY (level, idx)) WITHOUT ROWID"
)
NEW_TILES_DDL = (
    "CREATE TABLE tiles ( id INTEGER PRIMARY KEY CHECK (id >= 0), data BLOB NOT NULL, summary BLOB)"
)
V4_TILES_DDL = (  # as version 4 made it; the upgrade to 5 adds the summary column
    "CREATE TABLE tiles ( id INTEGER PRIMARY KEY CHECK (id >= 0), data BLOB NOT NULL)"
)


def entry(i: int) -> bytes:
    return f"entry {i}".encode()


def note(size: int, root: bytes) -> bytes:
    """The checkpoint text (unsigned: storage keeps notes as they are)."""
    return (Checkpoint(ORIGIN, size, root).to_text() + "\n\u2014 test sig\n").encode()


async def grow(storage: Storage, end: int, batch: int = 4096) -> bytes:
    """Append entries up to ``end`` as the sequencer does (entries, changed tiles,
    state, one integration per batch); returns the root hash at ``end``."""
    root = EMPTY_ROOT
    while True:
        async with storage.integration() as tx:
            state = await tx.state()
            lo = state.tree_size
            if lo >= end:
                return root
            hi = min(end, lo + batch)
            rows = [
                EntryRow(leaf_hash(entry(i)), leaf_hash(entry(i)), entry(i)) for i in range(lo, hi)
            ]
            edge = edge_tiles(lo, hi)
            stored = await tx.read_tiles([(t.level, t.index) for t in edge])
            tree = integrate(lo, state.right_edge, stored, [r.leaf_hash for r in rows])
            await tx.append_entries(lo, rows)
            await tx.write_tiles(tree.tiles)
            await tx.write_state(LogState(hi, tree.right_edge, note(hi, tree.root_hash)))
            root = tree.root_hash


async def verify_log(storage: Storage, size: int, root: bytes) -> None:
    """Every tile of the tree read back, the root they give, and inclusion proofs of
    a spread of entries against it."""
    tiles = tiles_for_size(size)
    stored = await storage.read_tiles([(t.level, t.index) for t in tiles])
    assert sorted(stored) == sorted((t.level, t.index) for t in tiles)

    def fetch(wanted: list[Tile]) -> list[bytes]:
        return [stored[(t.level, t.index)][: t.width * 32] for t in wanted]

    verify_tree_root(Checkpoint(ORIGIN, size, root), TileHashReader(size, fetch))
    reader = TileHashReader(size, fetch)
    for index in sorted({0, 1, 255, 256, size // 2, size - 257, size - 1}):
        proof = inclusion_proof(index, size, reader)
        verify_inclusion(leaf_hash(entry(index)), index, size, proof, root)


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def as_schema(path: Path, version: int) -> None:
    """Turn a current database into one as firmlog-server made it at ``version``
    (4: no tile summaries; 3: the WITHOUT ROWID tiles table; 2: also no
    cosigned_checkpoint table)."""
    with closing(raw(path)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute("SELECT id, data FROM tiles ORDER BY id").fetchall()
        conn.execute("DROP TABLE tiles")
        if version == 4:
            conn.execute(V4_TILES_DDL)
            conn.executemany("INSERT INTO tiles (id, data) VALUES (?, ?)", rows)
            conn.execute("UPDATE schema_version SET version = 4")
            conn.execute("COMMIT")
            return
        conn.execute(OLD_TILES_DDL)
        conn.executemany(
            "INSERT INTO tiles (level, idx, data) VALUES (?, ?, ?)",
            [(i >> 56, i & ((1 << 56) - 1), d) for i, d in rows],
        )
        if version == 2:
            conn.execute("DROP TABLE cosigned_checkpoint")
        conn.execute("UPDATE schema_version SET version = ?", (version,))
        conn.execute("COMMIT")


def old_tiles(path: Path) -> dict[tuple[int, int], bytes]:
    """The tiles of a version 2 or 3 database, read with SQL of that schema."""
    with closing(raw(path)) as conn:
        return {
            (level, idx): bytes(data)
            for level, idx, data in conn.execute("SELECT level, idx, data FROM tiles")
        }


def schema_of(path: Path) -> tuple[int, str, list[str]]:
    """The recorded version, the tiles table's DDL, and every table's name."""
    with closing(raw(path)) as conn:
        (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
        (ddl,) = conn.execute("SELECT sql FROM sqlite_schema WHERE name = 'tiles'").fetchone()
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]
        (check,) = conn.execute("PRAGMA integrity_check").fetchone()
        assert check == "ok"
    return version, ddl, names


SIZE = 256 * 256 + 300  # full and partial tiles on levels 0 and 1, a partial one on level 2


@pytest.fixture(scope="module")
def v4_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A log of SIZE entries at the current version (made once; tests copy it) and its
    root hash."""
    path = tmp_path_factory.mktemp("v4") / "firmlog.db"

    async def make() -> bytes:
        storage = open_storage(f"sqlite:///{path}")
        await storage.open()
        try:
            return await grow(storage, SIZE)
        finally:
            await storage.close()

    root = asyncio.run(make())
    return path, root


@pytest.fixture
def old_log(
    v4_log: tuple[Path, bytes], tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[Path, bytes]:
    """A copy of v4_log as schema version ``request.param`` (3 by default) made it."""
    src, root = v4_log
    path = tmp_path / "firmlog.db"
    with closing(raw(src)) as conn, closing(raw(path)) as dst:
        conn.backup(dst)
    as_schema(path, getattr(request, "param", 3))
    return path, root


# -- the table since version 4 ----------------------------------------------------


def test_a_new_database_has_the_rowid_tiles_table(v4_log: tuple[Path, bytes]) -> None:
    version, ddl, names = schema_of(v4_log[0])
    assert (version, ddl) == (SCHEMA_VERSION, NEW_TILES_DDL) == (5, NEW_TILES_DDL)
    assert "tiles_v3" not in names
    with closing(raw(v4_log[0])) as conn:
        # One B-tree: the key is the rowid, no index beside it.
        assert conn.execute(
            "SELECT count(*) FROM sqlite_schema WHERE tbl_name = 'tiles'"
        ).fetchone() == (1,)
        (plan,) = [
            r[3] for r in conn.execute("EXPLAIN QUERY PLAN SELECT data FROM tiles WHERE id = 5")
        ]
        assert "INTEGER PRIMARY KEY" in plan
        ids = [r[0] for r in conn.execute("SELECT id FROM tiles ORDER BY id")]
    assert ids[:3] == [0, 1, 2]
    assert ids[-2:] == [1 << 56 | 1, 2 << 56]  # level 1's partial tile, then level 2's


@pytest.mark.parametrize(
    ("key", "stored"),
    [
        ((0, (1 << 55) - 1), True),  # the last level-0 tile of a tree of 2**63 - 1 leaves
        ((7, 0), True),  # the highest tile level such a tree has
        ((0, 1 << 55), False),
        ((7, 1), False),
        ((8, 0), False),
        ((1 << 8, 0), False),  # would share an id with (0, 0) if shifted into 64 bits
    ],
)
async def test_tile_keys_cover_every_tile_a_log_can_hold_and_no_other(
    database_url: str, key: tuple[int, int], stored: bool
) -> None:
    """On both backends (the bound is one check); on SQLite it makes the key sound."""
    storage = open_storage(database_url)
    await storage.open()
    try:
        data = hashlib.sha256(b"edge").digest() * 3
        if stored:
            async with storage.integration() as tx:
                await tx.write_tiles({key: data, (0, 0): data[:32]})
            assert await storage.read_tiles([key, (0, 0)]) == {key: data, (0, 0): data[:32]}
        else:
            with pytest.raises(ValueError, match=f"tile {key[0]}/{key[1]} is beyond every tree"):
                async with storage.integration() as tx:
                    await tx.write_tiles({key: data})
            async with storage.integration() as tx:
                await tx.write_tiles({(0, 0): data[:32]})
            assert await storage.read_tiles([key, (0, 0)]) == {(0, 0): data[:32]}
    finally:
        await storage.close()


# -- the upgrade --------------------------------------------------------------------


@pytest.mark.parametrize("old_log", [3, 2], indirect=True, ids=["from-3", "from-2"])
async def test_an_old_database_is_upgraded_with_every_tile_byte_identical(
    old_log: tuple[Path, bytes],
) -> None:
    path, root = old_log
    before = old_tiles(path)
    assert len(before) == 258 + 2 + 1  # full and partial on level 0 and 1, partial on 2
    assert schema_of(path)[1] == OLD_TILES_DDL

    storage = open_storage(f"sqlite:///{path}")
    await storage.open()
    try:
        assert await storage.read_tiles(list(before)) == before
        await verify_log(storage, SIZE, root)
        root = await grow(storage, SIZE + 70_000)  # it grows on: the right edge upgraded too
        await verify_log(storage, SIZE + 70_000, root)
        assert await storage.latest_cosigned() is None
    finally:
        await storage.close()
    version, ddl, names = schema_of(path)
    assert (version, ddl) == (SCHEMA_VERSION, NEW_TILES_DDL)
    assert "tiles_v3" not in names
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0


@pytest.mark.parametrize("old_log", [4], indirect=True, ids=["from-4"])
async def test_a_version_4_database_keeps_its_tiles_and_summarizes_those_written_after(
    old_log: tuple[Path, bytes],
) -> None:
    path, root = old_log
    assert schema_of(path)[:2] == (4, V4_TILES_DDL)
    with closing(raw(path)) as conn:
        before = {i: bytes(d) for i, d in conn.execute("SELECT id, data FROM tiles")}
    storage = open_storage(f"sqlite:///{path}")
    await storage.open()
    try:
        assert schema_of(path)[:2] == (SCHEMA_VERSION, NEW_TILES_DDL)
        keys = [(i >> 56, i & ((1 << 56) - 1)) for i in before]
        stored = await storage.read_tiles_summarized(keys)
        assert {k: d for k, (d, _) in stored.items()} == {
            k: before[i] for k, i in zip(keys, before, strict=True)
        }
        assert {summary for _, summary in stored.values()} == {None}  # written before 5
        await verify_log(storage, SIZE, root)
        root = await grow(storage, SIZE + 70_000)
        await verify_log(storage, SIZE + 70_000, root)
        # The tiles that became full since: each with its summary.
        full = [(0, i) for i in range(SIZE // 256, (SIZE + 70_000) // 256)] + [(1, 1)]
        for key, (data, summary) in (await storage.read_tiles_summarized(full)).items():
            assert summary == tile_summary(data), key
        assert len(await storage.read_tiles_summarized(full)) == len(full)
        # What the server does while it serves: every tile stored before gets one.
        await asyncio.wait_for(summarize_stored_tiles(storage, batch=100, pause=0), 60)
        assert await storage.summarize_tiles(1) is None
        after = await storage.read_tiles_summarized(keys)
        was_full = {k: d for k, (d, _) in stored.items() if len(d) == 256 * 32}
        assert {k: after[k][0] for k in was_full} == was_full  # the bytes as they were
        for key, (data, summary) in after.items():
            assert summary == (tile_summary(data) if len(data) == 256 * 32 else None), key
        await verify_log(storage, SIZE + 70_000, root)
    finally:
        await storage.close()


@pytest.mark.parametrize("key", [(1, 1 << 47), (1, 1 << 56), (8, 0), (-1, 3)])
async def test_a_tile_the_new_key_cannot_hold_stops_the_upgrade(
    old_log: tuple[Path, bytes], key: tuple[int, int]
) -> None:
    path, _ = old_log
    with closing(raw(path)) as conn:
        conn.execute("INSERT INTO tiles (level, idx, data) VALUES (?, ?, x'00')", key)
    before = old_tiles(path)
    storage = open_storage(f"sqlite:///{path}")
    with pytest.raises(StorageOpenError, match=f"holds tile {key[0]}/{key[1]}, beyond every"):
        await storage.open()
    assert schema_of(path)[:2] == (3, OLD_TILES_DDL)
    assert old_tiles(path) == before


def _copying(sql: str | None) -> bool:
    return sql is not None and sql.startswith("INSERT INTO tiles (id, data) SELECT")


async def test_an_upgrade_interrupted_mid_copy_leaves_the_old_database(
    old_log: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, root = old_log
    before = old_tiles(path)
    steps: list[int] = []
    connect = sqlite_storage._connect

    def interrupting(db: str, **kwargs: bool) -> sqlite3.Connection:
        conn = connect(db, **kwargs)
        copying = [False]

        def trace(sql: str) -> None:
            copying[0] = _copying(sql)

        def progress() -> int:
            if not copying[0]:
                return 0
            steps.append(1)
            return 1 if len(steps) >= 200 else 0  # interrupt the copy well inside it

        conn.set_trace_callback(trace)
        conn.set_progress_handler(progress, 10)
        return conn

    monkeypatch.setattr(sqlite_storage, "_connect", interrupting)
    storage = open_storage(f"sqlite:///{path}")
    with pytest.raises(StorageOpenError, match="interrupted"):
        await storage.open()
    assert len(steps) == 200
    assert schema_of(path)[:2] == (3, OLD_TILES_DDL)
    assert old_tiles(path) == before

    monkeypatch.undo()  # a later open, without the fault, upgrades it
    storage = open_storage(f"sqlite:///{path}")
    await storage.open()
    try:
        assert await storage.read_tiles(list(before)) == before
        await verify_log(storage, SIZE, root)
    finally:
        await storage.close()
    assert schema_of(path)[:2] == (SCHEMA_VERSION, NEW_TILES_DDL)


# The child: the storage's writer connection with a tiny page cache (the copy
# spills uncommitted pages into the WAL) says when it is inside the copy, then
# waits there, holding the transaction, to be killed.
_UPGRADER = """
import asyncio, sys, time
from firmlog.server.storage import open_storage
from firmlog.server.storage import sqlite as s

connect = s._connect
def stalling(db, **kwargs):
    conn = connect(db, **kwargs)
    conn.execute("PRAGMA cache_size = 8")
    copying = [False, 0]
    def trace(sql):
        copying[0] = sql is not None and sql.startswith("INSERT INTO tiles (id, data) SELECT")
    def progress():
        if copying[0]:
            copying[1] += 1
            if copying[1] == 200:
                print("copying", flush=True)
                time.sleep(3600)
        return 0
    conn.set_trace_callback(trace)
    conn.set_progress_handler(progress, 10)
    return conn
s._connect = stalling
asyncio.run(open_storage("sqlite:///" + sys.argv[1]).open())
print("upgraded", flush=True)
"""


async def test_an_upgrade_killed_mid_copy_leaves_the_old_database(
    old_log: tuple[Path, bytes],
) -> None:
    path, root = old_log
    before = old_tiles(path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _UPGRADER, str(path), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            line = await proc.stdout.readline()
    finally:
        proc.kill()  # SIGKILL: no rollback, no cleanup in the child
        await proc.wait()
    assert line == b"copying\n"
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 100 * 4096  # uncommitted pages of the copy were written
    assert schema_of(path)[:2] == (3, OLD_TILES_DDL)
    assert old_tiles(path) == before

    storage = open_storage(f"sqlite:///{path}")
    await storage.open()
    try:
        assert await storage.read_tiles(list(before)) == before
        await verify_log(storage, SIZE, root)
    finally:
        await storage.close()
    assert schema_of(path)[:2] == (SCHEMA_VERSION, NEW_TILES_DDL)


# -- PostgreSQL: the same heap table; only its storage and the version change ---------


async def test_postgres_stores_tiles_out_of_line_uncompressed_new_or_upgraded(
    pg_database: str,
) -> None:
    import asyncpg

    storage = open_storage(pg_database)
    await storage.open()
    await storage.close()
    conn = await asyncpg.connect(pg_database)
    try:
        storage_of = (
            "SELECT attstorage FROM pg_attribute"
            " WHERE attrelid = 'tiles'::regclass AND attname = 'data'"
        )
        assert await conn.fetchval(storage_of) == b"e"  # EXTERNAL
        # As schema version 3 had it: the default storage of bytea.
        await conn.execute("ALTER TABLE tiles ALTER COLUMN data SET STORAGE EXTENDED")
        await conn.execute("UPDATE schema_version SET version = 3")
        await conn.execute("ALTER TABLE tiles DROP COLUMN summary")  # as 3 and 4 had it
        assert await conn.fetchval(storage_of) == b"x"
        storage = open_storage(pg_database)
        await storage.open()
        try:
            full = bytes(range(32)) * 256
            async with storage.integration() as tx:
                await tx.write_tiles({(0, 0): full})
            assert await storage.read_tiles([(0, 0)]) == {(0, 0): full}
            assert await storage.read_tiles_summarized([(0, 0)]) == {
                (0, 0): (full, tile_summary(full))
            }
        finally:
            await storage.close()
        assert await conn.fetchval(storage_of) == b"e"
        assert await conn.fetchval("SELECT version FROM schema_version") == SCHEMA_VERSION
    finally:
        await conn.close()
