"""Conformance suite of the storage contract (firmlog.server.storage).

Every test runs against both backends: SQLite on a file in tmp_path and a real
PostgreSQL on loopback (a fresh database per test). Restarts are real (close,
open a new storage on the same file or database); crashes are real (a child
process holding the storage is SIGKILLed); concurrency is real (separate
storage instances, i.e. separate connections, racing for the integration lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.rawsql import run_sql

from firmlog.client.merkle import root_hash
from firmlog.client.tiles import tile_summary
from firmlog.server.storage import (
    EMPTY_STATE,
    EntryRow,
    Integration,
    LogIdentity,
    LogState,
    Storage,
    StorageOpenError,
    open_storage,
)
from firmlog.server.storage._checks import SCHEMA_VERSION

# -- test data -----------------------------------------------------------------


def leaf(i: int | str) -> bytes:
    return hashlib.sha256(f"leaf {i}".encode()).digest()


def entry(i: int | str) -> bytes:
    return f"entry {i}".encode()


def ident(leaf_hash: bytes) -> bytes:
    """The identity of the test entry with this leaf hash (one per leaf hash)."""
    return hashlib.sha256(b"identity " + leaf_hash).digest()


def row(leaf_hash: bytes, data: bytes, identity: bytes | None = None) -> EntryRow:
    return EntryRow(identity or ident(leaf_hash), leaf_hash, data)


async def find_leaves(tx: Integration, leaf_hashes: list[bytes]) -> dict[bytes, int]:
    """Which of these test entries are stored, by leaf hash, looked up by identity."""
    found = await tx.entries_by_identity([ident(h) for h in leaf_hashes])
    back = {ident(h): h for h in leaf_hashes}
    return {back[i]: index for i, (index, _) in found.items()}


def edge(size: int) -> bytes:
    """A right edge of the right length (32 bytes per set bit), distinct per size."""
    return bytes([size % 251]) * 32 * size.bit_count()


def note(size: int, tag: str = "") -> bytes:
    return f"example.com/log\n{size}\n{tag}root\n\n— example.com/log sig\n".encode()


def state(size: int) -> LogState:
    return LogState(tree_size=size, right_edge=edge(size), checkpoint=note(size))


def tile(width: int, salt: str = "") -> bytes:
    return b"".join(hashlib.sha256(f"{salt}{i}".encode()).digest() for i in range(width))


class Boom(Exception):
    pass


# -- fixtures and helpers ----------------------------------------------------------


@pytest.fixture
def storage_url(database_url: str) -> str:
    """A fresh database on each backend (tests/conftest.py)."""
    return database_url


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Storage]:
    storage = open_storage(url)
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


@pytest.fixture
async def storage(storage_url: str) -> AsyncIterator[Storage]:
    async with opened(storage_url) as s:
        yield s


async def integrate(
    storage: Storage, count: int, tiles: dict[tuple[int, int], bytes] | None = None
) -> LogState:
    """Append ``count`` entries after the stored ones, write tiles, commit the new state."""
    async with storage.integration() as tx:
        size = (await tx.state()).tree_size
        await tx.append_entries(size, [row(leaf(i), entry(i)) for i in range(size, size + count)])
        if tiles:
            await tx.write_tiles(tiles)
        new = state(size + count)
        await tx.write_state(new)
    return new


async def committed_state(storage: Storage) -> LogState:
    async with storage.integration() as tx:
        return await tx.state()


@dataclass(frozen=True)
class Snapshot:
    """Everything a reader can observe of a small log."""

    state: LogState
    latest: bytes | None
    history: tuple[bytes | None, ...]
    entries: tuple[bytes, ...]
    leaves: tuple[int | None, ...]
    tiles: tuple[tuple[tuple[int, int], bytes], ...]


TILE_KEYS = [(level, index) for level in range(3) for index in range(4)]


async def snapshot(storage: Storage) -> Snapshot:
    return Snapshot(
        state=await committed_state(storage),
        latest=await storage.latest_checkpoint(),
        history=tuple([await storage.checkpoint_at(n) for n in range(40)]),
        entries=tuple(await storage.read_entries(0, 1000)),
        leaves=tuple([await storage.find_leaf(leaf(i)) for i in range(40)]),
        tiles=tuple(sorted((await storage.read_tiles(TILE_KEYS)).items())),
    )


# -- contract ----------------------------------------------------------------------


async def test_fresh_storage_is_empty(storage: Storage) -> None:
    async with storage.integration() as tx:
        assert await tx.state() == EMPTY_STATE
        assert await find_leaves(tx, [leaf(0)]) == {}
        assert await tx.read_tiles([(0, 0)]) == {}
    assert await storage.latest_checkpoint() is None
    assert await storage.checkpoint_at(0) is None
    assert await storage.read_entries(0, 10) == []
    assert await storage.read_tiles([(0, 0), (1, 0)]) == {}
    assert await storage.find_leaf(leaf(0)) is None


async def test_commit_is_durable_across_restart(storage_url: str) -> None:
    big_entry = bytes(range(256)) * 64  # 16 KiB, the default entry size limit
    full_tile = tile(256)
    async with opened(storage_url) as storage, storage.integration() as tx:
        assert await tx.state() == EMPTY_STATE
        await tx.append_entries(
            0, [row(leaf(0), entry(0)), row(leaf(1), big_entry), row(leaf(2), b"")]
        )
        await tx.write_tiles({(0, 0): tile(3), (1, 0): tile(1, "up"), (0, 7): full_tile})
        await tx.write_state(state(3))
        # inside the integration its own writes are visible
        assert await tx.state() == state(3)
        assert await find_leaves(tx, [leaf(1), leaf(9)]) == {leaf(1): 1}
        assert await tx.read_tiles([(0, 0)]) == {(0, 0): tile(3)}

    async with opened(storage_url) as storage:
        assert await committed_state(storage) == state(3)
        assert await storage.latest_checkpoint() == note(3)
        assert await storage.checkpoint_at(3) == note(3)
        assert await storage.read_entries(0, 3) == [entry(0), big_entry, b""]
        assert await storage.read_tiles([(0, 0), (1, 0), (0, 7), (0, 1)]) == {
            (0, 0): tile(3),
            (1, 0): tile(1, "up"),
            (0, 7): full_tile,
        }
        assert await storage.find_leaf(leaf(2)) == 2


async def test_rollback_on_exception_leaves_nothing(storage: Storage) -> None:
    await integrate(storage, 2, {(0, 0): tile(2), (1, 0): tile(1, "up")})
    before = await snapshot(storage)

    async def fail_after_writing() -> None:
        async with storage.integration() as tx:
            await tx.append_entries(2, [row(leaf(2), entry(2)), row(leaf(3), entry(3))])
            await tx.write_tiles({(0, 0): tile(4), (0, 1): tile(1, "new"), (1, 0): tile(2, "up")})
            await tx.write_state(state(4))
            raise Boom

    with pytest.raises(Boom):
        await fail_after_writing()

    assert await snapshot(storage) == before
    assert before.state == state(2)
    # and the log goes on from where it was
    assert await integrate(storage, 1) == state(3)
    assert await storage.read_entries(0, 10) == [entry(0), entry(1), entry(2)]


async def test_find_leaves_and_find_leaf(storage: Storage) -> None:
    await integrate(storage, 3)
    async with storage.integration() as tx:
        assert await find_leaves(tx, []) == {}
        assert await find_leaves(tx, [leaf(2), leaf(0), leaf(99), leaf(2)]) == {
            leaf(0): 0,
            leaf(2): 2,
        }
        await tx.append_entries(3, [row(leaf(3), entry(3))])
        assert await find_leaves(tx, [leaf(3)]) == {leaf(3): 3}  # its own writes
        # readers outside see only what is committed
        assert await storage.find_leaf(leaf(3)) is None
        await tx.write_state(state(4))
    assert [await storage.find_leaf(leaf(i)) for i in range(5)] == [0, 1, 2, 3, None]


async def test_read_entries_ranges(storage: Storage) -> None:
    await integrate(storage, 10)
    assert await storage.read_entries(0, 10) == [entry(i) for i in range(10)]
    assert await storage.read_entries(3, 7) == [entry(i) for i in range(3, 7)]
    assert await storage.read_entries(8, 100) == [entry(8), entry(9)]
    assert await storage.read_entries(10, 20) == []
    assert await storage.read_entries(5, 5) == []
    with pytest.raises(ValueError, match="0 <= start <= end"):
        await storage.read_entries(-1, 3)
    with pytest.raises(ValueError, match="0 <= start <= end"):
        await storage.read_entries(5, 4)


async def test_large_batch(storage: Storage) -> None:
    await integrate(storage, 1000)
    await integrate(storage, 1)
    assert await storage.read_entries(995, 1005) == [entry(i) for i in range(995, 1001)]
    assert await storage.find_leaf(leaf(999)) == 999
    async with storage.integration() as tx:
        found = await find_leaves(tx, [leaf(i) for i in range(0, 1200, 7)])
    assert found == {leaf(i): i for i in range(0, 1001, 7)}


async def test_checkpoint_history(storage: Storage) -> None:
    for count in (1, 2, 1):
        await integrate(storage, count)
    assert await storage.latest_checkpoint() == note(4)
    assert [await storage.checkpoint_at(n) for n in range(6)] == [
        None,
        note(1),
        None,
        note(3),
        note(4),
        None,
    ]
    # one size, one checkpoint: a different note for an unchanged size is refused
    with pytest.raises(RuntimeError, match="one size, one checkpoint"):
        async with storage.integration() as tx:
            await tx.write_state(LogState(4, edge(4), note(4, "again ")))
    assert await storage.latest_checkpoint() == note(4)
    assert await storage.checkpoint_at(4) == note(4)


async def test_a_checkpoint_covers_exactly_the_stored_entries(storage: Storage) -> None:
    await integrate(storage, 2)
    with pytest.raises(RuntimeError, match="tree size 3 but 2 entries are stored"):
        async with storage.integration() as tx:
            await tx.write_state(LogState(3, edge(3), note(3)))
    assert await committed_state(storage) == LogState(2, edge(2), note(2))


async def test_state_without_checkpoint_is_not_history(storage: Storage) -> None:
    async with storage.integration() as tx:
        await tx.append_entries(0, [row(leaf(0), entry(0))])
        await tx.write_state(LogState(1, edge(1), b""))
    assert await committed_state(storage) == LogState(1, edge(1), b"")
    assert await storage.latest_checkpoint() is None
    assert await storage.checkpoint_at(1) is None


async def test_tiles_grow(storage: Storage) -> None:
    async with storage.integration() as tx:
        await tx.write_tiles({(0, 0): tile(1)})
        await tx.write_tiles({(0, 0): tile(5)})
    async with storage.integration() as tx:
        await tx.write_tiles({(0, 0): tile(5), (2, 3): tile(2)})  # unchanged is fine
        await tx.write_tiles({(0, 0): tile(256)})
    assert await storage.read_tiles([(0, 0), (2, 3)]) == {(0, 0): tile(256), (2, 3): tile(2)}


async def test_a_full_tile_is_stored_with_its_summary_and_a_partial_one_without(
    storage: Storage,
) -> None:
    await integrate(storage, 2, {(0, 0): tile(100), (1, 3): tile(256, "up")})
    assert await storage.read_tiles_summarized([(0, 0), (1, 3), (0, 1)]) == {
        (0, 0): (tile(100), None),
        (1, 3): (tile(256, "up"), tile_summary(tile(256, "up"))),
    }
    await integrate(storage, 1, {(0, 0): tile(256)})  # grown full: now it has one
    async with storage.integration() as tx:  # inside an integration too
        assert await tx.read_tiles([(0, 0)]) == {(0, 0): tile(256)}
    stored = await storage.read_tiles_summarized([(0, 0)])
    assert stored == {(0, 0): (tile(256), tile_summary(tile(256)))}
    # What a proof hashes from it: the 16 subtrees four levels up.
    hashes = [tile(256)[i : i + 32] for i in range(0, 256 * 32, 32)]
    assert stored[(0, 0)][1] == b"".join(root_hash(hashes[k : k + 16]) for k in range(0, 256, 16))


# -- defensive checks: the last line of defence against a fork ----------------------


@pytest.mark.parametrize("offset", [-1, 1])
async def test_append_must_start_at_stored_size(storage: Storage, offset: int) -> None:
    await integrate(storage, 2)
    before = await snapshot(storage)
    with pytest.raises(RuntimeError, match=f"expected index 2, got {2 + offset}"):
        async with storage.integration() as tx:
            await tx.append_entries(2 + offset, [row(leaf(9), entry(9))])
    assert await snapshot(storage) == before


async def test_append_on_empty_log_starts_at_zero(storage: Storage) -> None:
    with pytest.raises(RuntimeError, match="expected index 0, got 1"):
        async with storage.integration() as tx:
            await tx.append_entries(1, [row(leaf(1), entry(1))])
    assert await storage.read_entries(0, 10) == []


async def test_appends_within_one_integration_continue(storage: Storage) -> None:
    async with storage.integration() as tx:
        await tx.append_entries(0, [row(leaf(0), entry(0))])
        await tx.append_entries(1, [row(leaf(1), entry(1)), row(leaf(2), entry(2))])
        await tx.append_entries(3, [])
        await tx.write_state(state(3))
    assert await storage.read_entries(0, 10) == [entry(0), entry(1), entry(2)]


async def test_failed_append_poisons_the_integration(storage: Storage) -> None:
    async def go_on_after_failure() -> None:
        async with storage.integration() as tx:
            await tx.append_entries(0, [row(leaf(0), entry(0)), row(leaf(1), entry(1))])
            with pytest.raises(RuntimeError, match="expected index 2, got 1"):
                await tx.append_entries(1, [row(leaf(5), entry(5))])
            with pytest.raises(RuntimeError, match="failed write"):
                await tx.write_state(state(2))
            with pytest.raises(RuntimeError, match="failed write"):
                await tx.state()

    with pytest.raises(RuntimeError, match="not committed: a write inside it failed"):
        await go_on_after_failure()
    assert await snapshot(storage) == Snapshot(
        EMPTY_STATE, None, (None,) * 40, (), (None,) * 40, ()
    )


@pytest.mark.parametrize("batch", ["already-logged", "repeated-in-batch"])
async def test_duplicate_leaf_hash_is_rejected(storage: Storage, batch: str) -> None:
    await integrate(storage, 2)
    before = await snapshot(storage)
    dup = leaf(1) if batch == "already-logged" else leaf("x")

    async def append_duplicate() -> None:
        async with storage.integration() as tx:
            await tx.append_entries(2, [row(leaf("x"), entry("x")), row(dup, entry("y"))])
            await tx.write_state(state(4))

    with pytest.raises(RuntimeError, match="identity or leaf hash is already in the log"):
        await append_duplicate()
    assert await snapshot(storage) == before


async def test_swallowed_failure_still_rolls_back(storage: Storage) -> None:
    await integrate(storage, 1, {(0, 0): tile(1)})
    before = await snapshot(storage)

    async def swallow_failure() -> None:
        async with storage.integration() as tx:
            await tx.append_entries(1, [row(leaf(1), entry(1))])
            await tx.write_state(state(2))
            # a careless caller goes on; the transaction must still not commit
            with contextlib.suppress(RuntimeError):
                await tx.write_tiles({(0, 1): tile(1, "ok"), (0, 0): tile(2, "forked")})

    with pytest.raises(RuntimeError, match="not committed: a write inside it failed"):
        await swallow_failure()
    assert await snapshot(storage) == before


async def test_write_state_must_not_shrink(storage: Storage) -> None:
    await integrate(storage, 3)
    before = await snapshot(storage)
    with pytest.raises(RuntimeError, match="must not shrink the tree: stored size 3, got 2"):
        async with storage.integration() as tx:
            await tx.write_state(state(2))
    assert await snapshot(storage) == before


async def test_write_state_must_not_change_edge_of_same_size(storage: Storage) -> None:
    await integrate(storage, 3)
    before = await snapshot(storage)
    other_edge = bytes(64)
    with pytest.raises(RuntimeError, match="right edge of tree size 3 without growing"):
        async with storage.integration() as tx:
            await tx.write_state(LogState(3, other_edge, note(3, "fork ")))
    assert await snapshot(storage) == before


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (LogState(-1, b"", b""), "must not be negative"),
        (LogState(3, bytes(32), b""), "must be 64 bytes, got 32"),
        (LogState(4, bytes(64), b""), "must be 32 bytes, got 64"),
    ],
)
async def test_write_state_rejects_malformed_state(
    storage: Storage, bad: LogState, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        async with storage.integration() as tx:
            await tx.write_state(bad)
    assert await committed_state(storage) == EMPTY_STATE


@pytest.mark.parametrize(
    "new",
    [
        pytest.param(tile(3, "other"), id="changed-prefix"),
        pytest.param(tile(2), id="shrunk"),
        pytest.param(tile(3)[:64] + tile(1, "z") + tile(1), id="changed-last-hash"),
    ],
)
async def test_tile_may_only_grow(storage: Storage, new: bytes) -> None:
    await integrate(storage, 3, {(0, 0): tile(3), (1, 0): tile(1, "up")})
    before = await snapshot(storage)

    async def fork_tile() -> None:
        async with storage.integration() as tx:
            await tx.append_entries(3, [row(leaf(3), entry(3))])
            await tx.write_tiles({(1, 0): tile(2, "up"), (0, 0): new})
            await tx.write_state(state(4))

    with pytest.raises(RuntimeError, match="tile 0/0 may only grow"):
        await fork_tile()
    assert await snapshot(storage) == before


@pytest.mark.parametrize(
    ("key", "data", "error"),
    [
        ((0, 0), b"", "1 to 256 hashes of 32 bytes, got 0 bytes"),
        ((0, 0), bytes(33), "got 33 bytes"),
        ((0, 0), bytes(32 * 257), "got 8224 bytes"),
        ((-1, 0), bytes(32), "must not be negative"),
        ((0, -1), bytes(32), "must not be negative"),
    ],
)
async def test_malformed_tile_is_rejected(
    storage: Storage, key: tuple[int, int], data: bytes, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        async with storage.integration() as tx:
            await tx.write_tiles({(0, 1): tile(1), key: data})
    assert await storage.read_tiles([(0, 1), key]) == {}


async def test_integration_is_unusable_after_it_ends(storage: Storage) -> None:
    async with storage.integration() as tx:
        pass
    with pytest.raises(RuntimeError, match="after its transaction ended"):
        await tx.state()
    with pytest.raises(RuntimeError, match="after its transaction ended"):
        await tx.append_entries(0, [row(leaf(0), entry(0))])
    assert await storage.read_entries(0, 1) == []


async def test_storage_must_be_opened(storage_url: str) -> None:
    storage = open_storage(storage_url)
    with pytest.raises(RuntimeError, match="not open"):
        await storage.latest_checkpoint()
    with pytest.raises(RuntimeError, match="not open"):
        async with storage.integration():
            pass
    await storage.close()  # closing an unopened storage is harmless


# -- the log's identity --------------------------------------------------------------

IDENTITY = LogIdentity("example.com/log", "example.com/log+01234567+AQ")


async def _identity(storage: Storage) -> LogIdentity | None:
    async with storage.integration() as tx:
        return await tx.identity()


async def test_the_identity_is_written_once_with_the_first_state(storage_url: str) -> None:
    async with opened(storage_url) as storage:
        assert await _identity(storage) is None
        async with storage.integration() as tx:
            await tx.write_identity(IDENTITY)
            await tx.write_state(LogState(0, b"", note(0)))
            assert await tx.identity() == IDENTITY
    async with opened(storage_url) as storage:
        assert await _identity(storage) == IDENTITY
        other = LogIdentity("other.example/log", "other.example/log+76543210+AQ")

        async def claim_it() -> None:
            async with storage.integration() as tx:
                await tx.append_entries(0, [row(leaf(0), entry(0))])
                await tx.write_identity(other)

        with pytest.raises(RuntimeError, match=r"already records the log example\.com/log\+"):
            await claim_it()
        assert await _identity(storage) == IDENTITY
        assert await storage.read_entries(0, 1) == []  # the failed write rolled it all back


async def test_the_identity_rolls_back_with_its_integration(storage: Storage) -> None:
    async def fail_after_writing() -> None:
        async with storage.integration() as tx:
            await tx.write_identity(IDENTITY)
            raise Boom

    with pytest.raises(Boom):
        await fail_after_writing()
    assert await _identity(storage) is None


async def _execute(url: str, sql: str) -> None:
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            conn.execute(sql)
            conn.commit()
        return
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_a_database_made_before_the_identity_record_gets_its_table(
    storage_url: str,
) -> None:
    async with opened(storage_url) as storage:
        await integrate(storage, 2)
    await _execute(storage_url, "DROP TABLE log_identity")  # as an older firmlog made it
    async with opened(storage_url) as storage:
        assert await _identity(storage) is None
        assert await committed_state(storage) == state(2)
        async with storage.integration() as tx:
            await tx.write_identity(IDENTITY)
        assert await _identity(storage) == IDENTITY


def test_an_sqlite_file_that_cannot_be_opened_says_what_to_do(tmp_path: Path) -> None:
    async def open_it(path: Path) -> None:
        await open_storage(f"sqlite:///{path}").open()

    with pytest.raises(StorageOpenError, match=r"unable to open database file; check that its"):
        asyncio.run(open_it(tmp_path / "missing" / "log.db"))
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    with pytest.raises(StorageOpenError, match=r"junk\.db: file is not a database; check"):
        asyncio.run(open_it(tmp_path / "junk.db"))


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://postgres@127.0.0.1:{closed}/db", "cannot connect to PostgreSQL"),
        ("postgresql://postgres@127.0.0.1:notaport/db", "is malformed"),
        ("postgresql://nosuchrole@{server}/postgres", "refused the login"),
        ("postgresql://postgres@{server}/nosuchdb", "has no such database"),
    ],
)
async def test_postgres_open_errors_say_what_to_do(
    url: str, problem: str, pg_database: str
) -> None:
    server = pg_database.split("@", 1)[1].split("/", 1)[0]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    storage = open_storage(url.format(server=server, closed=closed))
    with pytest.raises(StorageOpenError, match=problem) as info:
        await storage.open()
    assert "; " in str(info.value)
    assert "\n" not in str(info.value)


def test_a_password_is_never_shown() -> None:
    from firmlog.server.storage.postgres import redact

    assert redact("postgresql://u:s3cret@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


# -- serialization and concurrency ---------------------------------------------------


async def _bump(storage: Storage, writer: str, inside: list[int], peak: list[int]) -> None:
    """Read the state, dawdle, write size + 1: loses an update unless serialized."""
    async with storage.integration() as tx:
        inside.append(1)
        peak.append(len(inside))
        size = (await tx.state()).tree_size
        await asyncio.sleep(0.05)
        await tx.append_entries(size, [row(leaf(f"{writer}-{size}"), entry(writer))])
        await tx.write_state(state(size + 1))
        inside.pop()


async def test_integrations_of_separate_storages_are_serialized(storage_url: str) -> None:
    async with opened(storage_url) as a, opened(storage_url) as b:
        inside: list[int] = []
        peak: list[int] = []
        await asyncio.gather(_bump(a, "a", inside, peak), _bump(b, "b", inside, peak))
        assert await committed_state(a) == state(2)
        assert max(peak) == 1
        async with opened(storage_url) as c:
            writers = [(s, name) for name, s in (("a", a), ("b", b), ("c", c))]
            await asyncio.gather(
                *(_bump(s, f"{name}{i}", inside, peak) for i in range(3) for s, name in writers)
            )
        assert await committed_state(b) == state(11)
        assert max(peak) == 1
        assert len(await a.read_entries(0, 100)) == 11


async def test_integrations_of_one_storage_are_serialized(storage: Storage) -> None:
    inside: list[int] = []
    peak: list[int] = []
    await asyncio.gather(*(_bump(storage, str(i), inside, peak) for i in range(5)))
    assert await committed_state(storage) == state(5)
    assert max(peak) == 1


async def test_reads_see_committed_data_during_integration(storage_url: str) -> None:
    async with opened(storage_url) as storage, opened(storage_url) as other:
        await integrate(storage, 2, {(0, 0): tile(2)})
        async with storage.integration() as tx:
            await tx.append_entries(2, [row(leaf(2), entry(2))])
            await tx.write_tiles({(0, 0): tile(3)})
            await tx.write_state(state(3))
            for reader in (storage, other):  # neither blocks nor sees uncommitted writes
                async with asyncio.timeout(5):
                    assert await reader.read_entries(0, 10) == [entry(0), entry(1)]
                    assert await reader.read_tiles([(0, 0)]) == {(0, 0): tile(2)}
                    assert await reader.latest_checkpoint() == note(2)
                    assert await reader.checkpoint_at(3) is None
                    assert await reader.find_leaf(leaf(2)) is None
        assert await other.read_tiles([(0, 0)]) == {(0, 0): tile(3)}
        assert await other.latest_checkpoint() == note(3)


async def test_cancelled_integration_rolls_back(storage: Storage) -> None:
    await integrate(storage, 1)
    before = await snapshot(storage)
    inside = asyncio.Event()

    async def stuck() -> None:
        async with storage.integration() as tx:
            await tx.append_entries(1, [row(leaf(1), entry(1))])
            await tx.write_state(state(2))
            inside.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(stuck())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await snapshot(storage) == before
    async with asyncio.timeout(10):
        assert await integrate(storage, 1) == state(2)


async def test_schema_creation_is_idempotent_and_concurrent(storage_url: str) -> None:
    stores = [open_storage(storage_url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        await stores[0].open()  # opening twice is harmless
        await integrate(stores[1], 2)
        assert await stores[3].read_entries(0, 5) == [entry(0), entry(1)]
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    async with opened(storage_url) as again:  # existing schema and data are kept
        assert await committed_state(again) == state(2)


async def _set_schema_version(url: str, version: int) -> None:
    await run_sql(url, f"UPDATE schema_version SET version = {version} WHERE id = 1")


async def test_the_summaries_of_tiles_stored_before_version_5_are_filled_in_batches(
    storage_url: str,
) -> None:
    """As the upgrade to version 5 leaves a log: full tiles without a summary and a
    backfill begun. Each call gives a batch theirs, in key order, resuming across
    restarts; partial tiles get none; no tile's bytes change; then it is done."""
    full = {(0, i): tile(256, f"t{i}") for i in range(7)} | {(1, 0): tile(256, "up")}
    partial = {(0, 7): tile(9, "t7"), (1, 1): tile(2, "up1")}
    async with opened(storage_url) as storage:
        assert await storage.summarize_tiles(4) is None  # a new log has none to do
        await integrate(storage, 3, full | partial)
    await run_sql(
        storage_url,
        "UPDATE tiles SET summary = NULL",
        "INSERT INTO summary_backfill (id, level, idx) VALUES (1, -1, -1)",
    )
    async with opened(storage_url) as storage:
        assert {s for _, s in (await storage.read_tiles_summarized(list(full))).values()} == {None}
        with pytest.raises(ValueError, match="at least 1"):
            await storage.summarize_tiles(0)
        assert await storage.summarize_tiles(3) == 3
        stored = await storage.read_tiles_summarized(list(full))
        done = [key for key, (_, summary) in sorted(stored.items()) if summary is not None]
        assert done == [(0, 0), (0, 1), (0, 2)]
    async with opened(storage_url) as storage:  # resumes where it was
        assert await storage.summarize_tiles(3) == 3
        assert await storage.summarize_tiles(3) == 2  # (0, 6) and (1, 0); the partial ones: none
        assert await storage.summarize_tiles(3) is None
        stored = await storage.read_tiles_summarized(list(full | partial))
        assert stored == {key: (data, tile_summary(data)) for key, data in full.items()} | {
            key: (data, None) for key, data in partial.items()
        }


async def test_newer_schema_version_is_refused(storage_url: str) -> None:
    async with opened(storage_url) as storage:
        await integrate(storage, 1)
    await _set_schema_version(storage_url, 99)
    storage = open_storage(storage_url)
    with pytest.raises(StorageOpenError) as info:
        await storage.open()
    assert str(info.value) == (
        f"the database has schema version 99, made by another firmlog-server; this one needs "
        f"{SCHEMA_VERSION} and upgrades only 2, 3, 4: start a new log (a new data dir or "
        "database), or run the firmlog-server version that made it"
    )
    with pytest.raises(RuntimeError, match="not open"):
        await storage.read_entries(0, 1)


async def test_a_version_2_database_is_upgraded_in_place(storage_url: str) -> None:
    async with opened(storage_url) as storage:
        await integrate(storage, 2)
    # As the firmlog-server before the cosigned record made it (on SQLite, with the
    # tiles table before schema version 4: tests/server/test_tiles_table.py).
    await _execute(storage_url, "DROP TABLE cosigned_checkpoint")
    if storage_url.startswith("sqlite:///"):
        await _execute(storage_url, "DROP TABLE tiles")
        await _execute(
            storage_url,
            "CREATE TABLE tiles (level INTEGER NOT NULL, idx INTEGER NOT NULL,"
            " data BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID",
        )
    await _set_schema_version(storage_url, 2)
    async with opened(storage_url) as storage:
        assert await committed_state(storage) == state(2)
        assert await storage.latest_cosigned() is None
        await storage.record_cosigned(2, cosigned(2))
    async with opened(storage_url) as storage:  # recorded as version 4: no second upgrade
        assert await storage.latest_cosigned() is not None
    await _set_schema_version(storage_url, 1)
    with pytest.raises(StorageOpenError, match="schema version 1"):
        async with opened(storage_url):
            pass


def cosigned(size: int, witness: str = "w") -> bytes:
    """``note(size)`` with one more signature line, as a witness would add it."""
    return note(size) + f"\u2014 {witness} cosig\n".encode()


async def test_the_latest_cosigned_checkpoint_is_recorded_and_only_grows(
    storage: Storage,
) -> None:
    assert await storage.latest_cosigned() is None
    for count in (1, 2, 1):
        await integrate(storage, count)
    await storage.record_cosigned(3, cosigned(3))
    assert await storage.latest_cosigned() == cosigned(3)
    # The history keeps the cosigned note; other sizes keep the log's own.
    assert await storage.checkpoint_at(3) == cosigned(3)
    assert await storage.checkpoint_at(4) == note(4)
    assert await storage.latest_checkpoint() == note(4)  # the integrated tree, as before
    # An older tree recorded later (another process, slower) does not replace it.
    await storage.record_cosigned(1, cosigned(1))
    assert await storage.latest_cosigned() == cosigned(3)
    assert await storage.checkpoint_at(1) == cosigned(1)
    await storage.record_cosigned(4, cosigned(4, "w2"))
    assert await storage.latest_cosigned() == cosigned(4, "w2")


async def test_only_a_signed_checkpoint_can_be_recorded_as_cosigned(storage: Storage) -> None:
    await integrate(storage, 2)
    with pytest.raises(RuntimeError, match="no checkpoint of tree size 3"):
        await storage.record_cosigned(3, cosigned(3))
    with pytest.raises(RuntimeError, match="one size, one checkpoint"):
        await storage.record_cosigned(2, note(2, "other ") + "\u2014 w cosig\n".encode())
    with pytest.raises(RuntimeError, match="one size, one checkpoint"):  # the log's signature lost
        await storage.record_cosigned(
            2, note(2).split(b"\n\n")[0] + "\n\n\u2014 w cosig\n".encode()
        )
    assert await storage.latest_cosigned() is None
    assert await storage.checkpoint_at(2) == note(2)


async def test_a_cosigned_checkpoint_is_seen_by_another_storage(storage_url: str) -> None:
    async with opened(storage_url) as one, opened(storage_url) as other:
        await integrate(one, 2)
        await one.record_cosigned(2, cosigned(2))
        assert await other.latest_cosigned() == cosigned(2)
        assert await other.checkpoint_at(2) == cosigned(2)


def test_open_storage_rejects_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        open_storage("mysql://localhost/log")
    with pytest.raises(ValueError, match="needs a file path"):
        open_storage("sqlite:///:memory:")


@pytest.mark.parametrize("batch", ["already-logged", "repeated-in-batch"])
async def test_duplicate_identity_is_rejected(storage: Storage, batch: str) -> None:
    """One identity is one entry: the same identity under another leaf hash (the
    same signed text with other signature lines) is never stored twice."""
    await integrate(storage, 2)
    before = await snapshot(storage)
    same = ident(leaf(1)) if batch == "already-logged" else ident(leaf("x"))

    async def append_duplicate() -> None:
        async with storage.integration() as tx:
            await tx.append_entries(
                2, [row(leaf("x"), entry("x")), row(leaf("y"), entry("y"), identity=same)]
            )
            await tx.write_state(state(4))

    with pytest.raises(RuntimeError, match="identity or leaf hash is already in the log"):
        await append_duplicate()
    assert await snapshot(storage) == before


async def test_entries_by_identity_and_find_identity(storage: Storage) -> None:
    await integrate(storage, 3)
    async with storage.integration() as tx:
        assert await tx.entries_by_identity([]) == {}
        got = await tx.entries_by_identity([ident(leaf(2)), ident(leaf(7)), ident(leaf(2))])
        assert got == {ident(leaf(2)): (2, entry(2))}
        assert await tx.entries_by_identity([leaf(2)]) == {}  # a leaf hash is not an identity
    assert await storage.find_identity(ident(leaf(1))) == 1
    assert await storage.find_identity(leaf(1)) is None
    assert await storage.find_leaf(leaf(1)) == 1


# -- crashes: a writer process killed with SIGKILL ----------------------------------

_WRITER = """
import asyncio, sys
from firmlog.server.storage import EntryRow, LogState, open_storage

async def main(url: str, mode: str) -> None:
    storage = open_storage(url)
    await storage.open()
    async with storage.integration() as tx:
        size = (await tx.state()).tree_size
        await tx.append_entries(size, [EntryRow(b"i" * 32, b"k" * 32, b"from the killed writer")])
        await tx.write_tiles({(0, 0): b"k" * 32})
        await tx.write_state(LogState(size + 1, b"e" * 32, b"killed note"))
        if mode == "hold":
            print("holding", flush=True)
            await asyncio.sleep(3600)
    print("committed", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def _run_until_killed(url: str, mode: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WRITER, url, mode, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode().strip()
    finally:
        proc.kill()  # SIGKILL: no cleanup of any kind in the child
        await proc.wait()
    return line


@pytest.mark.slow
async def test_commit_survives_killed_writer(storage_url: str) -> None:
    assert await _run_until_killed(storage_url, "commit") == "committed"
    async with opened(storage_url) as storage:
        assert await committed_state(storage) == LogState(1, b"e" * 32, b"killed note")
        assert await storage.read_entries(0, 5) == [b"from the killed writer"]
        assert await storage.checkpoint_at(1) == b"killed note"
        assert await integrate(storage, 1, {(0, 0): b"k" * 32 + tile(1)}) == state(2)


@pytest.mark.slow
async def test_writer_killed_mid_integration_leaves_nothing_and_no_lock(
    storage_url: str,
) -> None:
    async with opened(storage_url) as storage:
        await integrate(storage, 1)
        before = await snapshot(storage)
        assert await _run_until_killed(storage_url, "hold") == "holding"
        assert await snapshot(storage) == before
        async with asyncio.timeout(20):  # the dead writer's lock is released
            assert await integrate(storage, 1) == state(2)
