"""Witness latency benchmark: c2sp.org/tlog-witness add-checkpoint on a real monitor,
open loop at a fixed rate, against a real log whose tree grows.

Run: ``.venv/bin/python loadtests/bench_witness_latency.py [--rate 200 --duration 30]``.

1. A log of ``--base`` realistic entries (bench_monitor_log.py; cached under
   ``$TMPDIR/firmlog-bench-monitor-log-<N>-v16/`` and copied for this run) is
   served by ``firmlog-server serve`` on 127.0.0.1; a ``firmlog-monitor run``
   follows it until it has verified and checked all of it. Its
   ``--poll-interval`` is an hour, so that from then on only add-checkpoint
   moves its trusted checkpoint.
2. The log grows by one entry per checkpoint, enough for the run (one
   storage integration each, as the server's sequencer would, each with its
   own signed checkpoint); the server is started again on the same port.
3. Requests go out at ``--rate`` per second for ``--warmup`` + ``--duration``
   seconds, each at its scheduled time whether or not earlier ones were
   answered (open loop, one aiohttp client, connections kept alive):
   three of four are valid: the next checkpoint of the log, ``old`` the size
   of the one sent before (after a 409: the size the monitor last cosigned,
   as a log does), with the consistency proof the log serves for it
   (fetched just before sending, not timed); one of four names an old size
   that is not the monitor's (the 409 path). A valid request that overtook
   the one before it gets 409 too (counted apart).
   Latency is from sending the request to reading the answer; lateness is
   how far behind its schedule a request went out.

Reported: p50/p99/max latency per kind, counts by status, the monitor's
CPU (cores) and RSS, and the latency of a 4 KiB fsync on the same disk
sampled every 20 ms meanwhile (the witness makes each cosigned checkpoint
durable before answering: the disk's stalls are its stalls). Goal: p99 <=
20 ms. Only 127.0.0.1 is contacted; every process is stopped and the
copies removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from bench_monitor_log import BuiltLog, append, build_log, start_monitor
from load_harness import (
    LOOPBACK,
    VENV_BIN,
    RssSampler,
    ServerProcess,
    cpu_seconds,
    http_get,
    print_table,
    start_log_server,
)

from firmlog.client.checkpoint import Checkpoint
from firmlog.client.note import split_note


def healthz(base: str) -> dict[str, object]:
    body: dict[str, object] = json.loads(http_get(base + "/healthz"))
    return body


def wait_for(what: str, predicate: object, timeout: float) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def restart_server(log: BuiltLog, port: int, log_path: Path) -> ServerProcess:
    argv = [
        str(VENV_BIN / "firmlog-server"),
        "serve",
        "--data-dir",
        str(log.data_dir),
        "--listen",
        f"{LOOPBACK}:{port}",
        "--database",
        log.url,
        "--log-level",
        "warning",
        "--log-json",
    ]
    server = ServerProcess(argv, port, log_path, "/healthz")
    server.wait_ready()
    return server


class FsyncProbe(threading.Thread):
    """Writes 4 KiB and fsyncs it every 20 ms on the monitor's file system, timing the
    fsync: what the disk does to the witness's durable writes, apart from the code."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.ms: list[float] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while not self._stop_event.wait(0.02):
                os.pwrite(fd, os.urandom(4096), 0)
                t0 = time.perf_counter()
                os.fsync(fd)
                self.ms.append((time.perf_counter() - t0) * 1000)
        finally:
            os.close(fd)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def size_of(note: bytes) -> int:
    return Checkpoint.parse(split_note(note)[0]).tree_size


@dataclass
class Results:
    valid_ms: list[float] = field(default_factory=list)  # 200
    stale_ms: list[float] = field(default_factory=list)  # deliberate 409
    raced_ms: list[float] = field(default_factory=list)  # valid, but 409: raced
    late_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(
    log_base: str,
    witness: str,
    notes: list[bytes],
    rate: float,
    warmup: float,
    duration: float,
    results: Results,
) -> None:
    """Open-loop add-checkpoint requests; records those sent after ``warmup``."""
    sizes = [size_of(n) for n in notes]
    acked = {"index": 0}  # the index in notes of the newest checkpoint the witness cosigned
    chain = {"sent": 0}  # and of the newest one sent
    next_step = 1
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def proof(old: int, new: int) -> list[bytes]:
            url = f"{log_base}/v1/proof/consistency?old={old}&new={new}"
            async with session.get(url) as resp:
                body = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"{url}: {resp.status} {body}")
                return [base64.b64decode(h) for h in body["hashes"]]

        async def one(kind: str, step: int, recorded: bool, scheduled: float) -> None:
            if kind == "valid":
                # As a log does: old is the size it last sent this witness, or after
                # a 409 the size the witness last cosigned for it.
                base = chain["sent"]
                chain["sent"] = step
                old = sizes[base]
                hashes = following[step] if base == step - 1 else await proof(old, sizes[step])
                note = notes[step]
            else:  # an old size the witness does not have: 409
                base = acked["index"]
                hashes, note, old = [], notes[base], sizes[base] - 1
            body = f"old {old}\n".encode() + b"".join(base64.b64encode(h) + b"\n" for h in hashes)
            late = time.perf_counter() - scheduled
            t0 = time.perf_counter()
            async with session.post(f"{witness}/add-checkpoint", data=body + b"\n" + note) as r:
                await r.read()
                status = r.status
            ms = (time.perf_counter() - t0) * 1000
            if status == 200 and kind == "valid":
                acked["index"] = max(acked["index"], step)
            elif status == 409 and kind == "valid":
                chain["sent"] = acked["index"]
            if not recorded:
                return
            key = f"{kind} {status}"
            results.statuses[key] = results.statuses.get(key, 0) + 1
            results.late_ms.append(late * 1000)
            if kind == "valid" and status == 200:
                results.valid_ms.append(ms)
            elif kind == "valid" and status == 409:
                results.raced_ms.append(ms)
            elif kind == "stale" and status == 409:
                results.stale_ms.append(ms)
            else:
                results.errors.append(f"{kind}: {status}")

        # The proofs from each checkpoint to the next, fetched before the clock starts.
        sem = asyncio.Semaphore(8)

        async def fetch_following(step: int) -> list[bytes]:
            async with sem:
                return await proof(sizes[step - 1], sizes[step])

        following = [[], *await asyncio.gather(*map(fetch_following, range(1, len(notes))))]
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter() + 0.1
        total = int((warmup + duration) * rate)
        for j in range(total):
            scheduled = start + j / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            kind = "stale" if j % 4 == 3 else "valid"
            if kind == "valid":
                if next_step >= len(notes):
                    raise RuntimeError("ran out of checkpoints: grow the log by more (--steps)")
                step, next_step = next_step, next_step + 1
            else:
                step = 0
            tasks.append(asyncio.create_task(one(kind, step, j >= warmup * rate, scheduled)))
        await asyncio.gather(*tasks)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--base", type=int, default=10_000, help="entries before the run (10^4)")
    p.add_argument("--rate", type=float, default=200, help="requests per second (200)")
    p.add_argument("--duration", type=float, default=30, help="recorded seconds (30)")
    p.add_argument("--warmup", type=float, default=3, help="unrecorded seconds first (3)")
    args = p.parse_args()
    steps = int((args.warmup + args.duration) * args.rate * 3 / 4) + 10

    cached, _ = build_log(args.base, 16)
    workdir = Path(tempfile.mkdtemp(prefix="firmlog-bench-witness-"))
    all_results: list[tuple[Results, float, float]] = []
    fsync: list[float] = []
    try:
        log = BuiltLog(workdir / "log", args.base, 16)
        shutil.copytree(cached.dir, log.dir)
        server = start_log_server(log.data_dir, log.url, workdir / "server.log", "warning")
        monitor = None
        try:
            monitor = start_monitor(
                workdir / "monitor", server.base, workdir / "monitor.log", poll_interval=3600
            )
            m = monitor
            wait_for(
                "the monitor to check the log",
                lambda: healthz(m.base)["checked_entries"] == args.base,
                600,
            )
            first = http_get(server.base + "/checkpoint")  # what the monitor trusts now
            if size_of(first) != args.base:
                raise RuntimeError(f"the log has {size_of(first)} entries, not {args.base}")
            port = server.port
            server.stop()
            t0 = time.perf_counter()
            notes = asyncio.run(
                append(log.url, args.base, args.base + steps, 16, 1, 2, steps=steps)
            )
            print(
                f"grew the log by {steps:,} checkpoints in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
            server = restart_server(log, port, workdir / "server.log")
            results = Results()
            rss = RssSampler(m.pid)
            rss.start()
            probe = FsyncProbe(workdir / "fsync-probe")
            probe.start()
            cpu0, wall0 = cpu_seconds(m.pid), time.perf_counter()
            asyncio.run(
                load(
                    server.base,
                    m.base,
                    [first, *notes],
                    args.rate,
                    args.warmup,
                    args.duration,
                    results,
                )
            )
            cores = (cpu_seconds(m.pid) - cpu0) / (time.perf_counter() - wall0)
            rss.stop()
            probe.stop()
            all_results.append((results, cores, rss.peak))
            fsync = probe.ms
        finally:
            if monitor is not None:
                monitor.stop()
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rows = []
    for results, cores, rss_peak in all_results:
        for kind, values in (
            ("valid, 200", results.valid_ms),
            ("stale old, 409", results.stale_ms),
            ("valid but raced, 409", results.raced_ms),
        ):
            rows.append(
                [
                    kind,
                    len(values),
                    statistics.median(values) if values else float("nan"),
                    pct(values, 0.99),
                    max(values, default=float("nan")),
                    pct(results.late_ms, 0.99),
                    cores,
                    rss_peak,
                ]
            )
        if results.errors:
            print(f"unexpected answers: {results.errors[:10]} ({len(results.errors)})")
        print("statuses:", results.statuses)
        every = results.valid_ms + results.stale_ms + results.raced_ms
        print(
            f"all answers: p50 {statistics.median(every):.2f} ms, p99 {pct(every, 0.99):.2f} ms, "
            f"max {max(every):.2f} ms over {len(every):,} requests"
        )
    print_table(
        f"add-checkpoint at {args.rate:.0f}/s open loop, {args.duration:.0f} s recorded "
        f"(log of {args.base:,} + growing)",
        [
            "requests",
            "n",
            "p50 ms",
            "p99 ms",
            "max ms",
            "lateness p99 ms",
            "monitor cores",
            "RSS peak MiB",
        ],
        rows,
    )
    print(
        f"fsync of 4 KiB on the same disk meanwhile (every 20 ms): p50 "
        f"{statistics.median(fsync):.1f} ms, p99 {pct(fsync, 0.99):.1f} ms, max {max(fsync):.1f} ms"
    )
    print("goal: p99 <= 20 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
