"""The follower against a real log server: follows, resumes, retries, and replays the ledger."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from support.harness import LogUnderTest
from support.monitor import MonitorUnderTest, eventually, grow

from firmlog.client.checkpoint import open_checkpoint
from firmlog.client.keys import generate_key
from firmlog.monitor.follower import ENTRY_REJECTED
from firmlog.server.app import make_app as make_log_app


async def healthz(session: ClientSession, base: str) -> dict[str, object]:
    async with session.get(f"{base}/healthz") as resp:
        assert resp.status == 200
        body: dict[str, object] = await resp.json()
        return body


async def test_follows_a_growing_log_and_resumes_after_a_restart(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    await grow(log, session, 0, 3)
    data = tmp_path / "monitor"
    monitor = MonitorUnderTest(data, log.base, log.verifier, [log.operator.verifier])
    await monitor.start()
    try:
        await eventually(lambda: monitor.watched.progress.next_index == 3, what="3 entries")
        await grow(log, session, 3, 297)  # past the first full tile
        await eventually(lambda: monitor.watched.progress.next_index == 300, what="300 entries")
        assert monitor.watched.tree_size == 300
        health = await healthz(session, monitor.base)
        assert health["status"] == "ok"
        assert health["checked_entries"] == 300
        async with session.get(f"{monitor.base}/v1/alerts") as resp:
            assert await resp.json() == []
        async with session.get(f"{monitor.base}/metrics") as resp:
            text = await resp.text()
        assert "firmlog_monitor_checked_entries 300" in text
        assert "firmlog_monitor_log_up 1" in text
    finally:
        await monitor.stop()

    with sqlite3.connect(data / "monitor.db") as db:  # the state is on disk
        assert db.execute("SELECT next_index, trusted_size FROM log_state").fetchone() == (300, 300)
        assert db.execute("SELECT count(*) FROM entries").fetchone() == (300,)
        assert db.execute("SELECT count(*) FROM vendors").fetchone() == (300,)

    await grow(log, session, 300, 10)
    again = MonitorUnderTest(
        data, log.base, log.verifier, [log.operator.verifier], poll_interval=3600
    )
    await again.start()
    try:
        # Resumed where it stopped, then caught up with one poll.
        await eventually(lambda: again.watched.progress.next_index == 310, what="310 entries")
        assert len(again.watched.progress.ledger.vendors) == 310
        assert again.watched.progress.ledger.size == 310
        assert (await healthz(session, again.base))["tree_size"] == 310
    finally:
        await again.stop()


async def test_a_log_that_is_down_is_retried_and_reported(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    await grow(log, session, 0, 2)
    # Another log server for the same log, on a port chosen now and started later.
    other = TestServer(
        make_log_app(log.config, log.log_key, [log.operator.verifier]), host="127.0.0.1"
    )
    await other.start_server()
    url = str(other.make_url("")).rstrip("/")
    port = other.port
    await other.close()  # nothing listens there now

    monitor = MonitorUnderTest(tmp_path / "monitor", url, log.verifier, [log.operator.verifier])
    await monitor.start()
    try:
        await eventually(lambda: monitor.watched.last_error is not None, what="an error")
        health = await healthz(session, monitor.base)
        assert health["status"] == "degraded"
        assert "TransportError" in str(health["last_error"])
        async with session.get(f"{monitor.base}/metrics") as resp:
            assert "firmlog_monitor_log_up 0" in await resp.text()

        await log.stop()  # the same database, now served on the monitor's port
        revived = TestServer(
            make_log_app(log.config, log.log_key, [log.operator.verifier]),
            host="127.0.0.1",
            port=port,
        )
        await revived.start_server()
        try:
            await eventually(lambda: monitor.watched.progress.next_index == 2, what="recovery")
            assert (await healthz(session, monitor.base))["status"] == "ok"
        finally:
            await revived.close()
    finally:
        await monitor.stop()


async def test_an_entry_the_replay_rejects_is_an_alert(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    await grow(log, session, 0, 2)
    # The log's operator key is replaced behind the monitor's back: the log
    # accepts admissions signed by the new key, the monitor's replay does not.
    trusted_operator = log.operator
    await log.stop()
    log.operator = generate_key("operator.example")
    await log.start()
    await grow(log, session, 2, 1)
    await log.stop()
    log.operator = trusted_operator
    await log.start()
    await grow(log, session, 3, 1)

    monitor = MonitorUnderTest(
        tmp_path / "monitor", log.base, log.verifier, [log.operator.verifier]
    )
    await monitor.start()
    try:
        await eventually(lambda: monitor.watched.progress.next_index == 4, what="4 entries")
        async with session.get(f"{monitor.base}/v1/alerts") as resp:
            alerts = await resp.json()
        assert [(a["index"], a["kind"]) for a in alerts] == [(2, ENTRY_REJECTED)]
        assert "firmlog/vendor/v1" in alerts[0]["detail"]
        assert set(monitor.watched.progress.ledger.vendors) == {
            "v0.example",
            "v1.example",
            "v3.example",
        }
        # Cosigning is about consistency, not content: the checkpoint is cosigned.
        note = monitor.watched.cosigned_note
        assert note is not None
        assert monitor.signer is not None
        opened = open_checkpoint(note, log.verifier, [monitor.signer.verifier])
        assert opened.checkpoint.tree_size == 4
    finally:
        await monitor.stop()


async def test_a_monitor_that_trusts_no_operator_key_alerts_and_goes_on(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    """Without --operator-key every admission is an alert with its reason; the
    replay never stops on one entry (it used to fail each poll on a ValueError)."""
    await grow(log, session, 0, 3)
    monitor = MonitorUnderTest(tmp_path / "monitor", log.base, log.verifier, [])
    await monitor.start()
    try:
        await eventually(lambda: monitor.watched.progress.next_index == 3, what="3 entries")
        async with session.get(f"{monitor.base}/v1/alerts") as resp:
            alerts = await resp.json()
        assert sorted((a["index"], a["kind"]) for a in alerts) == [
            (i, ENTRY_REJECTED) for i in range(3)
        ]
        assert all("no operator key is trusted" in a["detail"] for a in alerts)
    finally:
        await monitor.stop()
