"""Write benchmark: sustained durable submissions per second, and submit-to-bundle latency.

Run: ``.venv/bin/python loadtests/bench_server_write.py`` (needs Debian's ``wrk``:
``apt-get update && apt-get install -y wrk``; PostgreSQL on 127.0.0.1:5432 for the
``postgres`` backend, or set FIRMLOG_BENCH_PG to an admin URL).

What it does, for every combination of backend x sequencer knobs x server
processes x wrk connections, ``--runs`` times:

1. before anything is timed, signs unique entries (operator-signed
   ``firmlog/vendor/v1`` notes, as tests/server/harness.py does) and writes
   them to files; each is POSTed exactly once (loadtests/load_wrk.lua);
2. creates a fresh database (a SQLite file, or a throwaway PostgreSQL
   database dropped afterwards), writes config.toml with the knobs, starts
   ``firmlog-server serve --workers W`` (``--workers``, default 1: one
   process; W worker processes share its port), one server, or two sharing
   one PostgreSQL, each given half of the connections by its own wrk
   process; the server's CPU is its supervisor's and its workers';
3. runs wrk for ``--duration`` seconds; the server answers each POST only
   after the batch holding it is committed, so wrk's latency is
   submit-to-bundle latency; meanwhile samples the tree size once a second
   (the sustained rate is the growth after the warm-up) and the CPU used by
   the server, PostgreSQL and wrk itself;
4. checks the log: the checkpoint signature, every entry bundle and hash
   tile (leaves unique and all from the pre-generated set, tiles produce the
   checkpoint's root), and ``--verify-sample`` bundles fetched by leaf hash
   verified for inclusion;
5. baselines in the same run: wrk POSTing the same bodies to a bare aiohttp
   handler (load_bare_server.py) with the same connections (the ceiling of
   framework + generator), and raw Ed25519 verifications per second on one
   core (the cost floor of checking each submission's signature).

With ``--profile`` py-spy (``python3 -m venv /tmp/benchtools &&
/tmp/benchtools/bin/pip install py-spy``) samples server 0 during each timed
window and the top frames are printed.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from load_harness import (
    LOOPBACK,
    CpuMeter,
    ServerProcess,
    children_cpu_s,
    find_py_spy,
    finish_wrk,
    http_get,
    machine_busy_s,
    median,
    need_wrk,
    pg_database,
    postgres_pids,
    print_table,
    snapshot_sources,
    start_bare_server,
    start_log_server,
    start_wrk,
    write_data_dir,
    wrk_command,
)

from firmlog.client.bundle import ProofBundle
from firmlog.client.checkpoint import Checkpoint, open_checkpoint
from firmlog.client.entries import VendorAdmission, sign_entry
from firmlog.client.keys import Ed25519Signer, Ed25519Verifier, generate_key
from firmlog.client.merkle import leaf_hash, root_hash, tree_hash, verify_inclusion
from firmlog.client.note import split_note
from firmlog.client.tiles import (
    ENTRY_LEVEL,
    TILE_WIDTH,
    Tile,
    TileHashReader,
    decode_entry_bundle,
    tiles_for_size,
)

ORIGIN = "bench.firmlog.example/log"


# -- entries ------------------------------------------------------------------


def _sign_range(args: tuple[Ed25519Signer, str, int, int]) -> list[bytes]:
    operator, vendor_vkey, start, end = args
    return [
        sign_entry(
            VendorAdmission(vendor=f"v{i}.bench.example", keys=(vendor_vkey,), threshold=1),
            [operator],
        )
        for i in range(start, end)
    ]


def sign_entries(operator: Ed25519Signer, count: int, workers: int) -> list[bytes]:
    vendor_vkey = generate_key("vendor.bench.example/release").verifier.vkey
    step = 5000
    jobs = [(operator, vendor_vkey, s, min(count, s + step)) for s in range(0, count, step)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return list(itertools.chain.from_iterable(pool.map(_sign_range, jobs)))


def write_entry_files(entries: Sequence[bytes], prefix: Path, files: int) -> None:
    """Split entries round-robin into ``prefix.0 .. prefix.<files-1>`` for load_wrk.lua."""
    outs = [open(f"{prefix}.{k}", "wb") for k in range(files)]  # noqa: SIM115
    try:
        for i, e in enumerate(entries):
            out = outs[i % files]
            out.write(b"%d\n" % len(e))
            out.write(e)
    finally:
        for out in outs:
            out.close()


# -- checking the log after a run ---------------------------------------------


class Http:
    """One keep-alive connection to a server on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)

    def get(self, path: str) -> bytes:
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise AssertionError(f"GET {path}: {resp.status} {body[:200]!r}")
        return body

    def close(self) -> None:
        self.conn.close()


def verify_log(
    port: int,
    log_key: Ed25519Verifier,
    entries_by_hash: dict[bytes, bytes],
    sample: int,
) -> int:
    """Re-verify the whole log the way an auditor would; returns its tree size."""
    h = Http(port)
    try:
        note = h.get("/checkpoint")
        cp = open_checkpoint(note, log_key).checkpoint
        size = cp.tree_size
        leaves: list[bytes] = []
        for n in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
            width = min(TILE_WIDTH, size - n * TILE_WIDTH)
            for e in decode_entry_bundle(h.get("/" + Tile(ENTRY_LEVEL, n, width).path), width):
                lh = leaf_hash(e)
                if entries_by_hash.get(lh) != e:
                    raise AssertionError(f"entry {len(leaves)} was never submitted")
                leaves.append(lh)
        if len(set(leaves)) != size:
            raise AssertionError("an entry is logged twice")
        tiles = {t: h.get("/" + t.path) for t in tiles_for_size(size)}
        reader = TileHashReader(size, lambda ts: [tiles[t] for t in ts])
        if tree_hash(size, reader) != cp.root_hash:
            raise AssertionError("the hash tiles do not produce the checkpoint's root")
        if root_hash(leaves) != cp.root_hash:
            raise AssertionError("the entries do not produce the checkpoint's root")
        for lh in random.sample(leaves, min(sample, size)):
            bundle = ProofBundle.parse(h.get(f"/v1/bundle/{lh.hex()}"))
            if bundle.extra != entries_by_hash[lh]:
                raise AssertionError(f"bundle for {lh.hex()} carries another entry")
            bcp = open_checkpoint(bundle.checkpoint, log_key).checkpoint
            verify_inclusion(lh, bundle.index, bcp.tree_size, bundle.proof, bcp.root_hash)
        return size
    finally:
        h.close()


def wait_quiet(port: int, timeout: float = 60.0) -> int:
    """Wait until the tree stops growing (in-flight batches integrated)."""
    last, since = -1, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        size = int(json.loads(http_get(f"http://{LOOPBACK}:{port}/healthz"))["tree_size"])
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since > 1.5:
            break
        time.sleep(0.25)
    return last


# -- one measurement ----------------------------------------------------------


@dataclass(frozen=True)
class Case:
    backend: str
    servers: int
    batch_interval: float
    batch_size: int
    connections: int
    workers: int = 1  # serve --workers, per server

    @property
    def label(self) -> str:
        return (
            f"{self.backend} x{self.servers} workers={self.workers} "
            f"interval={self.batch_interval} size={self.batch_size} c={self.connections}"
        )


@dataclass
class Outcome:
    case: Case
    wrk_ok_per_s: float
    sustained_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int
    tree_size: int
    server_cores: float  # CPU seconds per second
    postgres_cores: float
    wrk_cores: float
    wrk_us_per_req: float
    other_cores: float  # everything else on the machine (other people's work)
    server_us_per_entry: float  # server CPU per integrated entry: less noisy than the rate
    bare_ok_per_s: float = float("nan")
    verified: bool = False
    profile: list[str] = field(default_factory=list)


class SizeSampler(threading.Thread):
    """Tree size once a second from /healthz: the log's own view of its growth."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                body = http_get(f"http://{LOOPBACK}:{self.port}/healthz", timeout=5)
                self.samples.append((time.monotonic(), int(json.loads(body)["tree_size"])))
            except OSError:
                pass
            self._stop_event.wait(1.0)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def rate(self, start: float, end: float) -> float:
        inside = [(t, n) for t, n in self.samples if start <= t <= end]
        if len(inside) < 2:
            return float("nan")
        (t0, n0), (t1, n1) = inside[0], inside[-1]
        return (n1 - n0) / (t1 - t0)


@contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    if backend == "postgres":
        with pg_database() as url:
            yield url
    else:
        path = workdir / "firmlog.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


def profile_top(raw_path: Path, top: int = 15) -> list[str]:
    """Top frames by self and by inclusive samples from py-spy's raw (collapsed) output."""
    self_count: Counter[str] = Counter()
    incl_count: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
            if " (" in f
            else f
            for f in stack.split(";")
        ]
        self_count[frames[-1]] += count
        for f in set(frames):
            incl_count[f] += count
    if not total:
        return ["(no samples)"]
    lines = [f"{total} samples"]
    lines.append("self:")
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in self_count.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in incl_count.most_common(top * 2)]
    return lines


def run_case(
    case: Case,
    args: argparse.Namespace,
    workdir: Path,
    keys: tuple[Ed25519Signer, Ed25519Signer],
    entries: list[bytes],
    entries_by_hash: dict[bytes, bytes],
    run_no: int,
    settings: dict[str, str | float] | None = None,
    companions: Callable[[list[ServerProcess]], AbstractContextManager[object]] | None = None,
) -> Outcome:
    """One timed case. ``settings``: more top-level config.toml keys; ``companions``:
    other processes the servers work with (witnesses), entered once the servers
    are up and left before they stop."""
    log_key, operator = keys
    threads = args.wrk_threads
    files = case.servers * threads
    prefix = workdir / f"entries-{files}"
    if not Path(f"{prefix}.0").exists():
        write_entry_files(entries, prefix, files)
    tag = (
        f"{case.backend}-s{case.servers}-w{case.workers}-i{case.batch_interval}"
        f"-b{case.batch_size}-c{case.connections}-r{run_no}"
    )
    # A data dir per case: each case starts a new database, and the server records
    # the last checkpoint its key signed in the data dir (it would refuse the new one).
    data_dir = workdir / "data" / tag
    public = workdir / "public" / tag
    if args.publish_dir:
        settings = {**(settings or {}), "publish_dir": str(public)}
    write_data_dir(
        data_dir,
        log_key.skey,
        operator.verifier.vkey,
        ORIGIN,
        sequencer={
            "batch_interval": case.batch_interval,
            "batch_size": case.batch_size,
            "pool_size": max(20000, case.batch_size, 2 * case.connections),
        },
        settings=settings,
    )
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    with database(case.backend, workdir) as url, ExitStack() as around:
        servers: list[ServerProcess] = []
        try:
            for k in range(case.servers):
                servers.append(
                    start_log_server(
                        data_dir,
                        url,
                        logs / f"{tag}-server{k}.log",
                        args.log_level,
                        workers=case.workers,
                    )
                )
            if companions is not None:
                around.enter_context(companions(servers))
            per_server = case.connections // case.servers
            prefixes = [str(prefix)]
            if case.servers > 1:
                # wrk process k reads its own files: <prefix>-w<k>.<t> -> <prefix>.<k*threads+t>
                prefixes = [f"{prefix}-w{k}" for k in range(case.servers)]
                for k in range(case.servers):
                    for t in range(threads):
                        link = Path(f"{prefixes[k]}.{t}")
                        if not link.exists():
                            link.symlink_to(f"{prefix}.{k * threads + t}")
            argvs = [
                wrk_command(
                    s.base,
                    "load_wrk.lua",
                    threads=threads,
                    connections=per_server,
                    duration=args.duration,
                    timeout=args.wrk_timeout,
                    script_args=["post", prefixes[k]],
                )
                for k, s in enumerate(servers)
            ]
            groups = {
                "server": [p for s in servers for p in s.pids()],  # with their workers
                "postgres": postgres_pids(url) if case.backend == "postgres" else [],
            }
            sampler = SizeSampler(servers[0].port)
            sampler.start()
            spy: subprocess.Popen[bytes] | None = None
            raw = logs / f"{tag}-pyspy.txt"
            if args.profile:
                spy_path = find_py_spy(args.py_spy)
                if spy_path is None:
                    sys.exit("--profile needs py-spy (see --help)")
                spy = subprocess.Popen(
                    [
                        spy_path,
                        "record",
                        "-p",
                        str(servers[0].pid),
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
            meter = CpuMeter()
            meter.start(groups)
            busy0 = machine_busy_s()
            cpu0 = children_cpu_s()
            t0 = time.monotonic()
            procs = [start_wrk(a) for a in argvs]
            results = [finish_wrk(p, args.duration) for p in procs]
            t1 = time.monotonic()
            wrk_cpu = children_cpu_s() - cpu0
            busy = machine_busy_s() - busy0
            used = meter.stop(
                {**groups, "postgres": postgres_pids(url) if case.backend == "postgres" else []}
            )
            sampler.stop()
            if spy is not None:
                spy.wait(timeout=args.duration + 60)
            elapsed = t1 - t0
            warm = min(args.warmup, elapsed / 3)
            sustained = sampler.rate(t0 + warm, t1)
            ok = sum(r.ok for r in results)
            reqs = sum(r.requests for r in results)
            non2xx = sum(r.errors.get("status", 0) for r in results)
            sock = sum(
                r.errors.get(k, 0) for r in results for k in ("connect", "read", "write", "timeout")
            )
            if ok >= len(entries) * 0.98:
                print(
                    f"  WARNING: the pre-generated entries ran out ({len(entries)}): "
                    "raise --max-rate",
                    flush=True,
                )
            weights = [max(r.requests, 1) for r in results]
            p50 = sum(r.latency_us["p50"] * w for r, w in zip(results, weights, strict=True)) / sum(
                weights
            )
            size = wait_quiet(servers[0].port)
            verified = False
            if not args.no_verify:
                checked = verify_log(
                    servers[0].port, log_key.verifier, entries_by_hash, args.verify_sample
                )
                if checked < ok:
                    raise AssertionError(f"{ok} submissions acknowledged but the log has {checked}")
                verified = True
            if args.publish_dir:
                lag = wait_published(public, size)
                print(f"  publish dir at tree size {size} {lag:.2f} s after the load", flush=True)
            outcome = Outcome(
                case=case,
                wrk_ok_per_s=sum(r.ok_per_s for r in results),
                sustained_per_s=sustained,
                p50_ms=p50 / 1000,
                p99_ms=max(r.latency_us["p99"] for r in results) / 1000,
                max_ms=max(r.latency_us["max"] for r in results) / 1000,
                non_2xx=non2xx,
                socket_errors=sock,
                tree_size=size,
                server_cores=used["server"] / elapsed,
                postgres_cores=used["postgres"] / elapsed,
                wrk_cores=wrk_cpu / elapsed,
                wrk_us_per_req=wrk_cpu / max(reqs, 1) * 1e6,
                server_us_per_entry=used["server"] / max(ok, 1) * 1e6,
                other_cores=max(0.0, busy - used["server"] - used["postgres"] - wrk_cpu) / elapsed,
                verified=verified,
                profile=profile_top(raw) if args.profile and raw.exists() else [],
            )
        finally:
            around.close()
            for s in servers:
                s.stop()
    return outcome


def wait_published(public: Path, size: int, timeout: float = 60.0) -> float:
    """Seconds until the publish directory's checkpoint is of ``size`` (bounded)."""
    t0 = time.monotonic()
    while True:
        path = public / "checkpoint"
        if path.exists() and Checkpoint.parse(split_note(path.read_bytes())[0]).tree_size >= size:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"the publish directory did not reach {size} in {timeout} s")
        time.sleep(0.05)


def bare_baseline(
    args: argparse.Namespace, workdir: Path, entries: list[bytes], connections: int
) -> float:
    """POSTs/s of the same bodies to a bare aiohttp handler, same wrk settings."""
    prefix = workdir / f"entries-{args.wrk_threads}"
    if not Path(f"{prefix}.0").exists():
        write_entry_files(entries, prefix, args.wrk_threads)
    bare = start_bare_server(workdir / "logs" / "bare.log")
    try:
        argv = wrk_command(
            bare.base,
            "load_wrk.lua",
            threads=args.wrk_threads,
            connections=connections,
            duration=args.baseline_duration,
            timeout=args.wrk_timeout,
            script_args=["post", str(prefix), "/bare"],
        )
        return finish_wrk(start_wrk(argv), args.baseline_duration).ok_per_s
    finally:
        bare.stop()


def raw_verify_rate(seconds: float = 1.0) -> float:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pub, msg = key.public_key(), os.urandom(150)
    sig = key.sign(msg)
    rates = []
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            pub.verify(sig, msg)
            n += 1
        rates.append(n / (time.perf_counter() - t0))
    return median(rates)


def parse_list(kind: type, text: str) -> list:  # type: ignore[type-arg]
    return [kind(x) for x in text.split(",") if x]


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=60, help="seconds of load per case (60)")
    p.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres")
    p.add_argument("--connections", default="64,256,1024", help="wrk connections, a list")
    p.add_argument("--batch-interval", default="0.5", help="sequencer.batch_interval list (s)")
    p.add_argument("--batch-size", default="1024", help="sequencer.batch_size list")
    p.add_argument(
        "--servers",
        default="1",
        help="server processes list; 2 = two processes "
        "on one PostgreSQL, each with half the connections (postgres only)",
    )
    p.add_argument(
        "--workers",
        default="1",
        help="serve --workers list: worker processes per server, sharing its port (1)",
    )
    p.add_argument("--runs", type=int, default=1, help="repetitions of every case (medians)")
    p.add_argument("--wrk-threads", type=int, default=1, help="threads per wrk process (1)")
    p.add_argument("--wrk-timeout", type=float, default=30, help="wrk request timeout (30 s)")
    p.add_argument(
        "--warmup", type=float, default=10, help="seconds excluded from the sustained rate (10)"
    )
    p.add_argument(
        "--max-rate",
        type=float,
        default=7000,
        help="entries pre-generated = max-rate x duration (7000/s)",
    )
    p.add_argument(
        "--baseline-duration",
        type=float,
        default=10,
        help="seconds of the bare-handler POST baseline per connection level; 0 skips",
    )
    p.add_argument("--log-level", default="info", help="server --log-level (info)")
    p.add_argument(
        "--publish-dir",
        action="store_true",
        help="servers also write the tlog-tiles files (publish_dir) into the work dir",
    )
    p.add_argument("--no-verify", action="store_true", help="skip re-verifying the log")
    p.add_argument("--verify-sample", type=int, default=25, help="bundles fetched and verified")
    p.add_argument("--profile", action="store_true", help="py-spy the server during each case")
    p.add_argument("--py-spy", help="path to py-spy (default: PATH, /tmp/benchtools/bin)")
    p.add_argument(
        "--no-snapshot",
        action="store_true",
        help="run servers from the live tree, not from a copy taken at start",
    )
    p.add_argument("--keep", action="store_true", help="keep the work dir (server logs)")
    p.add_argument("--json-out", type=Path, help="write every outcome as JSON here")
    args = p.parse_args()
    need_wrk()

    backends = parse_list(str, args.backends)
    cases = [
        Case(b, s, i, bs, c, w)
        for b in backends
        for s in parse_list(int, args.servers)
        for w in parse_list(int, args.workers)
        for i in parse_list(float, args.batch_interval)
        for bs in parse_list(int, args.batch_size)
        for c in parse_list(int, args.connections)
        if s == 1 or b == "postgres"
    ]
    workdir = Path(tempfile.mkdtemp(prefix="firmlog-bench-write-"))
    (workdir / "logs").mkdir()
    try:
        code = "live tree" if args.no_snapshot else snapshot_sources(workdir)
        print(f"servers run from: {code}", flush=True)
        log_key = generate_key(ORIGIN)
        operator = generate_key(f"{ORIGIN}/operator")
        count = int(args.max_rate * args.duration)
        t = time.perf_counter()
        entries = sign_entries(operator, count, workers=os.cpu_count() or 2)
        print(f"signed {count} entries in {time.perf_counter() - t:.1f} s (not timed)", flush=True)
        entries_by_hash = {leaf_hash(e): e for e in entries}
        verify_rate = raw_verify_rate()
        print(f"raw Ed25519 verify on one core: {verify_rate:,.0f}/s", flush=True)

        outcomes: list[Outcome] = []
        bare: dict[tuple[int, int], float] = {}
        for run_no in range(args.runs):
            for case in cases:
                if args.baseline_duration > 0 and (run_no, case.connections) not in bare:
                    bare[(run_no, case.connections)] = bare_baseline(
                        args, workdir, entries, case.connections
                    )
                    print(
                        f"run {run_no + 1}: bare POST c={case.connections}: "
                        f"{bare[(run_no, case.connections)]:,.0f}/s",
                        flush=True,
                    )
                o = run_case(
                    case, args, workdir, (log_key, operator), entries, entries_by_hash, run_no
                )
                o.bare_ok_per_s = bare.get((run_no, case.connections), float("nan"))
                outcomes.append(o)
                print(
                    f"run {run_no + 1}: {case.label}: {o.wrk_ok_per_s:,.0f}/s acked, "
                    f"{o.sustained_per_s:,.0f}/s sustained, p50 {o.p50_ms:.0f} ms, "
                    f"p99 {o.p99_ms:.0f} ms, non-2xx {o.non_2xx}, socket errors "
                    f"{o.socket_errors}, server {o.server_cores:.2f} cores "
                    f"({o.server_us_per_entry:.0f} us/entry), postgres "
                    f"{o.postgres_cores:.2f}, wrk {o.wrk_cores:.2f} "
                    f"({o.wrk_us_per_req:.0f} us/req), "
                    f"others {o.other_cores:.2f} cores, "
                    f"log {o.tree_size} verified={o.verified}",
                    flush=True,
                )
                for line in o.profile:
                    print("   ", line)

        rows = []
        for case in cases:
            mine = [o for o in outcomes if o.case == case]
            rate = median([o.sustained_per_s for o in mine])
            bare_rate = median([o.bare_ok_per_s for o in mine])
            rows.append(
                [
                    case.backend,
                    case.servers,
                    case.batch_interval,
                    case.batch_size,
                    case.connections,
                    len(mine),
                    median([o.wrk_ok_per_s for o in mine]),
                    rate,
                    median([o.p50_ms for o in mine]),
                    median([o.p99_ms for o in mine]),
                    sum(o.non_2xx + o.socket_errors for o in mine),
                    median([o.server_cores for o in mine]),
                    median([o.server_us_per_entry for o in mine]),
                    median([o.postgres_cores for o in mine]),
                    median([o.wrk_cores for o in mine]),
                    median([o.other_cores for o in mine]),
                    bare_rate,
                    rate / bare_rate,
                    rate / verify_rate,
                    "yes" if all(o.verified for o in mine) else "no",
                    case.workers,
                ]
            )
        print_table(
            f"Write: medians of {args.runs} run(s) of {args.duration:.0f} s "
            f"(raw Ed25519 verify {verify_rate:,.0f}/s on one core)",
            [
                "backend",
                "procs",
                "interval s",
                "batch",
                "conns",
                "runs",
                "acked/s",
                "sustained/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "server cores",
                "server us/entry",
                "pg cores",
                "wrk cores",
                "other cores",
                "bare POST/s",
                "vs bare",
                "vs verify",
                "log ok",
                "workers",
            ],
            rows,
        )
        best = max(rows, key=lambda r: (r[9] <= 1000, r[7]))
        print(
            f"\nbest sustained with p99 <= 1 s: {best[0]} x{best[1]} interval={best[2]} "
            f"batch={best[3]} c={best[4]}: {best[7]:,.0f}/s, p50 {best[8]:.0f} ms, "
            f"p99 {best[9]:.0f} ms (goal >= 3,000/s, p99 <= 1,000 ms)"
        )
        if args.json_out:
            args.json_out.write_text(
                json.dumps(
                    {
                        "raw_verify_per_s": verify_rate,
                        "args": vars(args) | {"json_out": str(args.json_out)},
                        "outcomes": [{**o.__dict__, "case": o.case.__dict__} for o in outcomes],
                    },
                    indent=1,
                    default=str,
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
