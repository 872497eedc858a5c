"""Content alerts against a real log: duplicates, regressions, revocations, rotations,
unannounced releases of a watched vendor (a stolen key), the alert command, restarts."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shlex
import sqlite3
import sys
from pathlib import Path
from typing import Any

from aiohttp import ClientSession
from support.entries import VENDOR, VENDOR_KEY, admission, release
from support.harness import LogUnderTest
from support.monitor import MonitorUnderTest, eventually

from firmlog.client.entries import KeySet, Revocation, parse_entry, sign_entry
from firmlog.client.keys import generate_key
from firmlog.monitor.alerts import (
    DUPLICATE_VERSION,
    KEY_ROTATION,
    REVOCATION,
    SECURITY_REGRESSION,
    UNANNOUNCED_RELEASE,
)


async def submit(log: LogUnderTest, session: ClientSession, *entries: bytes) -> None:
    """Log ``entries`` one after the other (so their indexes are in this order)."""
    for entry in entries:
        status, body = await log.submit(session, entry)
        assert status == 200, body


async def alerts(session: ClientSession, monitor: MonitorUnderTest) -> list[dict[str, Any]]:
    async with session.get(f"{monitor.base}/v1/alerts") as resp:
        assert resp.status == 200
        found: list[dict[str, Any]] = await resp.json()
        return found


def kinds(found: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(a["index"], a["kind"]) for a in found]


def digest(image: bytes) -> str:
    return hashlib.sha256(image).hexdigest()


def signed(body: Any) -> bytes:
    return sign_entry(body, [VENDOR_KEY])


async def caught_up(monitor: MonitorUnderTest, size: int) -> None:
    await eventually(lambda: monitor.watched.progress.next_index == size, what=f"{size} entries")


async def test_each_content_alert_with_its_index_newest_first(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    first = signed(release("1.0"))
    rotated = generate_key("acme.example/release-2")
    await submit(
        log,
        session,
        admission(log.operator),  # 0
        first,  # 1: security_version 1
        signed(release("2.0")),  # 2: security_version 2
        signed(release("2.0", image=b"another image")),  # 3: a second 2.0
        signed(release("1.5", security_version=1)),  # 4: back to 1 on stable
        signed(release("0.9", security_version=0, channel="beta")),  # 5: another channel
        signed(release("1.0", product="switch-42")),  # 6: another product
        signed(Revocation(VENDOR, parse_entry(first).identity.hex(), "bricks devices")),  # 7
        signed(KeySet(VENDOR, (rotated.verifier.vkey,), 1, 2)),  # 8
    )
    monitor = MonitorUnderTest(tmp_path / "m", log.base, log.verifier, [log.operator.verifier])
    await monitor.start()
    try:
        await caught_up(monitor, 9)
        found = await alerts(session, monitor)
        assert kinds(found) == [
            (8, KEY_ROTATION),
            (7, REVOCATION),
            (4, SECURITY_REGRESSION),
            (3, DUPLICATE_VERSION),
        ]
        assert "serial 2" in found[0]["detail"]
        assert "(index 1)" in found[1]["detail"]
        assert "index 2" in found[2]["detail"]
        assert "index 1" in found[3]["detail"] or "index 2" in found[3]["detail"]
        async with session.get(f"{monitor.base}/metrics") as resp:
            text = await resp.text()
        assert f'firmlog_monitor_alerts_total{{kind="{DUPLICATE_VERSION}"}} 1' in text
    finally:
        await monitor.stop()


async def test_a_stolen_key_release_of_a_watched_vendor_is_an_alert(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    announced = tmp_path / "announced.txt"
    announced.write_text(f"# acme's releases\n{digest(b'v1 image').upper()}\n\n")
    await submit(
        log,
        session,
        admission(log.operator),  # 0
        admission(log.operator, "other.example"),  # 1
        signed(release("1.0", image=b"v1 image")),  # 2: announced
    )
    monitor = MonitorUnderTest(
        tmp_path / "m",
        log.base,
        log.verifier,
        [log.operator.verifier],
        watch_vendors=((VENDOR, announced),),
    )
    await monitor.start()
    try:
        await caught_up(monitor, 3)
        assert await alerts(session, monitor) == []
        # Whoever holds acme's key can log a release the log, the ledger and any
        # device accept: only acme's own list of what it released says otherwise.
        await submit(log, session, signed(release("1.1", image=b"backdoored")))  # 3
        await caught_up(monitor, 4)
        found = await alerts(session, monitor)
        assert kinds(found) == [(3, UNANNOUNCED_RELEASE)]
        assert digest(b"backdoored") in found[0]["detail"]

        # The vendor announces its next release: the file is read again.
        with announced.open("a") as f:
            f.write(f"{digest(b'v2 image')}\n")
        await submit(
            log,
            session,
            signed(release("2.0", image=b"v2 image")),  # 4: announced now
            signed(release("2.1", image=b"not announced")),  # 5
            signed(release("1.0", "other.example", image=b"x")),  # 6: not a watched vendor
        )
        await caught_up(monitor, 7)
        assert kinds(await alerts(session, monitor)) == [
            (5, UNANNOUNCED_RELEASE),
            (3, UNANNOUNCED_RELEASE),
        ]
    finally:
        await monitor.stop()


async def test_alert_command_and_alerts_survive_a_restart(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    out = tmp_path / "alerts.jsonl"
    command = f"cat >> {shlex.quote(str(out))}"
    await submit(
        log,
        session,
        admission(log.operator),  # 0
        signed(release("1.0")),  # 1
        signed(release("1.0", image=b"again")),  # 2: duplicate
    )
    data = tmp_path / "m"
    monitor = MonitorUnderTest(
        data, log.base, log.verifier, [log.operator.verifier], alert_command=command
    )
    await monitor.start()
    try:
        await caught_up(monitor, 3)
        await eventually(lambda: out.exists() and out.read_text().count("\n") == 1, what="run")
    finally:
        await monitor.stop()
    (line,) = out.read_text().splitlines()
    sent = json.loads(line)
    assert (sent["index"], sent["kind"], sent["origin"]) == (
        2,
        DUPLICATE_VERSION,
        log.verifier.name,
    )

    await submit(log, session, signed(release("0.5", security_version=0)))  # 3: regression
    again = MonitorUnderTest(
        data, log.base, log.verifier, [log.operator.verifier], alert_command=command
    )
    await again.start()
    try:
        await caught_up(again, 4)
        await eventually(lambda: out.read_text().count("\n") == 2, what="second run")
        # The remembered first release of 1.0 and security_version survived too.
        assert kinds(await alerts(session, again)) == [
            (3, SECURITY_REGRESSION),
            (2, DUPLICATE_VERSION),
        ]
    finally:
        await again.stop()
    assert [json.loads(x)["index"] for x in out.read_text().splitlines()] == [2, 3]
    with sqlite3.connect(data / "monitor.db") as db:
        assert db.execute("SELECT count(*) FROM alerts").fetchone() == (2,)
        assert db.execute("SELECT count(*) FROM release_versions").fetchone() == (2,)


async def test_an_alert_stored_before_the_command_ran_is_handed_over_at_start(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    """The alert command reads the store: an alert kept while no command ran for it
    (as after a crash right after the commit) reaches it at the next start, once."""
    await submit(
        log,
        session,
        admission(log.operator),
        signed(release("1.0")),
        signed(release("1.0", image=b"again")),  # 2: duplicate
    )
    data = tmp_path / "m"
    monitor = MonitorUnderTest(data, log.base, log.verifier, [log.operator.verifier])
    await monitor.start()
    try:
        await caught_up(monitor, 3)
    finally:
        await monitor.stop()
    with sqlite3.connect(data / "monitor.db") as db:
        assert db.execute("SELECT idx, notified FROM alerts").fetchall() == [(2, 0)]
    out = tmp_path / "alerts.jsonl"
    command = f"cat >> {shlex.quote(str(out))}"
    for _ in range(2):  # the second start hands over nothing again
        again = MonitorUnderTest(
            data, log.base, log.verifier, [log.operator.verifier], alert_command=command
        )
        await again.start()
        try:
            await eventually(out.exists, what="the alert command")
            await caught_up(again, 3)
        finally:
            await again.stop()
    assert [json.loads(x)["index"] for x in out.read_text().splitlines()] == [2]
    with sqlite3.connect(data / "monitor.db") as db:
        assert db.execute("SELECT idx, notified FROM alerts").fetchall() == [(2, 1)]


async def test_a_failing_alert_command_is_not_fatal(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    await submit(
        log,
        session,
        admission(log.operator),
        signed(release("1.0")),
        signed(Revocation(VENDOR, parse_entry(signed(release("1.0"))).identity.hex(), "bad")),
    )
    monitor = MonitorUnderTest(
        tmp_path / "m",
        log.base,
        log.verifier,
        [log.operator.verifier],
        alert_command="exit 3",
    )
    await monitor.start()
    try:
        await caught_up(monitor, 3)
        assert kinds(await alerts(session, monitor)) == [(2, REVOCATION)]
        assert monitor.watched.last_error is None
    finally:
        await monitor.stop()


async def refusal(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "firmlog.monitor.cli", "run", *args, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    return err.decode()


async def test_run_refuses_a_watched_vendor_without_its_announced_file(tmp_path: Path) -> None:
    common = [
        "--data-dir",
        str(tmp_path / "m"),
        "--log-url",
        "http://127.0.0.1:9",
        "--log-key",
        generate_key("log.example").verifier.vkey,
    ]
    err = await refusal(*common, "--watch-vendor", VENDOR)
    assert err.startswith("firmlog-monitor: give each --watch-vendor")
    missing = tmp_path / "missing.txt"
    err = await refusal(*common, "--watch-vendor", VENDOR, "--announced", str(missing))
    assert err.startswith(f"firmlog-monitor: --announced {missing} ")
