"""The log key never signs two trees that cannot both be true (DESIGN.md 4, firmlog.server.signing).

A real log server on loopback, on both backends. The database records which
log it holds; a server with another key or origin refuses to start. The data
dir records the last checkpoint the server published; a database that lost
it, or that holds another tree, makes the server refuse to start, and a
record the stored tree does not extend (injected) makes it refuse to sign.
Servers sharing a data dir and a database may leave the record behind the
database; that never makes a correct log refuse.

What is seen from outside (HTTP, the data dir, the database, the refusal to
start) is tested against the app in this process and against ``serve
--workers 2``, whose workers sign and record in turn: a refusal is then the
command's one line (exit status 2); two servers sharing a data dir are then
four processes. The signer's own guards are tested in this process only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path

import pytest
from aiohttp import ClientSession
from support.harness import ORIGIN, BlackBoxLog, LogProcessUnderTest, make_log

from firmlog.client.bundle import ProofBundle
from firmlog.client.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from firmlog.client.keys import generate_key
from firmlog.server.signing import WrongLog
from firmlog.server.storage import LogIdentity, LogState, open_storage

RECORD = "checkpoint"


async def latest(base: str, session: ClientSession) -> bytes:
    async with session.get(f"{base}/checkpoint") as resp:
        assert resp.status == 200
        return await resp.read()


async def grow(log: BlackBoxLog, session: ClientSession, start: int, count: int) -> list[bytes]:
    """Submit ``count`` new entries; returns the checkpoint note of each bundle."""
    notes = []
    for i in range(start, start + count):
        status, body = await log.submit(session, log.entry(i))
        assert status == 200, body
        notes.append(ProofBundle.parse(body).checkpoint)
    return notes


async def stored(url: str) -> tuple[bytes | None, LogIdentity | None]:
    """The database's latest checkpoint and identity record."""
    storage = open_storage(url)
    await storage.open()
    try:
        async with storage.integration() as tx:
            return await storage.latest_checkpoint(), await tx.identity()
    finally:
        await storage.close()


async def refused_start(log: BlackBoxLog) -> str:
    """Start ``log``, which must refuse with WrongLog; the message. A ``serve``
    process must exit with status 2, its one line naming the problem."""
    if isinstance(log, LogProcessUnderTest):
        try:
            with pytest.raises(RuntimeError, match="exited with status 2") as failed:
                await log.start()
        finally:
            await log.stop()
        refusals = [
            line.removeprefix("firmlog-server: ")
            for line in log.process.output().splitlines()
            if line.startswith("firmlog-server: ")
        ]
        assert refusals, f"serve said nothing on stderr: {failed.value}"
        return refusals[-1]
    try:
        with pytest.raises(WrongLog) as info:
            await log.start()
    finally:
        await log.stop()
    return str(info.value)


async def test_the_data_dir_records_every_checkpoint_published(
    served_by: str, database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    log = make_log(served_by, database_url, tmp_path)
    await log.start()
    try:
        first = await latest(log.base, session)
        assert open_checkpoint(first, log.verifier).checkpoint.tree_size == 0
        assert (tmp_path / RECORD).read_bytes() == first
        for i in range(3):
            (note,) = await grow(log, session, i, 1)
            assert note == await latest(log.base, session)
            assert (tmp_path / RECORD).read_bytes() == note
        assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]
    finally:
        await log.stop()
    assert await stored(database_url) == (
        note,
        LogIdentity(origin=ORIGIN, vkey=log.verifier.vkey),
    )


async def test_a_server_refuses_a_database_that_holds_another_log(
    served_by: str, database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    owner = make_log(served_by, database_url, tmp_path / "owner")
    await owner.start()
    try:
        await grow(owner, session, 0, 2)
        before = await latest(owner.base, session)
    finally:
        await owner.stop()

    same_origin = make_log(
        served_by, database_url, tmp_path / "other", log_key=generate_key(ORIGIN)
    )
    message = await refused_start(same_origin)
    assert f"the database holds the log {ORIGIN!r} (key {owner.verifier.vkey})" in message
    assert f"not this server's log {ORIGIN!r} (key {same_origin.verifier.vkey})" in message
    assert "; point --database at this log's database" in message

    other_origin = make_log(
        served_by, database_url, tmp_path / "third", log_key=generate_key("other.example/log")
    )
    message = await refused_start(other_origin)
    assert f"holds the log {ORIGIN!r}" in message
    assert "not this server's log 'other.example/log'" in message

    assert (await stored(database_url))[0] == before  # nothing was signed over it
    again = make_log(served_by, database_url, tmp_path / "owner", owner.log_key, owner.operator)
    await again.start()
    try:
        assert await latest(again.base, session) == before
    finally:
        await again.stop()


async def _forget_identity(url: str) -> None:
    """Make the database look as an older firmlog left it: no identity record."""
    if url.startswith("sqlite:///"):
        import sqlite3

        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            conn.execute("DELETE FROM log_identity")
            conn.commit()
        return
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM log_identity")
    finally:
        await conn.close()


async def test_a_database_made_by_an_older_firmlog_is_claimed_only_with_its_key(
    served_by: str, database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    owner = make_log(served_by, database_url, tmp_path / "owner")
    await owner.start()
    try:
        await grow(owner, session, 0, 2)
    finally:
        await owner.stop()
    await _forget_identity(database_url)

    stranger = make_log(served_by, database_url, tmp_path / "other", log_key=generate_key(ORIGIN))
    message = await refused_start(stranger)
    key = f"{ORIGIN}+{owner.verifier.key_id:08x}"
    assert f"holds the log {ORIGIN!r} (its latest checkpoint is signed by {key})" in message
    assert f"not this server's log {ORIGIN!r} (key {stranger.verifier.vkey})" in message
    assert (await stored(database_url))[1] is None

    again = make_log(served_by, database_url, tmp_path / "owner", owner.log_key, owner.operator)
    await again.start()
    try:
        await grow(again, session, 2, 1)
    finally:
        await again.stop()
    assert (await stored(database_url))[1] == LogIdentity(ORIGIN, owner.verifier.vkey)


async def test_a_lost_database_is_not_started_over(
    served_by: str,
    database_url: str,
    tmp_path: Path,
    session: ClientSession,
    pg_factory: Callable[[], Awaitable[str]],
) -> None:
    data_dir = tmp_path / "data"
    log = make_log(served_by, database_url, data_dir)
    await log.start()
    try:
        signed = (await grow(log, session, 0, 5))[-1]
    finally:
        await log.stop()
    if database_url.startswith("sqlite:///"):  # the SQLite file is deleted
        lost = database_url
        for f in tmp_path.glob("firmlog.db*"):
            f.unlink()
    else:  # the server is pointed at an empty database
        lost = await pg_factory()

    again = make_log(served_by, lost, data_dir, log.log_key, log.operator)
    message = await refused_start(again)
    root = open_checkpoint(signed, log.verifier).checkpoint.root_hash.hex()
    assert message == (
        f"this data dir's log key signed tree size 5 (root {root}), but the database holds 0 "
        "entries: the database was lost or replaced; restore it, or point --database at this "
        "log's database; to start a new log instead, use a new data dir (it gets new keys)"
    )
    assert await stored(lost) == (None, None)  # nothing was signed, nothing claimed
    assert (data_dir / RECORD).read_bytes() == signed


def forged(log: BlackBoxLog, size: int, tag: bytes = b"forged") -> bytes:
    """A checkpoint the log key signed for a tree this log does not hold."""
    root = hashlib.sha256(tag).digest()
    return sign_checkpoint(Checkpoint(log.log_key.name, size, root), log.log_key)


async def test_a_record_of_another_tree_refuses_the_start(
    served_by: str, database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    log = make_log(served_by, database_url, tmp_path)
    await log.start()
    try:
        await grow(log, session, 0, 3)
    finally:
        await log.stop()
    (tmp_path / RECORD).write_bytes(forged(log, 2))
    again = make_log(served_by, database_url, tmp_path, log.log_key, log.operator)
    message = await refused_start(again)
    assert message.startswith("this data dir's log key signed tree size 2 (root ")
    assert "but the database's tree of size 3 (root " in message
    assert "does not extend it: the database holds another tree; restore" in message
    (tmp_path / RECORD).write_bytes(b"not a checkpoint\n")
    message = await refused_start(
        make_log(served_by, database_url, tmp_path, log.log_key, log.operator)
    )
    assert f"{tmp_path / RECORD} is not a checkpoint signed by this log's key (" in message


@pytest.mark.parametrize(
    ("size", "problem"),
    [
        (3, "but the database's tree of size 3 (root "),  # one size, another root
        (2, "but the database's tree of size 3 (root "),  # the tiles prove 2 is not a prefix
        (1, "but the database's tree of size 3 (root "),
        (9, "but the database holds 3 entries"),
    ],
)
async def test_a_tree_inconsistent_with_the_record_is_never_signed(
    served_by: str,
    database_url: str,
    tmp_path: Path,
    session: ClientSession,
    size: int,
    problem: str,
) -> None:
    """Fault injection: the record names a tree the database does not extend."""
    log = make_log(served_by, database_url, tmp_path)
    await log.start()
    try:
        await grow(log, session, 0, 3)
        before = await latest(log.base, session)
        record = forged(log, size)
        (tmp_path / RECORD).write_bytes(record)
        status, body = await log.submit(session, log.entry(3))
        assert status == 500, body  # retrying cannot help: the operator must look
        assert json.loads(body)["kind"] == "SigningRefused"
        assert await latest(log.base, session) == before
        async with session.get(f"{log.base}/metrics") as resp:
            metrics = await resp.text()
        assert "firmlog_signing_refusals_total 1" in metrics
        assert "firmlog_integration_errors_total 1" in metrics
        assert (tmp_path / RECORD).read_bytes() == record
    finally:
        await log.stop()
    assert (await stored(database_url))[0] == before  # nothing was committed
    message = await refused_start(
        make_log(served_by, database_url, tmp_path, log.log_key, log.operator)
    )
    assert problem in message


async def test_servers_sharing_a_data_dir_accept_a_record_behind_the_database(
    served_by: str, database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    """Two servers, one data dir, one database: each one's record lags the other's
    commits, and an older record (as a slow process would leave) is no reason to refuse.
    (Served by two workers each, four processes record in turn.)"""
    a = make_log(served_by, database_url, tmp_path)
    b = make_log(served_by, database_url, tmp_path, a.log_key, a.operator)
    await a.start()
    await b.start()
    try:
        notes = []
        for i in range(6):
            notes += await grow(a if i % 2 else b, session, i, 1)
        (tmp_path / RECORD).write_bytes(notes[1])  # size 2 of 6: behind, consistent
        status, body = await a.submit(session, a.entry(6))
        assert status == 200, body
        newest = ProofBundle.parse(body).checkpoint
        assert (tmp_path / RECORD).read_bytes() == newest
        assert open_checkpoint(newest, a.verifier).checkpoint.tree_size == 7
        assert (await b.submit(session, b.entry(7)))[0] == 200
    finally:
        await b.stop()
        await a.stop()
    restarted = make_log(served_by, database_url, tmp_path, a.log_key, a.operator)
    await restarted.start()
    await restarted.stop()


async def test_the_guard_signs_no_other_root_for_the_stored_size(tmp_path: Path) -> None:
    """A sequencer bug asking for another root at the stored size gets no signature."""
    from firmlog.server.reader import LogReader
    from firmlog.server.signing import TreeSigner
    from firmlog.server.storage import EMPTY_STATE

    storage = open_storage(f"sqlite:///{tmp_path / 'log.db'}")
    await storage.open()
    try:
        signer = TreeSigner(generate_key(ORIGIN), LogReader(storage), tmp_path / RECORD)
        with pytest.raises(RuntimeError, match="but the stored tree of that size has root e3b0"):
            await signer.sign(EMPTY_STATE, 0, hashlib.sha256(b"not empty").digest())
        with pytest.raises(RuntimeError, match="smaller than the stored tree"):
            await signer.sign(LogState(1, b"\0" * 32, b""), 0, hashlib.sha256(b"").digest())
    finally:
        await storage.close()


async def test_the_record_never_goes_back(tmp_path: Path) -> None:
    """Worker processes publish in turn and record after their commits, in any order:
    one that records later a checkpoint older than the record leaves the record as is."""
    from firmlog.server.reader import LogReader
    from firmlog.server.signing import TreeSigner

    reader = LogReader(open_storage(f"sqlite:///{tmp_path / 'log.db'}"))  # never opened
    key = generate_key(ORIGIN)
    older, newer = (
        sign_checkpoint(Checkpoint(ORIGIN, size, hashlib.sha256(b"%d" % size).digest()), key)
        for size in (2, 3)
    )
    slow, fast = (TreeSigner(key, reader, tmp_path / RECORD) for _ in range(2))
    await fast.published(newer)
    await slow.published(older)  # committed before the other's, recorded after it
    assert (tmp_path / RECORD).read_bytes() == newer
    (tmp_path / RECORD).write_bytes(b"not a checkpoint")
    await slow.published(newer)
    assert (tmp_path / RECORD).read_bytes() == newer
