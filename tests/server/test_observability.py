"""What the log server tells its operators: ``/metrics`` as Prometheus parses it,
submissions counted by outcome and reason, the checkpoint's age, request ids in
answers and log lines (firmlog.server.metrics, firmlog.service.metrics,
firmlog.service.request_ids)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import ClientSession
from procs import (
    ServerProcess,
    assert_no_errors,
    load_keys,
    make_entry,
    running_servers,
    write_config,
)
from support.harness import BlackBoxLog, LogUnderTest
from support.metrics import Samples
from support.processes import LogProcess, running
from support.rawhttp import exchange
from test_workers import pinned_sessions

from firmlog.client.checkpoint import Checkpoint, sign_checkpoint
from firmlog.client.cosignature import generate_witness_key
from firmlog.client.keys import generate_key
from firmlog.client.merkle import EMPTY_ROOT
from firmlog.client.note import Signature, add_signatures, split_note
from firmlog.server.reader import LogReader

# Every metric the server exported before prometheus_client, with its type and
# labels: dashboards and alerts read them, so none may change.
CONTRACT = {
    "firmlog_http_requests": ("counter", {"route", "status"}),
    "firmlog_http_request_seconds": ("histogram", {"route"}),
    "firmlog_submissions": ("counter", {"outcome"}),
    "firmlog_batch_entries": ("histogram", set()),
    "firmlog_integrate_seconds": ("histogram", set()),
    "firmlog_integration_errors": ("counter", set()),
    "firmlog_tree_size": ("gauge", set()),
    "firmlog_pool_entries": ("gauge", set()),
    "firmlog_signing_refusals": ("counter", set()),
}


async def scrape(session: ClientSession, base: str) -> Samples:
    async with session.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return Samples(await resp.text())


async def test_the_exposition_parses_and_keeps_every_metric(
    http_log: BlackBoxLog, session: ClientSession
) -> None:
    assert (await http_log.submit(session, http_log.entry(0)))[0] == 200
    samples = await scrape(session, http_log.base)
    for name, (kind, labels) in CONTRACT.items():
        family = samples.families[name]
        assert family.type == kind, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    assert samples['firmlog_submissions_total{outcome="integrated"}'] == 1
    assert samples["firmlog_tree_size"] == 1
    assert samples['firmlog_http_requests_total{route="/v1/entries",status="200"}'] == 1
    # What every service exports.
    assert samples["process_resident_memory_bytes"] > 0
    assert samples["process_start_time_seconds"] > 0
    assert samples.families["process_cpu_seconds"].type == "counter"
    assert samples.families["python_info"].samples
    (build,) = samples.families["firmlog_build_info"].samples
    assert build.labels["service"] == "firmlog-server"
    assert build.labels["version"]
    assert build.value == 1
    assert samples["firmlog_workers"] == (2 if http_log.served_by_workers else 1)


async def test_with_workers_a_scrape_counts_what_every_worker_did(
    tmp_path: Path, new_database: Callable[[], Awaitable[str | None]]
) -> None:
    database = await new_database()
    data_dir = tmp_path / "firmlog-data"
    write_config(data_dir, batch_interval=0.01, batch_size=16)
    with running_servers() as servers:
        server = ServerProcess("server", data_dir, tmp_path / "server.log", database, workers=2)
        servers.append(server)
        await server.start()
        keys = load_keys(data_dir)
        per_worker = 3
        async with pinned_sessions(server.base, 2) as pinned:
            for k, session in enumerate(pinned):  # each worker takes its own submissions
                for i in range(per_worker):
                    entry = make_entry(keys.operator, f"w{k}", i)
                    async with session.post(f"{server.base}/v1/entries", data=entry) as resp:
                        assert resp.status == 200, await resp.text()
            total = 2 * per_worker
            for session in pinned:  # whichever worker is asked, it answers for both
                samples = await scrape(session, server.base)
                assert samples["firmlog_workers"] == 2
                assert samples['firmlog_submissions_total{outcome="integrated"}'] == total
                assert samples['firmlog_http_requests_total{route="/v1/entries",status="200"}'] == (
                    total
                )
                assert samples["firmlog_tree_size"] == total
                assert samples["firmlog_batch_entries_sum"] == total
                assert samples["firmlog_pool_entries"] == 0
                assert samples["process_resident_memory_bytes"] > 0
                starts = [p.value for p in samples.families["process_start_time_seconds"].samples]
                assert len(starts) == 1  # one sample: the oldest worker's start
        assert_no_errors(servers)


async def test_each_app_has_its_own_registry(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    """Two apps in one process count apart (no process-wide default registry)."""
    data = tmp_path / "other"
    data.mkdir()
    other = LogUnderTest(f"sqlite:///{data / 'firmlog.db'}", data)
    await other.start()
    try:
        assert (await log.submit(session, log.entry(0)))[0] == 200
        assert (await scrape(session, log.base))["firmlog_tree_size"] == 1
        theirs = await scrape(session, other.base)
    finally:
        await other.stop()
    assert theirs["firmlog_tree_size"] == 0
    assert 'firmlog_submissions_total{outcome="integrated"}' not in theirs


async def test_rejected_submissions_are_counted_by_reason(
    http_log: BlackBoxLog, session: ClientSession
) -> None:
    text, signatures = split_note(http_log.entry(0))
    bad = bytearray(signatures[0].signature)
    bad[0] ^= 0x01  # the operator's signature no longer verifies
    forged = Signature(signatures[0].name, signatures[0].key_id, bytes(bad))
    entry = (text + "\n" + "".join(s.line() for s in [forged, *signatures[1:]])).encode()
    async with session.post(f"{http_log.base}/v1/entries", data=entry) as resp:
        assert resp.status == 403
        assert (await resp.json())["kind"] == "SignatureError"
    async with session.post(f"{http_log.base}/v1/entries", data=b"not an entry") as resp:
        assert resp.status == 400
        malformed = (await resp.json())["kind"]
    assert (await http_log.submit(session, http_log.entry(0)))[0] == 200
    samples = await scrape(session, http_log.base)
    rejected = 'firmlog_submissions_total{outcome="rejected",reason="%s"}'
    assert samples[rejected % "SignatureError"] == 1
    assert samples[rejected % malformed] == 1
    assert samples['firmlog_submissions_total{outcome="integrated"}'] == 1
    assert sum(s.value for s in samples.families["firmlog_submissions"].samples) == 3, (
        samples.families["firmlog_submissions"]
    )


async def test_the_checkpoint_age_grows_until_the_next_checkpoint(
    http_log: BlackBoxLog, session: ClientSession
) -> None:
    assert (await http_log.submit(session, http_log.entry(0)))[0] == 200
    first = (await scrape(session, http_log.base))["firmlog_checkpoint_age_seconds"]
    await asyncio.sleep(1.0)
    later = (await scrape(session, http_log.base))["firmlog_checkpoint_age_seconds"]
    assert later >= first + 1.0
    assert (await http_log.submit(session, http_log.entry(1)))[0] == 200
    newer = (await scrape(session, http_log.base))["firmlog_checkpoint_age_seconds"]
    assert newer < later


async def test_a_cosigned_checkpoint_is_as_old_as_its_newest_cosignature(
    log: LogUnderTest,
) -> None:
    key = generate_key("age.example/log")
    text = Checkpoint(origin=key.name, tree_size=0, root_hash=EMPTY_ROOT).to_text()
    note = sign_checkpoint(Checkpoint.parse(text), key)
    now = int(time.time())
    cosignatures = []
    for i, age in enumerate((1000, 400)):
        witness = generate_witness_key(f"w{i}.example/witness")
        signature = witness.sign_at(text, now - age)
        cosignatures.append(Signature(witness.name, witness.key_id, signature))
    reader = LogReader(log.services.storage)
    assert reader.checkpoint_age() is None
    reader.publish(add_signatures(note, cosignatures), 0, EMPTY_ROOT)
    age = reader.checkpoint_age()
    assert age is not None
    assert 400 <= age < 460, age
    assert len(split_note(add_signatures(note, cosignatures))[1]) == 3


async def test_a_valid_request_id_is_echoed_and_an_invalid_one_replaced(
    http_log: BlackBoxLog, session: ClientSession
) -> None:
    given = "req-" + "x" * 124  # 128 visible characters
    async with session.get(f"{http_log.base}/healthz", headers={"X-Request-Id": given}) as resp:
        assert resp.headers["X-Request-Id"] == given
    async with session.get(
        f"{http_log.base}/v1/bundle/nope", headers={"X-Request-Id": "r1"}
    ) as resp:
        assert resp.status == 400
        assert resp.headers["X-Request-Id"] == "r1"  # on errors too
    # Too long, a space, a control character (the one HTTP lets through: the
    # parser refuses the others before the app), not ASCII, empty.
    port = int(http_log.base.rsplit(":", 1)[1])
    seen = set()
    for bad in (b"x" * 129, b"has space", b"tab\tinside", b"caf\xc3\xa9", b""):
        answer = await exchange(
            port,
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            b"X-Request-Id: " + bad + b"\r\n\r\n",
        )
        assert answer.status == 200, (bad, answer.raw[:200])
        made_up = answer.headers["x-request-id"]
        assert made_up.encode() != bad
        assert re.fullmatch("[0-9a-f]{32}", made_up), made_up
        seen.add(made_up)
    async with session.get(f"{http_log.base}/healthz") as resp:
        seen.add(resp.headers["X-Request-Id"])
    assert len(seen) == 6  # a new one each time


async def test_the_request_log_line_has_the_id_the_client_and_the_error_kind(
    tmp_path: Path,
) -> None:
    with running() as procs:
        log = LogProcess(tmp_path / "log", "obs.example/log")
        procs.append(log)
        await log.start()
        async with ClientSession() as session:
            headers = {"X-Request-Id": "deploy-42/a"}
            async with session.post(f"{log.base}/v1/entries", data=b"junk", headers=headers) as r:
                assert r.status == 400
                kind = (await r.json())["kind"]
            async with session.post(
                f"{log.base}/v1/entries", data=b"junk", headers={"X-Request-Id": "x" * 129}
            ) as r:
                made_up = r.headers["X-Request-Id"]
        log.stop()
        events = [json.loads(x) for x in log.output().splitlines() if x.startswith("{")]
    requests = [e for e in events if e["event"] == "request"]
    (mine,) = [e for e in requests if e["request_id"] == "deploy-42/a"]
    assert mine["client"] == "127.0.0.1"
    assert mine["status"] == 400
    assert mine["kind"] == kind
    assert mine["method"] == "POST"
    assert mine["path"] == "/v1/entries"
    assert [e["request_id"] for e in requests if e is not mine] == [made_up]
    # The banner is log events too: every line is JSON, "listening" names the URL.
    (listening,) = [e for e in events if e["event"] == "listening"]
    assert listening["url"] == log.base
    (keys,) = [e for e in events if e["event"] == "keys"]
    assert keys["log_key"] == log.log_key.vkey
    assert not [x for x in log.output().splitlines() if x and not x.startswith(("{", "==="))]
