"""c2sp.org/tlog-witness conformance of POST /add-checkpoint, against a real log's checkpoints.

The log (over SQLite) is the app in this process or a ``serve --workers 2``
process: the witness is given what the log serves over HTTP, whichever worker
answers."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession
from support.harness import ORIGIN, SERVED_BY, BlackBoxLog, make_log
from support.monitor import NOWHERE, MonitorUnderTest, checkpoint, consistency, grow

from firmlog.client.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from firmlog.client.cosignature import cosignature_timestamp
from firmlog.client.keys import generate_key
from firmlog.client.trust import CheckpointNote


@pytest.fixture(params=SERVED_BY)
async def log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlackBoxLog]:
    """A log server over SQLite, in this process or by two workers, stopped after the test."""
    data = tmp_path / "log"
    data.mkdir()
    server = make_log(str(request.param), f"sqlite:///{data / 'firmlog.db'}", data)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def witness(tmp_path: Path, log: BlackBoxLog) -> AsyncIterator[MonitorUnderTest]:
    """A monitor that only witnesses: the log URL it follows answers nothing."""
    monitor = MonitorUnderTest(tmp_path / "monitor", NOWHERE, log.verifier, [log.operator.verifier])
    await monitor.start()
    try:
        yield monitor
    finally:
        await monitor.stop()


async def test_add_checkpoint_cosigns_what_extends_its_state(
    log: BlackBoxLog, witness: MonitorUnderTest, session: ClientSession
) -> None:
    await grow(log, session, 0, 2)
    cp2 = await checkpoint(session, log.base)
    status, _, body = await witness.add_checkpoint(session, 0, [], cp2)
    assert status == 200, body
    assert witness.signer is not None
    # The answer is signature lines: with the checkpoint, a note the witness key opens.
    assert body.startswith("— monitor.test/witness ".encode())
    assert body.endswith(b"\n")
    opened = open_checkpoint(cp2 + body, log.verifier, [witness.signer.verifier])
    witness_sigs = [s for s in opened.note.verified if s.name == witness.signer.name]
    assert len(witness_sigs) == 1
    assert cosignature_timestamp(witness_sigs[0].signature) > 0

    await grow(log, session, 2, 5)
    cp7 = await checkpoint(session, log.base)
    proof = await consistency(session, log.base, 2, 7)
    status, _, body = await witness.add_checkpoint(session, 2, proof, cp7)
    assert status == 200, body
    open_checkpoint(cp7 + body, log.verifier, [witness.signer.verifier])

    # The latest cosigned checkpoint is served at /<hex sha256(origin)>/checkpoint.
    path = hashlib.sha256(ORIGIN.encode()).hexdigest()
    async with session.get(f"{witness.base}/{path}/checkpoint") as resp:
        assert resp.status == 200
        served = await resp.read()
    opened = open_checkpoint(served, log.verifier, [witness.signer.verifier])
    assert opened.checkpoint.tree_size == 7
    assert {s.name for s in opened.note.verified} == {ORIGIN, witness.signer.name}
    async with session.get(f"{witness.base}/{'0' * 64}/checkpoint") as resp:
        assert resp.status == 404

    # The same checkpoint again (old size = its size, empty proof) is cosigned again.
    status, _, body = await witness.add_checkpoint(session, 7, [], cp7)
    assert status == 200, body


async def test_add_checkpoint_refusals(
    log: BlackBoxLog, witness: MonitorUnderTest, session: ClientSession
) -> None:
    await grow(log, session, 0, 3)
    cp3 = await checkpoint(session, log.base)
    assert (await witness.add_checkpoint(session, 0, [], cp3))[0] == 200
    await grow(log, session, 3, 5)
    cp8 = await checkpoint(session, log.base)

    # 409: the old size is not the size it cosigned last; the body says which it is.
    status, ctype, body = await witness.add_checkpoint(session, 2, [], cp8)
    assert (status, ctype, body) == (409, "text/x.tlog.size", b"3\n")
    status, ctype, body = await witness.add_checkpoint(session, 0, [], cp8)
    assert (status, ctype, body) == (409, "text/x.tlog.size", b"3\n")

    # 422: a consistency proof for other sizes does not verify.
    wrong = await consistency(session, log.base, 2, 8)
    status, _, body = await witness.add_checkpoint(session, 3, wrong, cp8)
    assert status == 422, body
    status, _, body = await witness.add_checkpoint(session, 3, [], cp8)
    assert status == 422, body

    # 400: malformed requests, and an old size larger than the checkpoint's.
    for bad in [
        b"",
        b"old 3\n",
        b"old 03\n\n" + cp8,
        b"old 3\nnot base64\n\n" + cp8,
        b"old 3\n\nnot a checkpoint\n",
        b"new 3\n\n" + cp8,
        b"old 3\n" + b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + b"\n" + cp8,
    ]:
        async with session.post(f"{witness.base}/add-checkpoint", data=bad) as resp:
            assert resp.status == 400, (bad[:40], await resp.text())
    assert (await witness.add_checkpoint(session, 9, [], cp8))[0] == 400

    # 404: a checkpoint of another log.
    mine = CheckpointNote.parse(cp8).checkpoint
    other_key = generate_key("other.example/log")
    foreign = sign_checkpoint(
        Checkpoint("other.example/log", mine.tree_size, mine.root_hash), other_key
    )
    assert (await witness.add_checkpoint(session, 3, [], foreign))[0] == 404

    # 403: signed by another key with the log's name.
    forged = sign_checkpoint(CheckpointNote.parse(cp8).checkpoint, generate_key(ORIGIN))
    proof = await consistency(session, log.base, 3, 8)
    assert (await witness.add_checkpoint(session, 3, proof, forged))[0] == 403

    # None of that moved the state: the right request still works.
    status, _, body = await witness.add_checkpoint(session, 3, proof, cp8)
    assert status == 200, body
    # A replayed old checkpoint is refused with the size it knows now.
    status, ctype, body = await witness.add_checkpoint(session, 0, [], cp3)
    assert (status, ctype, body) == (409, "text/x.tlog.size", b"8\n")
    async with session.get(f"{witness.base}/metrics") as resp:
        text = await resp.text()
    assert 'firmlog_monitor_witness_refusals_total{status="409"} 3' in text


async def test_concurrent_add_checkpoints_for_one_old_size_one_wins(
    log: BlackBoxLog, witness: MonitorUnderTest, session: ClientSession
) -> None:
    await grow(log, session, 0, 2)
    cp2 = await checkpoint(session, log.base)
    assert (await witness.add_checkpoint(session, 0, [], cp2))[0] == 200
    requests = []
    for start in (2, 4, 6, 8):
        await grow(log, session, start, 2)
        cp = await checkpoint(session, log.base)
        size = CheckpointNote.parse(cp).checkpoint.tree_size
        requests.append((cp, await consistency(session, log.base, 2, size)))
    results = await asyncio.gather(
        *(witness.add_checkpoint(session, 2, proof, cp) for cp, proof in requests for _ in range(3))
    )
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] + [409] * 11, results
    winner = next(i for i, r in enumerate(results) if r[0] == 200)
    won = CheckpointNote.parse(requests[winner // 3][0]).checkpoint.tree_size
    assert {body for status, _, body in results if status == 409} == {f"{won}\n".encode()}
    assert witness.watched.tree_size == won


async def test_a_stored_checkpoint_the_memory_missed_is_taken_up(
    log: BlackBoxLog, witness: MonitorUnderTest, session: ClientSession
) -> None:
    """The store moved past this process's memory (a save whose caller was cancelled
    before it noted it, or another process on the data dir): one request is told to
    retry, and from then on the witness answers from the stored checkpoint."""
    await grow(log, session, 0, 2)
    cp2 = await checkpoint(session, log.base)
    assert (await witness.add_checkpoint(session, 0, [], cp2))[0] == 200
    await grow(log, session, 2, 2)
    cp4 = await checkpoint(session, log.base)
    watched = witness.watched
    cosigned4, _ = watched.cosign(cp4)
    store = watched.store
    assert await store.run(store.store.save_checkpoint, 2, cp4, 4, cosigned4)
    await grow(log, session, 4, 2)
    cp6 = await checkpoint(session, log.base)
    proof_2_6 = await consistency(session, log.base, 2, 6)
    status, _, body = await witness.add_checkpoint(session, 2, proof_2_6, cp6)
    assert (status, body) == (503, b"the witness state changed meanwhile; retry\n")
    assert watched.tree_size == 4
    status, _, body = await witness.add_checkpoint(session, 2, proof_2_6, cp6)
    assert (status, body) == (409, b"4\n")
    proof_4_6 = await consistency(session, log.base, 4, 6)
    assert (await witness.add_checkpoint(session, 4, proof_4_6, cp6))[0] == 200
    assert watched.tree_size == 6
