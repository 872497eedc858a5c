"""Crash safety of the monitor: ``firmlog-monitor run`` killed with SIGKILL while busy.

One real log server grows all the time (releases of one vendor, every fifth
one a second release of an earlier version: a ``duplicate-version`` alert at
a known index). One real monitor follows it, runs ``--alert-command``, and
witnesses it: the test sends it ``add-checkpoint`` requests all along, with
consistency proofs from the size it last answered. The monitor is killed
with SIGKILL at random moments (seeded; ``FIRMLOG_CRASH_SEED`` replays them)
and restarted on the same data dir each time. Then:

- after every kill, restarted with the log out of its reach, an
  add-checkpoint from an older size is refused with 409 and the size it
  knows, never below the largest it cosigned before the kill; and no answer
  ever rolled back (it could cosign a fork otherwise);
- every cosignature it gave verifies, one root per tree size;
- at the end it has checked every entry (its ``checked_entries`` is the tree
  size), and ``/v1/alerts`` holds exactly one alert for each planted entry
  (nothing checked twice into alerts, nothing skipped), each of which the
  alert command was given;
- a validly signed checkpoint of the size it cosigned with another root is
  refused (409, the size) and kept as evidence; killed right after, the
  restarted monitor still holds the evidence and its alert, and cosigns
  nothing of the log any more (403).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from support.entries import VENDOR, VENDOR_KEY, admission, release
from support.processes import LogProcess, MonitorProcess, Process, firmlog_cli, running, until

from firmlog.client.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from firmlog.client.cosignature import parse_witness_verifier_key
from firmlog.client.entries import sign_entry
from firmlog.client.keys import parse_signer_key
from firmlog.client.note import split_note

pytestmark = pytest.mark.timeout(60)

ORIGIN = "crash.firmlog.example/log"
KILLS = 4
KILL_AFTER_S = (0.3, 1.2)  # each kill this long after the monitor answered /healthz
SIZE_TYPE = "text/x.tlog.size"
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing answers


@dataclass
class Witnessing:
    """What the test learnt from the monitor as a witness."""

    known: int = 0  # the size the monitor said it knows, or cosigned, last
    cosigned_max: int = 0  # the largest size it ever cosigned
    roots: dict[int, bytes] = field(default_factory=dict)  # cosigned size -> root
    cosignatures: int = 0
    refusals_409: int = 0


async def add_checkpoint(
    session: aiohttp.ClientSession,
    monitor: MonitorProcess,
    old: int,
    proof: list[bytes],
    note: bytes,
) -> tuple[int, str, bytes]:
    body = f"old {old}\n".encode() + b"".join(base64.b64encode(h) + b"\n" for h in proof)
    async with session.post(f"{monitor.base}/add-checkpoint", data=body + b"\n" + note) as resp:
        return resp.status, resp.content_type, await resp.read()


async def consistency(
    session: aiohttp.ClientSession, log: LogProcess, old: int, new: int
) -> list[bytes]:
    status, body = await log.get(session, f"v1/proof/consistency?old={old}&new={new}")
    assert status == 200, body
    return [base64.b64decode(h) for h in json.loads(body)["hashes"]]


async def witness_once(
    session: aiohttp.ClientSession, log: LogProcess, monitor: MonitorProcess, w: Witnessing
) -> None:
    """Send the log's checkpoint to the monitor, from the size it knows; check the answer."""
    status, note = await log.get(session, "checkpoint")
    assert status == 200, note
    cp = open_checkpoint(note, log.log_key).checkpoint
    old = min(w.known, cp.tree_size)
    proof = await consistency(session, log, old, cp.tree_size) if 0 < old < cp.tree_size else []
    status, ctype, body = await add_checkpoint(session, monitor, old, proof, note)
    if status == 200:
        text, _ = split_note(note)
        witness = parse_witness_verifier_key(monitor.witness_vkey)
        _, (sig,) = split_note(text.encode() + b"\n" + body)
        assert (sig.name, sig.key_id) == (witness.name, witness.key_id), body
        assert witness.verify(text.encode(), sig.signature), "a cosignature that does not verify"
        assert w.roots.setdefault(cp.tree_size, cp.root_hash) == cp.root_hash
        w.cosigned_max = max(w.cosigned_max, cp.tree_size)
        w.known = cp.tree_size
        w.cosignatures += 1
    elif status == 409:
        assert ctype == SIZE_TYPE, (ctype, body)
        size = int(body.decode().strip())
        assert size >= w.cosigned_max, (
            f"the witness says it knows size {size}, but it cosigned {w.cosigned_max} before: "
            "its state rolled back"
        )
        w.known = size
        w.refusals_409 += 1
    else:
        raise AssertionError(f"add-checkpoint: {status} {body[:300]!r}")


def entries(operator_key: str, count: int) -> tuple[list[bytes], set[int]]:
    """The admission of VENDOR, then releases; every fifth one repeats an earlier
    version with another image. Returns the entries and the indexes that must alert."""
    operator = parse_signer_key(operator_key)
    out = [admission(operator, VENDOR)]
    planted = set()
    for i in range(1, count):
        if i % 5 == 0:
            body = release(f"1.{i - 3}", image=b"another image %d" % i)
            planted.add(i)
        else:
            body = release(f"1.{i}")
        out.append(sign_entry(body, [VENDOR_KEY]))
    return out, planted


@pytest.fixture
def procs() -> Iterator[list[Process]]:
    with running() as started:
        yield started


async def test_sigkill_loses_nothing_and_never_rolls_back(
    tmp_path: Path, procs: list[Process]
) -> None:
    seed = int(os.environ.get("FIRMLOG_CRASH_SEED", str(random.randrange(1 << 32))))
    print(f"FIRMLOG_CRASH_SEED={seed}")
    rng = random.Random(seed)
    log = LogProcess(tmp_path / "log", ORIGIN)
    procs.append(log)
    await log.start()
    delivered = tmp_path / "alerts.jsonl"
    monitor = MonitorProcess(
        tmp_path / "monitor",
        log.base,
        log.log_key,
        name="crash.monitor.example/witness",
        operator_keys=[log.operator.verifier],
        poll_interval=0.05,
        alert_command=f"cat >> '{delivered}'",
    )
    procs.append(monitor)
    log_signer = parse_signer_key((log.data_dir / "log.key").read_text().strip())
    todo, planted = entries(log.operator.skey, 400)
    w = Witnessing()
    stop = asyncio.Event()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        status, body = await log.submit(session, todo[0])  # the admission, first
        assert status == 200, body
        submitted = 1

        async def submit_all() -> None:
            nonlocal submitted
            while submitted < len(todo) and not stop.is_set():
                batch = todo[submitted : submitted + 4]
                answers = await asyncio.gather(*(log.submit(session, e) for e in batch))
                assert all(s == 200 for s, _ in answers), answers[:2]
                submitted += len(batch)
                await asyncio.sleep(0.02)

        async def witness_all() -> None:
            while not stop.is_set():
                try:
                    await witness_once(session, log, monitor, w)
                except (aiohttp.ClientConnectionError, TimeoutError):
                    await asyncio.sleep(0.02)  # the monitor is down
                await asyncio.sleep(0.01)

        await monitor.start()
        workers = [asyncio.create_task(submit_all()), asyncio.create_task(witness_all())]
        try:
            for kill in range(KILLS):
                await asyncio.sleep(rng.uniform(*KILL_AFTER_S))
                for task in workers:
                    if task.done():
                        task.result()  # raise what failed
                monitor.kill()
                before = w.cosigned_max
                # Restarted with the log out of its reach (so that following it cannot
                # hide a lost state), from an older size: 409 and a size no smaller than
                # it cosigned before the kill. Then killed again, and restarted for real.
                monitor.log_url = NOWHERE
                await monitor.start()
                status, note = await log.get(session, "checkpoint")
                status, ctype, body = await add_checkpoint(session, monitor, 0, [], note)
                known = int(body.decode()) if status == 409 else -1
                assert (status, ctype) == (409, SIZE_TYPE), (kill, status, body)
                assert known >= before, f"restart {kill + 1}: knows {known}, cosigned {before}"
                monitor.kill()
                monitor.log_url = log.base
                await monitor.start()

            # Let the log finish growing, and the monitor catch up.
            async def submitted_all() -> bool:
                if workers[0].done():
                    workers[0].result()
                return workers[0].done()

            await until(submitted_all, 30, "the submissions to end")
        finally:
            stop.set()
            for task in workers:
                task.cancel()
            results = await asyncio.gather(*workers, return_exceptions=True)
        for r in results:
            if not isinstance(r, asyncio.CancelledError | type(None)):
                raise r
        status, note = await log.get(session, "checkpoint")
        final = open_checkpoint(note, log.log_key).checkpoint
        assert final.tree_size == len(todo)

        async def caught_up() -> bool:
            h = await monitor.health(session)
            return bool(h["checked_entries"] == h["tree_size"] == final.tree_size)

        await until(caught_up, 20, "the monitor to check every entry")
        print(
            f"{KILLS} kills; {w.cosignatures} cosignatures up to size {w.cosigned_max}, "
            f"{w.refusals_409} answers 409"
        )
        assert w.cosignatures > 0

        # Exactly one alert per planted entry: none twice, none skipped.
        found = [(a["index"], a["kind"]) for a in await monitor.alerts(session)]
        assert sorted(found) == sorted((i, "duplicate-version") for i in planted)

        async def all_delivered() -> bool:
            lines = [json.loads(x) for x in delivered.read_text().splitlines() if x.strip()]
            return {(a["index"], a["kind"]) for a in lines} == set(found)

        await until(all_delivered, 10, "the alert command to be given every alert")

        # A validly signed checkpoint of the size it knows with another root: 409 and
        # evidence, kept through a SIGKILL right after; then nothing is cosigned.
        status, ctype, body = await add_checkpoint(session, monitor, 0, [], note)
        known = int(body.decode())
        fork = Checkpoint(ORIGIN, known, hashlib.sha256(b"another tree").digest())
        status, ctype, body = await add_checkpoint(
            session, monitor, known, [], sign_checkpoint(fork, log_signer)
        )
        assert (status, ctype, body) == (409, SIZE_TYPE, f"{known}\n".encode())
        monitor.kill()
        await monitor.start()
        (item,) = await monitor.evidence(session)
        (tmp_path / "evidence.json").write_text(json.dumps(item))
        done = firmlog_cli(
            "evidence", "verify", str(tmp_path / "evidence.json"), "--log-key", log.log_key.vkey
        )
        assert done.returncode == 0, done.stderr
        kinds = [a["kind"] for a in await monitor.alerts(session)]
        assert kinds.count("split-view") == 1, kinds
        status, ctype, body = await add_checkpoint(session, monitor, known, [], note)
        assert status == 403, body
        assert (await monitor.health(session))["status"] == "split-view"
