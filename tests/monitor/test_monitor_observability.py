"""What the monitor tells its operators: ``/metrics`` as Prometheus parses it, and
request ids in answers and log lines (firmlog.monitor.metrics,
firmlog.service.metrics, firmlog.service.request_ids)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from aiohttp import ClientSession
from support.harness import LogUnderTest
from support.metrics import Samples
from support.monitor import MonitorUnderTest, eventually, grow
from support.processes import LogProcess, MonitorProcess, running

# Every metric the monitor exported before prometheus_client, with its type and
# labels: dashboards and alerts read them, so none may change.
CONTRACT = {
    "firmlog_monitor_http_requests": ("counter", {"route", "status"}),
    "firmlog_monitor_polls": ("counter", {"outcome"}),
    "firmlog_monitor_trusted_tree_size": ("gauge", set()),
    "firmlog_monitor_checked_entries": ("gauge", set()),
    "firmlog_monitor_alerts": ("counter", {"kind"}),
    "firmlog_monitor_split_views": ("counter", set()),
    "firmlog_monitor_cosignatures": ("counter", {"via"}),
    "firmlog_monitor_witness_refusals": ("counter", {"status"}),
    "firmlog_monitor_log_up": ("gauge", set()),
    "firmlog_monitor_gossip": ("counter", {"direction", "outcome"}),
}


async def test_the_exposition_parses_and_keeps_every_metric(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    await grow(log, session, 0, 2)
    monitor = MonitorUnderTest(tmp_path / "m", log.base, log.verifier, [log.operator.verifier])
    await monitor.start()
    try:
        await eventually(lambda: monitor.watched.progress.next_index == 2, what="2 entries")
        async with session.post(f"{monitor.base}/add-checkpoint", data=b"nonsense") as resp:
            assert resp.status == 400
        async with session.get(f"{monitor.base}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            samples = Samples(await resp.text())
    finally:
        await monitor.stop()
    for name, (kind, labels) in CONTRACT.items():
        family = samples.families[name]
        assert family.type == kind, name
        for sample in family.samples:
            assert set(sample.labels) == labels, (name, sample)
    assert samples["firmlog_monitor_checked_entries"] == 2
    assert samples["firmlog_monitor_log_up"] == 1
    assert samples['firmlog_monitor_polls_total{outcome="ok"}'] >= 1
    assert samples['firmlog_monitor_witness_refusals_total{status="400"}'] == 1
    route = 'firmlog_monitor_http_requests_total{route="/add-checkpoint",status="400"}'
    assert samples[route] == 1
    assert samples["process_resident_memory_bytes"] > 0
    assert samples.families["process_cpu_seconds"].type == "counter"
    assert samples.families["python_info"].samples
    (build,) = samples.families["firmlog_build_info"].samples
    assert build.labels["service"] == "firmlog-monitor"
    assert build.labels["version"]
    assert build.value == 1


async def test_a_valid_request_id_is_echoed_and_an_invalid_one_replaced(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    monitor = MonitorUnderTest(tmp_path / "m", log.base, log.verifier, [log.operator.verifier])
    await monitor.start()
    try:
        for path in ("/healthz", "/v1/nothing-here", "/add-checkpoint"):
            async with session.post(
                f"{monitor.base}{path}", data=b"", headers={"X-Request-Id": "abc-1"}
            ) as resp:
                assert resp.headers.get("X-Request-Id") == "abc-1", (path, resp.status)
        made_up = []
        for bad in ("y" * 129, "two words"):
            headers = {"X-Request-Id": bad}
            async with session.get(f"{monitor.base}/healthz", headers=headers) as resp:
                assert resp.status == 200
                made_up.append(resp.headers["X-Request-Id"])
    finally:
        await monitor.stop()
    assert all(re.fullmatch("[0-9a-f]{32}", rid) for rid in made_up), made_up
    assert made_up[0] != made_up[1]


async def test_the_request_log_line_has_the_id_the_client_and_the_error(
    tmp_path: Path,
) -> None:
    with running() as procs:
        log = LogProcess(tmp_path / "log", "obs.example/log")
        procs.append(log)
        await log.start()
        monitor = MonitorProcess(tmp_path / "mon", log.base, log.log_key, name="obs.example/w")
        procs.append(monitor)
        await monitor.start()
        async with ClientSession() as session:
            headers = {"X-Request-Id": "ci:7"}
            url = f"{monitor.base}/add-checkpoint"
            async with session.post(url, data=b"not a request", headers=headers) as resp:
                status = resp.status
                assert resp.headers["X-Request-Id"] == "ci:7"
        monitor.stop()
        events = [json.loads(x) for x in monitor.output().splitlines() if x.startswith("{")]
    (line,) = [e for e in events if e["event"] == "request" and e.get("request_id") == "ci:7"]
    assert 400 <= status < 500
    assert line["status"] == status
    assert line["client"] == "127.0.0.1"
    assert line["method"] == "POST"
    assert line["path"] == "/add-checkpoint"
    assert line["kind"]
    # The banner is log events too.
    (listening,) = [e for e in events if e["event"] == "listening"]
    assert listening["url"] == monitor.base
    assert [e["witness_key"] for e in events if e["event"] == "keys"] == [monitor.witness_vkey]
