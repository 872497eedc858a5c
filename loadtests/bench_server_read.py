"""Read benchmark: inclusion proofs and tiles per second, latency and memory as the log grows.

Run: ``.venv/bin/python loadtests/bench_server_read.py`` (needs Debian's ``wrk``:
``apt-get update && apt-get install -y wrk``; PostgreSQL on 127.0.0.1:5432 for
``--backend postgres``, or set FIRMLOG_BENCH_PG to an admin URL).

For each size in ``--sizes`` (ascending) the log is first grown to that size
in bulk, not over HTTP: this process drives firmlog.server's own Sequencer
and storage (batches of ``--bulk-batch`` entries, one transaction each),
with synthetic entries of about the size of a real one (the read path never
parses entries). ``--bulk-mode direct`` (default) writes each batch in one
storage integration exactly as the Sequencer does, minus the bundle it
proves and formats for every entry; ``--bulk-mode sequencer`` drives the
Sequencer itself. Then ``firmlog-server serve --workers W`` is started on
that database, once for each W in ``--workers`` (default 1: one process),
and measured with wrk, ``--runs`` times, each run measuring in turn:

- ``GET /v1/proof/inclusion?index=I&tree_size=N``, I uniform at random;
- ``GET /tile/0/<K>``, K uniform over the full level-0 tiles;
- ``GET /bare`` on a bare aiohttp handler answering a fixed 1 KiB body
  (load_bare_server.py): the framework's ceiling on this machine, with the
  same wrk settings, in the same run; the other two are quoted as ratios to it;
- proof latency with one connection (``-c1``): the service time, without queueing,
  and the server's CPU time per proof then (steadier than latency on a busy machine).

Each measurement follows a short unrecorded warm-up. The server's VmRSS
(/proc/<pid>/status; with workers, the sum of the supervisor's and its
workers') is sampled every 0.5 s during the read load, and its CPU is theirs
together. A sample
of proofs is verified against the signed checkpoint. Growth stops early
when the next size would take more than ``--max-bulk-seconds`` to load
(estimated from the rate so far); what it would take is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from load_harness import (
    LOOPBACK,
    REPO,
    RssSampler,
    ServerProcess,
    children_cpu_s,
    cpu_seconds,
    find_py_spy,
    finish_wrk,
    http_get,
    median,
    need_wrk,
    pg_database,
    print_table,
    snapshot_sources,
    start_bare_server,
    start_log_server,
    start_wrk,
    vm_rss_mib,
    write_data_dir,
    wrk_command,
)

from firmlog.client.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from firmlog.client.integrate import edge_tiles, integrate
from firmlog.client.keys import Ed25519Signer, generate_key, parse_signer_key
from firmlog.client.merkle import EMPTY_ROOT, leaf_hash, verify_inclusion
from firmlog.client.tiles import TILE_WIDTH
from firmlog.server.config import SequencerConfig
from firmlog.server.reader import LogReader
from firmlog.server.sequencer import Sequencer
from firmlog.server.storage import EntryRow, LogState, open_storage

ORIGIN = "bench.firmlog.example/log"
ENTRY_PAD = b"." * 240


def synthetic_entry(i: int) -> bytes:
    """About the size of a signed vendor admission (~275 bytes); unique per index."""
    return b"firmlog-bench/synthetic/v1\n%d\n" % i + ENTRY_PAD


# -- bulk growth ----------------------------------------------------------------


async def grow_with_sequencer(
    url: str, log_key: Ed25519Signer, start: int, end: int, batch: int
) -> float:
    """Append entries start..end-1 through the server's own Sequencer; returns seconds.

    Exactly the write path minus HTTP; it also proves and formats a bundle for
    every entry, which is most of its cost.
    """
    storage = open_storage(url)
    await storage.open()
    try:
        # big enough for every tile one batch touches: proving a batch needs them all
        reader = LogReader(storage, cache_tiles=2 * batch // TILE_WIDTH + 64)
        config = SequencerConfig(batch_interval=0.01, batch_size=batch, pool_size=2 * batch)
        sequencer = Sequencer(storage, reader, log_key, config)
        await sequencer.initialize()
        latest = await reader.latest()
        if latest is None or latest.tree_size != start:
            raise RuntimeError(f"expected a log of {start} entries, found {latest}")
        task = asyncio.create_task(sequencer.run())
        t0 = time.perf_counter()
        try:
            for lo in range(start, end, batch):
                chunk = [synthetic_entry(i) for i in range(lo, min(end, lo + batch))]
                results = await asyncio.gather(*(sequencer.submit(e, leaf_hash(e)) for e in chunk))
                if results[-1].leaf_index != lo + len(chunk) - 1:
                    raise RuntimeError(f"entry {lo + len(chunk) - 1} got another index")
            return time.perf_counter() - t0
        finally:
            await sequencer.stop()
            await task
    finally:
        await storage.close()


async def grow_direct(url: str, log_key: Ed25519Signer, start: int, end: int, batch: int) -> float:
    """Append entries start..end-1 straight through the storage contract; returns seconds.

    The same transaction as Sequencer._integrate (entries, the hash tiles
    that changed, a signed checkpoint; one integration per batch, under the
    storage's own checks) without proving and formatting a bundle per entry.
    What it wrote is checked afterwards: proofs served by the server are
    verified against the signed checkpoint.
    """
    storage = open_storage(url)
    await storage.open()
    t0 = time.perf_counter()
    try:
        async with storage.integration() as tx:
            if not (await tx.state()).checkpoint:
                note = sign_checkpoint(Checkpoint(log_key.name, 0, EMPTY_ROOT), log_key)
                await tx.write_state(LogState(0, b"", note))
        for lo in range(start, end, batch):
            async with storage.integration() as tx:
                state = await tx.state()
                if state.tree_size != lo:
                    raise RuntimeError(f"expected a log of {lo} entries, found {state.tree_size}")
                entries = []
                for i in range(lo, min(end, lo + batch)):
                    e = synthetic_entry(i)
                    lh = leaf_hash(e)
                    entries.append(EntryRow(lh, lh, e))
                edge = edge_tiles(lo, lo + len(entries))
                stored = await tx.read_tiles([(t.level, t.index) for t in edge])
                tree = integrate(lo, state.right_edge, stored, [e.leaf_hash for e in entries])
                cp = Checkpoint(log_key.name, tree.tree_size, tree.root_hash)
                await tx.append_entries(lo, entries)
                await tx.write_tiles(tree.tiles)
                await tx.write_state(
                    LogState(tree.tree_size, tree.right_edge, sign_checkpoint(cp, log_key))
                )
        return time.perf_counter() - t0
    finally:
        await storage.close()


async def stored_size(url: str) -> int:
    """How many entries the log at ``url`` holds (0 for a new database)."""
    storage = open_storage(url)
    await storage.open()
    try:
        async with storage.integration() as tx:
            return (await tx.state()).tree_size
    finally:
        await storage.close()


# -- measurements -----------------------------------------------------------------


@dataclass
class SizeResult:
    size: int
    bulk_s: float
    workers: int = 1  # serve --workers
    proof_rps: list[float] = field(default_factory=list)
    tile_rps: list[float] = field(default_factory=list)
    bare_rps: list[float] = field(default_factory=list)
    proof_p50_ms: list[float] = field(default_factory=list)  # at --connections
    proof_p99_ms: list[float] = field(default_factory=list)
    c1_p50_ms: list[float] = field(default_factory=list)  # one connection
    c1_p99_ms: list[float] = field(default_factory=list)
    c1_cpu_us: list[float] = field(default_factory=list)  # server CPU per c=1 proof
    server_cores: list[float] = field(default_factory=list)  # during the proof load
    wrk_cores: list[float] = field(default_factory=list)
    rss_start_mib: float = 0.0
    rss_peak_mib: float = 0.0
    rss_end_mib: float = 0.0
    errors: int = 0
    profile: list[str] = field(default_factory=list)


def check_proofs(port: int, log_key: Ed25519Signer, size: int, samples: int) -> None:
    note = http_get(f"http://{LOOPBACK}:{port}/checkpoint")
    cp = open_checkpoint(note, log_key.verifier).checkpoint
    if cp.tree_size != size:
        raise AssertionError(f"checkpoint is for {cp.tree_size} entries, expected {size}")
    import base64

    for i in random.sample(range(size), min(samples, size)):
        body = json.loads(
            http_get(f"http://{LOOPBACK}:{port}/v1/proof/inclusion?index={i}&tree_size={size}")
        )
        proof = [base64.b64decode(h) for h in body["hashes"]]
        verify_inclusion(leaf_hash(synthetic_entry(i)), i, size, proof, cp.root_hash)


def wrk_once(
    base: str, args: argparse.Namespace, mode: list[str], duration: float, connections: int
) -> tuple[float, float, float, int, float]:
    """One wrk run: (ok/s, p50 ms, p99 ms, errors, wrk CPU seconds)."""
    argv = wrk_command(
        base,
        "load_wrk.lua",
        threads=min(args.wrk_threads, connections),
        connections=connections,
        duration=duration,
        timeout=args.wrk_timeout,
        script_args=mode,
    )
    cpu0 = children_cpu_s()
    r = finish_wrk(start_wrk(argv), duration)
    errors = r.errors.get("status", 0) + sum(
        r.errors.get(k, 0) for k in ("connect", "read", "write", "timeout")
    )
    return (
        r.ok_per_s,
        r.latency_us["p50"] / 1000,
        r.latency_us["p99"] / 1000,
        errors,
        children_cpu_s() - cpu0,
    )


def measure_size(
    res: SizeResult,
    server: ServerProcess,
    bare: ServerProcess,
    args: argparse.Namespace,
    log_key: Ed25519Signer,
    workdir: Path,
) -> None:
    size = res.size
    proof_mode = ["proof", str(size)]
    tiles = size // TILE_WIDTH
    tile_mode = ["tile", str(tiles)]
    bare_mode = ["get", "/bare"]
    check_proofs(server.port, log_key, size, 20)
    pids = server.pids()  # with --workers: the supervisor and its workers
    res.rss_start_mib = sum(vm_rss_mib(p) or 0.0 for p in pids)
    rss = RssSampler(server.pid)
    rss.start()
    spy: subprocess.Popen[bytes] | None = None
    raw = workdir / f"pyspy-{size}.txt"
    try:
        c = args.connections
        wrk_once(server.base, args, proof_mode, args.warmup, c)  # warm the tile caches
        if tiles:
            wrk_once(server.base, args, tile_mode, min(2, args.warmup), c)
        wrk_once(bare.base, args, bare_mode, min(2, args.warmup), c)
        for run in range(args.runs):
            if args.profile and run == 0:
                spy_path = find_py_spy(args.py_spy)
                if spy_path is None:
                    sys.exit("--profile needs py-spy (see --help)")
                spy = subprocess.Popen(
                    [
                        spy_path,
                        "record",
                        "-p",
                        str(server.pid),
                        "-d",
                        str(int(args.duration)),
                        "-r",
                        "50",
                        "--format",
                        "raw",
                        "-o",
                        str(raw),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            cpu0 = sum(cpu_seconds(p) for p in pids)
            t0 = time.monotonic()
            rps, p50, p99, err, wrk_cpu = wrk_once(server.base, args, proof_mode, args.duration, c)
            elapsed = time.monotonic() - t0
            if spy is not None:
                spy.wait(timeout=args.duration + 60)
                spy = None
            res.proof_rps.append(rps)
            res.proof_p50_ms.append(p50)
            res.proof_p99_ms.append(p99)
            res.server_cores.append((sum(cpu_seconds(p) for p in pids) - cpu0) / elapsed)
            res.wrk_cores.append(wrk_cpu / elapsed)
            res.errors += err
            if tiles:
                rps, _, _, err, _ = wrk_once(server.base, args, tile_mode, args.duration, c)
                res.tile_rps.append(rps)
                res.errors += err
            rps, _, _, err, _ = wrk_once(bare.base, args, bare_mode, args.duration, c)
            res.bare_rps.append(rps)
            res.errors += err
            cpu0 = sum(cpu_seconds(p) for p in pids)
            rps, p50, p99, err, _ = wrk_once(
                server.base, args, proof_mode, args.latency_duration, 1
            )
            served = rps * max(1, round(args.latency_duration))  # wrk runs whole seconds
            cpu = sum(cpu_seconds(p) for p in pids) - cpu0
            res.c1_cpu_us.append(cpu / served * 1e6 if served else float("nan"))
            res.c1_p50_ms.append(p50)
            res.c1_p99_ms.append(p99)
            res.errors += err
            print(
                f"  N={size:,} workers={res.workers} run {run + 1}: "
                f"proofs {res.proof_rps[-1]:,.0f}/s "
                f"(p50 {res.proof_p50_ms[-1]:.1f} ms, p99 {res.proof_p99_ms[-1]:.1f} ms), "
                f"tiles {res.tile_rps[-1] if tiles else float('nan'):,.0f}/s, "
                f"bare {res.bare_rps[-1]:,.0f}/s, c=1 proof p50 {res.c1_p50_ms[-1]:.2f} ms "
                f"p99 {res.c1_p99_ms[-1]:.2f} ms ({res.c1_cpu_us[-1]:.0f} µs server CPU each), "
                f"server {res.server_cores[-1]:.2f} cores, "
                f"RSS {sum(vm_rss_mib(p) or 0.0 for p in pids):.0f} MiB",
                flush=True,
            )
    finally:
        rss.stop()
        if spy is not None:
            spy.kill()
    res.rss_peak_mib = rss.peak
    res.rss_end_mib = rss.samples[-1] if rss.samples else 0.0
    if args.profile and raw.exists():
        from bench_server_write import profile_top

        res.profile = profile_top(raw)


@contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    if backend == "postgres":
        with pg_database() as url:
            yield url
    else:
        yield f"sqlite:///{workdir / 'firmlog.db'}"


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sizes", default="10000,100000,1000000", help="log sizes, ascending")
    p.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    p.add_argument("--duration", type=float, default=15, help="seconds per wrk measurement (15)")
    p.add_argument("--latency-duration", type=float, default=5, help="seconds of the c=1 run (5)")
    p.add_argument("--warmup", type=float, default=5, help="unrecorded warm-up seconds (5)")
    p.add_argument("--runs", type=int, default=3, help="repetitions per size (medians; 3)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--wrk-timeout", type=float, default=10, help="wrk request timeout (10 s)")
    p.add_argument("--bulk-batch", type=int, default=65536, help="entries per bulk transaction")
    p.add_argument(
        "--bulk-mode",
        default="direct",
        choices=["direct", "sequencer"],
        help="direct: the integration transaction without per-entry bundles (fast); "
        "sequencer: through firmlog.server's Sequencer (about 5x slower)",
    )
    p.add_argument(
        "--max-bulk-seconds",
        type=float,
        default=900,
        help="skip a size whose bulk load is estimated to take longer (900)",
    )
    p.add_argument(
        "--tile-cache",
        type=int,
        help="server limits.tile_cache_tiles (default: the server's default)",
    )
    p.add_argument("--profile", action="store_true", help="py-spy the server in run 1 per size")
    p.add_argument("--py-spy", help="path to py-spy (default: PATH, /tmp/benchtools/bin)")
    p.add_argument(
        "--no-snapshot",
        action="store_true",
        help="run servers from the live tree, not from a copy taken at start",
    )
    p.add_argument("--keep", action="store_true", help="keep the work dir (server logs, DB)")
    p.add_argument(
        "--workers",
        default="1",
        help="serve --workers list: each size is measured with each (1)",
    )
    p.add_argument("--json-out", type=Path, help="write the results as JSON here")
    p.add_argument(
        "--db-dir",
        type=Path,
        help="keep one SQLite log per size in DIR/<size>/ (database and data dir) and reuse "
        "it in later runs instead of loading it again; a smaller one is grown to the size",
    )
    p.add_argument(
        "--sources",
        type=Path,
        help="run the servers from a copy of this checkout's sources (default: this "
        "checkout), e.g. a checkout of main, for before/after figures on the same logs",
    )
    args = p.parse_args()
    need_wrk()
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    worker_counts = [int(w) for w in args.workers.split(",") if w]

    if args.db_dir and args.backend != "sqlite":
        p.error("--db-dir keeps SQLite databases: it needs --backend sqlite")

    workdir = Path(tempfile.mkdtemp(prefix="firmlog-bench-read-"))
    results: list[SizeResult] = []
    skipped: list[str] = []
    try:
        if args.no_snapshot and args.sources:
            p.error("--sources runs a copy of that tree's code: drop --no-snapshot")
        code = "live tree" if args.no_snapshot else snapshot_sources(workdir, args.sources or REPO)
        print(f"servers run from: {code}", flush=True)
        operator = generate_key(f"{ORIGIN}/operator")
        limits = {"tile_cache_tiles": args.tile_cache} if args.tile_cache else None
        shared_key = generate_key(ORIGIN)
        shared_data = workdir / "data"
        if not args.db_dir:
            write_data_dir(
                shared_data, shared_key.skey, operator.verifier.vkey, ORIGIN, limits=limits
            )
        with database(args.backend, workdir) as shared_url:
            bare = start_bare_server(workdir / "bare.log")
            try:
                have, rate = 0, None
                for size in sizes:
                    if args.db_dir:
                        # One log per size, kept: reused as it is, or grown to the size.
                        data_dir = args.db_dir / str(size) / "data"
                        url = f"sqlite:///{args.db_dir / str(size) / 'firmlog.db'}"
                        key_path = data_dir / "log.key"
                        log_key = (
                            parse_signer_key(key_path.read_text(encoding="utf-8").strip())
                            if key_path.exists()
                            else generate_key(ORIGIN)
                        )
                        write_data_dir(
                            data_dir, log_key.skey, operator.verifier.vkey, ORIGIN, limits=limits
                        )
                        have = asyncio.run(stored_size(url))
                        if have > size:
                            sys.exit(f"{url} holds {have:,} entries, more than {size:,}")
                    else:
                        data_dir, url, log_key = shared_data, shared_url, shared_key
                    if have == size:
                        bulk_s = 0.0
                        print(f"N={size:,}: the log in {url} is reused", flush=True)
                    elif rate is not None and (size - have) / rate > args.max_bulk_seconds:
                        msg = (
                            f"N={size:,}: not loaded: at {rate:,.0f} entries/s the bulk load "
                            f"from {have:,} would take {(size - have) / rate / 60:.0f} min "
                            f"(> --max-bulk-seconds {args.max_bulk_seconds:.0f})"
                        )
                        print(msg, flush=True)
                        skipped.append(msg)
                        continue
                    else:
                        grow = grow_direct if args.bulk_mode == "direct" else grow_with_sequencer
                        bulk_s = asyncio.run(grow(url, log_key, have, size, args.bulk_batch))
                        rate = (size - have) / bulk_s
                        print(
                            f"grew the log {have:,} -> {size:,} in {bulk_s:.1f} s "
                            f"({rate:,.0f} entries/s)",
                            flush=True,
                        )
                    have = size
                    for workers in worker_counts:
                        res = SizeResult(size=size, bulk_s=bulk_s, workers=workers)
                        server = start_log_server(
                            data_dir,
                            url,
                            workdir / f"server-{size}-w{workers}.log",
                            workers=workers,
                        )
                        try:
                            measure_size(res, server, bare, args, log_key, workdir)
                        finally:
                            server.stop()
                        results.append(res)
                        for line in res.profile:
                            print("   ", line)
            finally:
                bare.stop()

        rows = []
        base = results[0] if results else None
        for r in results:
            proof, tile, bare_rps = median(r.proof_rps), median(r.tile_rps), median(r.bare_rps)
            rows.append(
                [
                    f"{r.size:,}",
                    r.workers,
                    len(r.proof_rps),
                    proof,
                    tile,
                    bare_rps,
                    proof / bare_rps,
                    tile / bare_rps,
                    median(r.proof_p50_ms),
                    median(r.proof_p99_ms),
                    median(r.c1_p50_ms),
                    median(r.c1_p99_ms),
                    median(r.c1_p50_ms) / median(base.c1_p50_ms) if base else float("nan"),
                    median(r.c1_cpu_us),
                    median(r.server_cores),
                    median(r.wrk_cores),
                    r.rss_start_mib,
                    r.rss_peak_mib,
                    r.errors,
                ]
            )
        print_table(
            f"Read ({args.backend}): medians of {args.runs} run(s) of {args.duration:.0f} s, "
            f"{args.connections} connections (c=1 rows: one connection)",
            [
                "entries",
                "workers",
                "runs",
                "proofs/s",
                "tiles/s",
                "bare/s",
                "proofs vs bare",
                "tiles vs bare",
                "proof p50 ms",
                "proof p99 ms",
                "c=1 p50 ms",
                "c=1 p99 ms",
                "c=1 p50 vs smallest",
                "c=1 server CPU µs/proof",
                "server cores",
                "wrk cores",
                "RSS start MiB",
                "RSS peak MiB",
                "errors",
            ],
            rows,
        )
        bulk = [(r.size, r.bulk_s) for r in results]
        print("\nbulk load: " + ", ".join(f"to {n:,} in {s:.0f} s" for n, s in bulk))
        for msg in skipped:
            print(msg)
        print(
            "goals: >= 8,000 proofs/s; proof latency at 10^7 within 1.5x of 10^4; "
            "RSS flat and <= 200 MB"
        )
        if args.json_out:
            args.json_out.write_text(
                json.dumps(
                    {
                        "args": {k: str(v) for k, v in vars(args).items()},
                        "skipped": skipped,
                        "results": [r.__dict__ for r in results],
                    },
                    indent=1,
                )
            )
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
