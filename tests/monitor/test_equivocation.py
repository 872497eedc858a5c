"""Equivocation end to end: one log key, two histories, three monitors, real processes.

Two ``firmlog-server serve`` processes share one log key and one history:
the SQLite data dir of the first is copied after a few entries, and both
then serve with the same key and grow apart (a log showing a split view).
Three ``firmlog-monitor run`` processes watch them: two follow the first
server, one follows the other (the victim of the split view).

- With gossip (``--peer``, ``--gossip-interval``): every monitor holds
  evidence within two gossip rounds of having verified its own branch, and
  ``firmlog evidence verify`` (the real CLI, on each item ``/v1/evidence``
  serves) exits 0 for each. Both kinds: same size with different roots, and
  different sizes (the two notes, and the root at the smaller size and the
  consistency proof, from the monitor's own verified tree). Each monitor
  runs ``--alert-command`` once, with a ``split-view`` alert carrying the
  evidence, logs it (critical), counts it in /metrics and shows it in
  /healthz and /v1/alerts.
- With witnessing (both servers ``--witness-policy``, 2 of the 3 monitors,
  no gossip): the witnesses alone catch it. Each records evidence when a log
  sends it a validly signed checkpoint that contradicts the one it cosigned;
  a device with the 2-of-3 policy refuses every bundle of the branch only
  one monitor saw; and after the evidence no new checkpoint of either server
  gets a quorum.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.entries import admission
from support.merkle import LevelsReader
from support.processes import (
    LogProcess,
    MonitorProcess,
    Process,
    firmlog_cli,
    free_port,
    running,
    until,
)

from firmlog.client.bundle import ProofBundle
from firmlog.client.checkpoint import open_checkpoint
from firmlog.client.errors import QuorumError
from firmlog.client.evidence import DIFFERENT_SIZES, SAME_SIZE, SplitViewEvidence
from firmlog.client.keys import Ed25519Signer, Ed25519Verifier
from firmlog.client.merkle import inclusion_proof, leaf_hash, verify_inclusion
from firmlog.client.policy import Policy, parse_policy
from firmlog.monitor.datadir import init_data_dir

pytestmark = pytest.mark.timeout(60)

ORIGIN = "equivocation.firmlog.example/log"
GOSSIP_S = 1.0  # --gossip-interval of the gossip runs
TWO_ROUNDS_S = 2 * GOSSIP_S + 3.0  # two rounds, and time to check what they brought (busy CI)
COMMON = 2  # entries both servers share


def entry(operator: Ed25519Signer, tag: str, i: int) -> bytes:
    return admission(operator, f"{tag}-{i}.example")


async def grow(
    log: LogProcess, session: aiohttp.ClientSession, tag: str, count: int, want: int = 200
) -> list[bytes]:
    """Submit ``count`` new entries to ``log``, one at a time; each must get ``want``."""
    answers = []
    for i in range(count):
        status, body = await log.submit(session, entry(log.operator, tag, i))
        assert status == want, f"{log.data_dir.name}: {status} {body[:300]!r}"
        answers.append(body)
    return answers


async def fork(
    tmp_path: Path, procs: list[Process], policy: Path | None = None
) -> tuple[LogProcess, LogProcess]:
    """Server A with COMMON entries, stopped, its data dir copied to B; both started."""
    a = LogProcess(tmp_path / "log-a", ORIGIN, witness_policy=policy)
    procs.append(a)
    await a.start()
    async with aiohttp.ClientSession() as session:
        await grow(a, session, "common", COMMON)
    assert a.stop() == 0
    shutil.copytree(a.data_dir, tmp_path / "log-b")
    b = LogProcess(tmp_path / "log-b", ORIGIN, witness_policy=policy)
    procs.append(b)
    await asyncio.gather(a.start(), b.start())
    assert b.log_key.vkey == a.log_key.vkey
    return a, b


def alert_command(path: Path) -> str:
    return f"cat >> '{path}'"


def command_alerts(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def verify_with_cli(item: dict[str, Any], log_key: Ed25519Verifier, path: Path) -> str:
    """``firmlog evidence verify FILE --log-key VKEY`` on one item: must exit 0."""
    path.write_text(json.dumps(item))
    done = firmlog_cli("evidence", "verify", str(path), "--log-key", log_key.vkey)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr, item)
    return done.stdout


async def check_evidence(
    session: aiohttp.ClientSession,
    monitor: MonitorProcess,
    kind: str,
    log_key: Ed25519Verifier,
    tmp_path: Path,
) -> SplitViewEvidence:
    """The monitor holds exactly one item of evidence, of ``kind``, which the CLI accepts;
    it shows the split view in /healthz, /metrics and /v1/alerts."""
    items = await monitor.evidence(session)
    assert len(items) == 1, items
    (item,) = items
    assert item["kind"] == kind, item
    out = verify_with_cli(item, log_key, tmp_path / f"{monitor.data_dir.name}.evidence.json")
    assert out.startswith("split view proven: "), out
    evidence = SplitViewEvidence.from_json(item)
    if kind == DIFFERENT_SIZES:
        assert evidence.proof, item
        assert evidence.smaller_root is not None
    # The same item, made to prove nothing (both notes the same), is refused by the CLI.
    bogus = dict(item, notes=[item["notes"][0], item["notes"][0]], kind=SAME_SIZE, proof=[])
    bogus_file = tmp_path / "bogus.json"
    bogus_file.write_text(json.dumps(bogus))
    done = firmlog_cli("evidence", "verify", str(bogus_file), "--log-key", log_key.vkey)
    assert done.returncode != 0, done.stdout
    health = await monitor.health(session)
    assert health["status"] == "split-view", health
    assert "firmlog_monitor_split_views_total 1" in await monitor.metrics(session)
    kinds = [a["kind"] for a in await monitor.alerts(session)]
    assert kinds.count("split-view") == 1, kinds
    logged = [json.loads(x) for x in monitor.output().splitlines() if x.startswith("{")]
    assert any(
        r.get("level") == "critical" and r["event"].startswith("split view: ") for r in logged
    ), monitor.tail()
    return evidence


async def check_alert_command(path: Path, log_key: Ed25519Verifier, tmp_path: Path) -> None:
    """The alert command ran once for the split view, with the evidence on its stdin."""

    async def ran() -> bool:
        return any(a["kind"] == "split-view" for a in command_alerts(path))

    await until(ran, 10, f"the alert command to write {path}")
    found = [a for a in command_alerts(path) if a["kind"] == "split-view"]
    assert len(found) == 1, found
    assert found[0]["origin"] == ORIGIN
    verify_with_cli(found[0]["evidence"], log_key, tmp_path / "from-alert.json")


@pytest.fixture
def procs() -> Iterator[list[Process]]:
    with running() as started:
        yield started


def monitors_of(
    tmp_path: Path,
    a: LogProcess,
    b: LogProcess,
    *,
    gossip: bool,
    ports: list[int] | None = None,
) -> list[MonitorProcess]:
    """m1 and m2 follow server A, m3 follows server B; with ``gossip`` each peers the others."""
    ports = ports or [free_port() for _ in range(3)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    out = []
    for i, (port, log) in enumerate(zip(ports, (a, a, b), strict=True), 1):
        out.append(
            MonitorProcess(
                tmp_path / f"m{i}",
                log.base,
                a.log_key,
                name=f"m{i}.monitor.example/witness",
                port=port,
                operator_keys=[a.operator.verifier],
                peers=[u for j, u in enumerate(urls, 1) if j != i] if gossip else [],
                gossip_interval=GOSSIP_S if gossip else None,
                alert_command=alert_command(tmp_path / f"m{i}.alerts"),
            )
        )
    return out


async def verified(session: aiohttp.ClientSession, monitor: MonitorProcess, size: int) -> None:
    async def done() -> bool:
        return int((await monitor.health(session))["tree_size"]) >= size

    await until(done, 20, f"{monitor.data_dir.name} to verify tree size {size}")


async def hold_evidence(
    session: aiohttp.ClientSession, monitors: list[MonitorProcess], timeout: float
) -> float:
    async def all_hold() -> bool:
        found = await asyncio.gather(*(m.evidence(session) for m in monitors))
        return all(found)

    names = ", ".join(m.data_dir.name for m in monitors)
    return await until(all_hold, timeout, f"evidence at {names}")


async def test_gossip_same_size_split_view(tmp_path: Path, procs: list[Process]) -> None:
    a, b = await fork(tmp_path, procs)
    async with aiohttp.ClientSession() as session:
        await grow(a, session, "branch-a", 3)
        await grow(b, session, "branch-b", 3)  # both at COMMON + 3, two roots
        monitors = monitors_of(tmp_path, a, b, gossip=True)
        procs.extend(monitors)
        await asyncio.gather(*(m.start() for m in monitors))
        await asyncio.gather(*(verified(session, m, COMMON + 3) for m in monitors))
        took = await hold_evidence(session, monitors, TWO_ROUNDS_S)
        print(f"every monitor held evidence {took:.2f} s after verifying its branch")
        for m in monitors:
            await check_evidence(session, m, SAME_SIZE, a.log_key, tmp_path)
            await check_alert_command(tmp_path / f"{m.data_dir.name}.alerts", a.log_key, tmp_path)


async def test_gossip_different_sizes_split_view(tmp_path: Path, procs: list[Process]) -> None:
    a, b = await fork(tmp_path, procs)
    async with aiohttp.ClientSession() as session:
        await grow(a, session, "branch-a", 4)  # A: COMMON + 4
        await grow(b, session, "branch-b", 1)  # B: COMMON + 1, another entry there
        m1, m2, m3 = monitors = monitors_of(tmp_path, a, b, gossip=True)
        procs.extend(monitors)
        await asyncio.gather(*(m.start() for m in monitors))
        await asyncio.gather(
            verified(session, m1, COMMON + 4),
            verified(session, m2, COMMON + 4),
            verified(session, m3, COMMON + 1),
        )
        # m1 and m2 prove m3's smaller checkpoint is not a prefix of their tree.
        await hold_evidence(session, [m1, m2], TWO_ROUNDS_S)
        for m in (m1, m2):
            ev = await check_evidence(session, m, DIFFERENT_SIZES, a.log_key, tmp_path)
            trusted = open_checkpoint(ev.old_note, a.log_key).checkpoint
            assert trusted.tree_size == COMMON + 4  # the proof is from its own tree
        # m3 cannot prove the larger checkpoints it hears of (its log has no such tree)
        # and keeps nothing unproven; once its branch outgrows them, it proves them.
        assert await m3.evidence(session) == []
        # B grows one entry at a time, through A's size (COMMON + 4, another root: a
        # same-size split view) and COMMON + 5 (already larger): a running m3 that hears
        # A's checkpoint while it trusts either proves the split view there, rightly, and
        # then trusts nothing more of B's, so it would never verify COMMON + 6. m3 is
        # stopped while B grows, and verifies COMMON + 6 from its stored COMMON + 1.
        assert m3.stop() == 0
        await grow(b, session, "branch-b-more", 5)  # B: COMMON + 6
        await m3.start()
        await verified(session, m3, COMMON + 6)
        started = time.monotonic()
        await hold_evidence(session, [m3], TWO_ROUNDS_S)
        print(f"m3 held evidence {time.monotonic() - started:.2f} s after verifying its branch")
        ev = await check_evidence(session, m3, DIFFERENT_SIZES, a.log_key, tmp_path)
        trusted = open_checkpoint(ev.old_note, a.log_key).checkpoint
        assert trusted.tree_size == COMMON + 6
        for m in monitors:
            await check_alert_command(tmp_path / f"{m.data_dir.name}.alerts", a.log_key, tmp_path)


def witness_policy(tmp_path: Path, ports: list[int]) -> tuple[Path, list[str]]:
    """The servers' policy: the three monitors' keys and URLs, 2 of 3. The keys are
    created in the monitors' data dirs first (as a first start would)."""
    lines = []
    for i, port in enumerate(ports, 1):
        signer = init_data_dir(tmp_path / f"m{i}", f"m{i}.monitor.example/witness").signer
        lines.append(f"witness w{i} {signer.verifier.vkey} http://127.0.0.1:{port}")
    quorum = "group two-of-three 2 w1 w2 w3\nquorum two-of-three\n"
    path = tmp_path / "witnesses.policy"
    path.write_text("\n".join(lines) + "\n" + quorum)
    device = [line.rsplit(" ", 1)[0] for line in lines] + [quorum]
    return path, device


def refused(policy: Policy, bundle: bytes) -> None:
    """A device with ``policy`` refuses ``bundle``: too few cosignatures."""
    note = ProofBundle.parse(bundle).checkpoint
    with pytest.raises(QuorumError):
        policy.verify_checkpoint(note)


async def test_witnesses_catch_the_split_view_and_stop_the_quorum(
    tmp_path: Path, procs: list[Process]
) -> None:
    ports = [free_port() for _ in range(3)]
    policy_file, device_lines = witness_policy(tmp_path, ports)
    # m1 and m2 witness the common history (m3 is not running: 2 of 3 suffice).
    a = LogProcess(tmp_path / "log-a", ORIGIN, witness_policy=policy_file)
    procs.append(a)
    await a.start()
    m1, m2, m3 = monitors_of(tmp_path, a, a, gossip=False, ports=ports)
    procs.extend([m1, m2])
    await asyncio.gather(m1.start(), m2.start())
    device = parse_policy(f"log {a.log_key.vkey}\n" + "\n".join(device_lines))
    async with aiohttp.ClientSession() as session:
        for bundle in await grow(a, session, "common", COMMON):
            assert len(device.verify_checkpoint(ProofBundle.parse(bundle).checkpoint).witnesses)
        # The fork: A's data dir copied to B, both serving with the same key and policy.
        assert a.stop() == 0
        shutil.copytree(a.data_dir, tmp_path / "log-b")
        b = LogProcess(tmp_path / "log-b", ORIGIN, witness_policy=policy_file)
        procs.append(b)
        await asyncio.gather(a.start(), b.start())
        # Branch A grows by one entry, cosigned by m1 and m2: a device accepts it.
        (bundle_a,) = await grow(a, session, "branch-a", 1)
        verified_a = device.verify_checkpoint(ProofBundle.parse(bundle_a).checkpoint)
        assert set(verified_a.witnesses) == {"w1", "w2"}

        # m3 follows B. B grows by one other entry: only m3 cosigns it; m1 and m2,
        # sent a checkpoint of the size they cosigned with another root, keep evidence.
        m3.log_url = b.base
        procs.append(m3)
        await m3.start()
        status, body = await b.submit(session, entry(b.operator, "branch-b", 0))
        assert status == 503, body
        assert f"logged at index {COMMON}".encode() in body
        for m in (m1, m2):
            await check_evidence(session, m, SAME_SIZE, a.log_key, tmp_path)
        cosigned_b = await m3.cosigned(session)
        assert cosigned_b is not None
        assert open_checkpoint(cosigned_b, a.log_key).checkpoint.tree_size == COMMON + 1
        assert await m3.evidence(session) == []

        # B serves no bundle of its uncosigned tree; the best a split view can offer a
        # device is B's entries proven under m3's cosigned checkpoint, and it is refused.
        for index in range(COMMON + 1):
            status, raw = await b.get(session, f"v1/bundle/{index}?tree_size={COMMON + 1}")
            assert status == 404, raw
        branch_b = [entry(a.operator, "common", i) for i in range(COMMON)]
        branch_b.append(entry(b.operator, "branch-b", 0))
        tree = LevelsReader([leaf_hash(e) for e in branch_b]).at(COMMON + 1)
        root = open_checkpoint(cosigned_b, a.log_key).checkpoint.root_hash
        for index, raw_entry in enumerate(branch_b):
            proof = inclusion_proof(index, COMMON + 1, tree)
            verify_inclusion(leaf_hash(raw_entry), index, COMMON + 1, proof, root)
            refused(device, ProofBundle(index, proof, cosigned_b, raw_entry).format())
        status, note = await b.get(session, "checkpoint")
        assert status == 200  # B published nothing past the fork: the common history
        assert open_checkpoint(note, a.log_key).checkpoint.tree_size == COMMON

        # A grows again: m1 and m2 refuse (they proved a split view), and m3, sent a
        # consistency proof from the size it cosigned that leads from another root,
        # keeps that as evidence. No quorum: nothing is published.
        status, body = await a.submit(session, entry(a.operator, "branch-a-more", 0))
        assert status == 503, body
        ev = await check_evidence(session, m3, DIFFERENT_SIZES, a.log_key, tmp_path)
        assert open_checkpoint(ev.old_note, a.log_key).checkpoint.tree_size == COMMON + 1

        # From now on no checkpoint of this log, from either server, gets a quorum.
        for log, tag in ((a, "after-a"), (b, "after-b")):
            status, body = await log.submit(session, entry(log.operator, tag, 0))
            assert status == 503, body
        status, note = await a.get(session, "checkpoint")
        assert status == 200
        published = device.verify_checkpoint(note).signed.checkpoint
        assert published.tree_size == COMMON + 1  # A's last cosigned checkpoint
        for m in (m1, m2, m3):
            await check_alert_command(tmp_path / f"{m.data_dir.name}.alerts", a.log_key, tmp_path)
