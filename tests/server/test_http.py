"""The log server over real HTTP on loopback, on SQLite and on PostgreSQL.

Every test re-verifies the whole log from its tiles and entry bundles after
it has changed it (logcheck.verify_whole_log).
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

from aiohttp import ClientSession
from support.faults import WatchedStorage
from support.harness import BlackBoxLog, LogUnderTest, make_log, until
from support.logcheck import verify_whole_log

from firmlog.client.bundle import ProofBundle
from firmlog.client.checkpoint import open_checkpoint
from firmlog.client.entries import VendorAdmission, sign_entry
from firmlog.client.keys import generate_key
from firmlog.client.merkle import EMPTY_ROOT, leaf_hash, verify_consistency, verify_inclusion
from firmlog.server.storage import open_storage


async def test_a_new_log_publishes_the_empty_tree(
    http_log: BlackBoxLog, session: ClientSession
) -> None:
    checked = await verify_whole_log(http_log.base, http_log.verifier)
    assert checked.checkpoint.tree_size == 0
    assert checked.checkpoint.root_hash == EMPTY_ROOT
    async with session.get(f"{http_log.base}/healthz") as resp:
        assert resp.status == 200
        assert (await resp.json())["tree_size"] == 0


async def test_submission_answers_with_a_proof(
    http_log: BlackBoxLog, session: ClientSession
) -> None:
    entries = [http_log.entry(i) for i in range(5)]
    for i, entry in enumerate(entries):
        status, body = await http_log.submit(session, entry)
        assert status == 200, body
        bundle = http_log.check_bundle(body, entry)
        assert bundle.index == i
    checked = await verify_whole_log(http_log.base, http_log.verifier)
    assert checked.entries == entries


async def test_resubmission_gets_the_original_index(
    http_log: BlackBoxLog, session: ClientSession
) -> None:
    first = [http_log.entry(i) for i in range(3)]
    for e in first:
        assert (await http_log.submit(session, e))[0] == 200
    status, body = await http_log.submit(session, first[1])
    assert status == 200
    assert http_log.check_bundle(body, first[1]).index == 1
    # and twice in the same batch
    results = await asyncio.gather(
        *(http_log.submit(session, http_log.entry(99)) for _ in range(4))
    )
    indexes = {http_log.check_bundle(b, http_log.entry(99)).index for s, b in results if s == 200}
    assert indexes == {3}
    assert (await verify_whole_log(http_log.base, http_log.verifier)).checkpoint.tree_size == 4


async def test_concurrent_submissions_are_batched(
    http_log: BlackBoxLog, session: ClientSession
) -> None:
    entries = [http_log.entry(i) for i in range(300)]  # crosses the first tile boundary
    results = await asyncio.gather(*(http_log.submit(session, e) for e in entries))
    sizes = set()
    indexes = set()
    for (status, body), entry in zip(results, entries, strict=True):
        assert status == 200, body
        bundle = http_log.check_bundle(body, entry)
        indexes.add(bundle.index)
        sizes.add(open_checkpoint(bundle.checkpoint, http_log.verifier).checkpoint.tree_size)
    assert indexes == set(range(300))
    assert len(sizes) < 100, f"{len(sizes)} checkpoints for 300 concurrent entries: no batching"
    checked = await verify_whole_log(http_log.base, http_log.verifier)
    assert checked.checkpoint.tree_size == 300
    assert sorted(checked.entries) == sorted(entries)


async def _size(log: BlackBoxLog) -> int:
    return (await verify_whole_log(log.base, log.verifier)).checkpoint.tree_size


MALFORMED = [  # (body, status, a part of the error message)
    (b"", 400, "note"),
    (b"not a note at all", 400, "note"),
    (b"firmlog/vendor/v1\n{}\n\n\xe2\x80\x94 x AAAA\n", 400, ""),
    ("\xff".encode("latin-1"), 400, ""),
    (b"x" * 20000, 413, "limit is 16384"),
]


async def test_malformed_submissions_are_rejected_and_nothing_is_stored(
    http_log: BlackBoxLog, session: ClientSession
) -> None:
    assert (await http_log.submit(session, http_log.entry(0)))[0] == 200
    for body, status, message in MALFORMED:
        async with session.post(f"{http_log.base}/v1/entries", data=body) as resp:
            assert resp.status == status, body[:40]
            err = await resp.json()
            assert message in err["error"]
            assert err["kind"]
        assert await _size(http_log) == 1


async def test_entries_not_signed_by_the_operator_are_forbidden(
    http_log: BlackBoxLog, session: ClientSession
) -> None:
    stranger = generate_key("stranger.example")
    body = VendorAdmission(vendor="evil.example", keys=(stranger.verifier.vkey,), threshold=1)
    status, resp = await http_log.submit(session, sign_entry(body, [stranger]))
    assert status == 400, resp  # a signature line by a key the rule does not require
    assert b"not one of the operator's keys" in resp
    # a forged signature under the operator's name and key id is also refused
    forged = bytearray(http_log.entry(7))
    forged[-10] ^= 0x01
    status, resp = await http_log.submit(session, bytes(forged))
    assert status in (400, 403), resp
    assert await _size(http_log) == 0  # still empty


async def test_full_pool_answers_503_with_retry_after(
    database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    log = LogUnderTest(
        database_url,
        tmp_path,
        storage=WatchedStorage,
        batch_size=1,
        pool_size=1,
        batch_interval=0.01,
    )
    await log.start()
    watched = log.services.storage
    assert isinstance(watched, WatchedStorage)
    blocker = open_storage(database_url)
    await blocker.open()
    try:
        # Hold the integration lock, as a second server process would.
        async with blocker.integration():
            asked = watched.integrations
            first = asyncio.create_task(log.submit(session, log.entry(1)))
            await until(
                lambda: watched.integrations > asked,
                "the sequencer to take the first entry and wait for the lock",
            )
            second = asyncio.create_task(log.submit(session, log.entry(2)))
            await until(lambda: log.pending == 1, "the second entry in the pool")
            async with session.post(f"{log.base}/v1/entries", data=log.entry(3)) as resp:
                assert resp.status == 503
                assert int(resp.headers["Retry-After"]) >= 1
                assert "pool is full" in (await resp.json())["error"]
        assert (await first)[0] == 200
        assert (await second)[0] == 200
        assert await _size(log) == 2
    finally:
        await blocker.close()
        await log.stop()


async def test_read_api_proofs_verify(http_log: BlackBoxLog, session: ClientSession) -> None:
    entries = [http_log.entry(i) for i in range(20)]
    checkpoints = {}
    for e in entries:
        status, body = await http_log.submit(session, e)
        assert status == 200
        cp_note = ProofBundle.parse(body).checkpoint
        cp = open_checkpoint(cp_note, http_log.verifier).checkpoint
        checkpoints[cp.tree_size] = cp
    for size, cp in checkpoints.items():
        for index in range(size):
            url = f"{http_log.base}/v1/proof/inclusion?index={index}&tree_size={size}"
            async with session.get(url) as resp:
                assert resp.status == 200
                assert "immutable" in resp.headers["Cache-Control"]
                got = await resp.json()
            proof = [base64.b64decode(h) for h in got["hashes"]]
            assert (got["leaf_index"], got["tree_size"]) == (index, size)
            verify_inclusion(leaf_hash(entries[index]), index, size, proof, cp.root_hash)
        for old, old_cp in checkpoints.items():
            if old > size:
                continue
            async with session.get(
                f"{http_log.base}/v1/proof/consistency?old={old}&new={size}"
            ) as r:
                assert r.status == 200
                got = await r.json()
            proof = [base64.b64decode(h) for h in got["hashes"]]
            verify_consistency(old, size, old_cp.root_hash, cp.root_hash, proof)
    # bundles by index and by leaf hash, latest and pinned to a tree size
    for index in (0, 7, 19):
        for ref in (str(index), leaf_hash(entries[index]).hex()):
            async with session.get(f"{http_log.base}/v1/bundle/{ref}") as resp:
                assert resp.status == 200
                assert http_log.check_bundle(await resp.read(), entries[index]).index == index
        async with session.get(f"{http_log.base}/v1/bundle/{index}?tree_size={index + 1}") as resp:
            assert resp.status == 200
            assert "immutable" in resp.headers["Cache-Control"]
            pinned = http_log.check_bundle(await resp.read(), entries[index])
            assert open_checkpoint(pinned.checkpoint, http_log.verifier).checkpoint.tree_size == (
                index + 1
            )
    async with session.get(f"{http_log.base}/v1/entries?start=5&end=8") as resp:
        got = await resp.json()
        assert [base64.b64decode(e["entry"]) for e in got["entries"]] == entries[5:8]
        assert [e["index"] for e in got["entries"]] == [5, 6, 7]


BAD_READS = [  # (path, status) on a log of 3 entries
    ("/v1/proof/inclusion?index=5&tree_size=3", 400),
    ("/v1/proof/inclusion?index=0&tree_size=99", 404),
    ("/v1/proof/inclusion?index=x&tree_size=3", 400),
    ("/v1/proof/inclusion?tree_size=3", 400),
    ("/v1/proof/consistency?old=3&new=2", 400),
    ("/v1/proof/consistency?old=0&new=2", 400),
    ("/v1/proof/consistency?old=1&new=50", 404),
    ("/v1/proof/inclusion?index=01&tree_size=3", 400),
    ("/v1/bundle/3", 404),
    ("/v1/bundle/" + "ab" * 32, 404),
    ("/v1/bundle/-1", 400),
    ("/v1/bundle/0?tree_size=7", 404),
    ("/v1/entries?start=a", 400),
    ("/tile/0/000.p/4", 404),
    ("/tile/0/000", 404),
    ("/tile/0/0", 404),
    ("/tile/entries/000.p/4", 404),
    ("/tile/9/000.p/1", 404),
]


async def test_bad_reads_say_what_was_wrong(http_log: BlackBoxLog, session: ClientSession) -> None:
    for i in range(3):
        assert (await http_log.submit(session, http_log.entry(i)))[0] == 200
    for path, status in BAD_READS:
        async with session.get(f"{http_log.base}{path}") as resp:
            assert resp.status == status, path
            assert (await resp.json())["error"], path


async def test_tiles_and_caching_headers(http_log: BlackBoxLog, session: ClientSession) -> None:
    results = await asyncio.gather(
        *(http_log.submit(session, http_log.entry(i)) for i in range(260))
    )
    assert all(s == 200 for s, _ in results)
    size = await _size(http_log)
    async with session.get(f"{http_log.base}/tile/0/000") as resp:
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert len(await resp.read()) == 256 * 32
    async with session.get(f"{http_log.base}/tile/0/001.p/{size - 256}") as resp:
        assert resp.status == 200
    async with session.get(f"{http_log.base}/tile/entries/000") as resp:
        assert resp.status == 200
        assert "immutable" in resp.headers["Cache-Control"]
    async with session.get(f"{http_log.base}/checkpoint") as resp:
        assert "max-age=1" in resp.headers["Cache-Control"]
    # a narrower partial tile is a prefix of the wider one
    async with session.get(f"{http_log.base}/tile/0/000.p/10") as resp:
        narrow = await resp.read()
    async with session.get(f"{http_log.base}/tile/0/000") as resp:
        assert (await resp.read()).startswith(narrow)


async def test_restart_keeps_the_log(served_by: str, database_url: str, tmp_path: Path) -> None:
    first = make_log(served_by, database_url, tmp_path)
    await first.start()
    async with ClientSession() as session:
        for i in range(10):
            assert (await first.submit(session, first.entry(i)))[0] == 200
        before = await verify_whole_log(first.base, first.verifier)
        await first.stop()
        second = make_log(
            served_by, database_url, tmp_path, log_key=first.log_key, operator=first.operator
        )
        await second.start()
        try:
            after = await verify_whole_log(second.base, second.verifier, previous=before)
            assert after.note == before.note
            status, body = await second.submit(session, second.entry(10))
            assert status == 200
            assert second.check_bundle(body, second.entry(10)).index == 10
            status, body = await second.submit(session, first.entry(3))
            assert second.check_bundle(body, first.entry(3)).index == 3
            await verify_whole_log(second.base, second.verifier, previous=after)
        finally:
            await second.stop()


async def test_metrics_and_health(http_log: BlackBoxLog, session: ClientSession) -> None:
    assert (await http_log.submit(session, http_log.entry(1)))[0] == 200
    async with session.get(f"{http_log.base}/metrics") as resp:
        text = await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "firmlog_tree_size 1" in text
    assert 'firmlog_submissions_total{outcome="integrated"} 1' in text
    assert "firmlog_integrate_seconds_count 1" in text
    async with session.get(f"{http_log.base}/healthz") as resp:
        health = await resp.json()
    assert health == {"status": "ok", "tree_size": 1, "pid": health["pid"]}
    assert health["pid"] in http_log.pids(), "not a process of this server answered"


async def test_a_tree_with_level_one_tiles_verifies(database_url: str, tmp_path: Path) -> None:
    """70,000 entries: full and partial tiles at levels 0, 1 and 2.

    A plain sequencer (no ledger gate: opaque entries) feeds the app's storage
    directly; the server then serves the tree over HTTP.
    """
    from firmlog.server.app import SERVICES
    from firmlog.server.config import SequencerConfig
    from firmlog.server.sequencer import Sequencer

    log = LogUnderTest(database_url, tmp_path)
    await log.start()
    try:
        assert log.server is not None
        svc = log.server.app[SERVICES]
        sequencer = Sequencer(
            svc.storage, svc.reader, log.log_key, SequencerConfig(batch_size=8192, pool_size=80000)
        )
        running = asyncio.create_task(sequencer.run())
        entries = [f"entry {i}".encode() for i in range(70_000)]
        results = await asyncio.gather(*(sequencer.submit(e, leaf_hash(e)) for e in entries))
        await sequencer.stop()
        await running
        assert sorted(r.leaf_index for r in results) == list(range(70_000))
        for r, e in zip(results[::997], entries[::997], strict=True):
            log.check_bundle(r.bundle, e)
        checked = await verify_whole_log(log.base, log.verifier)
        assert checked.checkpoint.tree_size == 70_000
    finally:
        await log.stop()


async def test_a_proof_failure_after_the_commit_says_the_entry_is_logged(
    log: LogUnderTest, session: ClientSession
) -> None:
    """Fault injection: building proofs fails once after the batch committed."""
    from firmlog.server.app import SERVICES

    assert log.server is not None
    reader = log.server.app[SERVICES].reader
    real_prove = reader.prove
    calls = 0

    async def failing_prove(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected: tiles unreadable")
        return await real_prove(*args, **kwargs)  # type: ignore[arg-type]

    reader.prove = failing_prove  # type: ignore[method-assign]
    entry = log.entry(1)
    status, body = await log.submit(session, entry)
    assert status == 503
    err = json.loads(body)
    assert err["kind"] == "ProofUnavailable"
    assert "logged at index 0" in err["error"]
    assert (await verify_whole_log(log.base, log.verifier)).entries == [entry]
    status, body = await log.submit(session, entry)  # the same entry again: its index
    assert status == 200
    assert log.check_bundle(body, entry).index == 0
