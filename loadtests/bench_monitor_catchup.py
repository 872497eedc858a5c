"""Monitor catch-up benchmark: a fresh firmlog-monitor reads and checks a whole log.

Run: ``.venv/bin/python loadtests/bench_monitor_catchup.py [--entries N]``.

A log of ``--entries`` realistic entries (default 10^6; see
bench_monitor_log.py: operator-admitted vendors, vendor-signed releases, a
revocation every 1,000) is built once and cached under
``$TMPDIR/firmlog-bench-monitor-log-<N>-v<vendors>/`` (``--rebuild`` to build
it again; delete the directory to free the space: about 1.3 KB per entry).
A real ``firmlog-server serve`` serves it on 127.0.0.1, and for each of
``--runs`` runs a real ``firmlog-monitor run`` with an empty data dir starts,
follows it (every signature verified, the ledger rules replayed, everything
stored) until its /healthz says every entry is checked. Measured:

- entries/s from the monitor answering /healthz to the last entry checked,
  and the monitor's CPU per entry (µs; the figure least disturbed by noise);
- raw Ed25519 verifications/s of one core (cryptography, as the client uses
  it) in this process, before and after each run: the ratio of entries/s to
  their mean is the figure to compare across machines (goal >= 0.5); and the
  CPU ratio (raw verification CPU over the monitor's CPU per entry), which
  the load of other processes disturbs least;
- the monitor's VmRSS (/proc) every 0.5 s: peak, and at 25/50/75/100 % of
  the entries (goal: flat, <= 200 MB);
- with ``--profile``, py-spy samples the monitor for ``--profile-seconds``
  in the middle of run 1 and the top functions (own time and with callees)
  are printed.

Everything is stopped and the monitor's data dirs removed at the end; the
cached log is kept.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench_monitor_log import body_at, build_log, start_monitor
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from load_harness import (
    RssSampler,
    cpu_seconds,
    find_py_spy,
    http_get,
    print_table,
    start_log_server,
)

from firmlog.client.entries import entry_text


def raw_verify_rate(seconds: float = 2.0) -> tuple[float, float]:
    """Ed25519 verifications per second of one core, over entry-sized messages, and
    the CPU µs one takes."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    messages = [entry_text(body_at(i, 16)).encode() for i in range(100, 164)]
    signed = [(key.sign(m), m) for m in messages]
    done = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - t0) < seconds:
        for sig, msg in signed:
            public.verify(sig, msg)
        done += len(signed)
    return done / elapsed, (time.process_time() - c0) / done * 1e6


def healthz(base: str) -> dict[str, object]:
    body: dict[str, object] = json.loads(http_get(base + "/healthz"))
    return body


@dataclass
class Run:
    entries_per_s: float = 0.0
    seconds: float = 0.0
    cpu_us_per_entry: float = 0.0
    server_cores: float = 0.0
    raw_before: float = 0.0
    raw_after: float = 0.0
    raw_cpu_us: float = 0.0  # CPU per raw verification, mean of before and after
    rss_peak: float = 0.0
    rss_at: dict[int, float] = field(default_factory=dict)  # percent of entries -> MiB
    profile: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.entries_per_s / ((self.raw_before + self.raw_after) / 2)

    @property
    def cpu_ratio(self) -> float:
        """Raw verification CPU over the monitor's CPU per entry: the ratio with the
        machine's noise (other processes' load) left out."""
        return self.raw_cpu_us / self.cpu_us_per_entry


def profile_summary(raw_path: Path, top: int = 18) -> list[str]:
    """Own and inclusive sample shares per function, from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [
            f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].rstrip(")") for f in stack.split(";")
        ]
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    if not total:
        return ["(no samples)"]
    lines = ["own time:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    lines.append("with callees:")
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top + 12)]
    return lines


def one_run(args: argparse.Namespace, log_base: str, server_pid: int, n: int, k: int) -> Run:
    run = Run()
    run.raw_before, cpu_before = raw_verify_rate()
    workdir = Path(tempfile.mkdtemp(prefix="firmlog-bench-monitor-"))
    monitor = None
    spy = None
    try:
        t_start = time.perf_counter()
        monitor = start_monitor(workdir / "monitor", log_base, workdir / "monitor.log")
        t0 = time.perf_counter()
        cpu0, server0 = cpu_seconds(monitor.pid), cpu_seconds(server_pid)
        rss = RssSampler(monitor.pid)
        rss.start()
        marks = {25: n // 4, 50: n // 2, 75: 3 * n // 4, 100: n}
        deadline = t0 + args.timeout
        checked = 0
        while checked < n:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the monitor checked {checked:,} of {n:,} in {args.timeout} s")
            if monitor.proc.poll() is not None:
                raise RuntimeError(f"the monitor exited: see {workdir / 'monitor.log'}")
            health = healthz(monitor.base)
            checked = int(str(health["checked_entries"]))
            for pct, at in marks.items():
                if pct not in run.rss_at and checked >= at and rss.samples:
                    run.rss_at[pct] = rss.samples[-1]
            if spy is None and args.profile and k == 0 and checked >= n // 3:
                py_spy = find_py_spy(args.py_spy)
                if py_spy:
                    spy = subprocess.Popen(
                        [
                            py_spy,
                            "record",
                            "--pid",
                            str(monitor.pid),
                            "--format",
                            "raw",
                            "--output",
                            str(workdir / "profile.txt"),
                            "--duration",
                            str(args.profile_seconds),
                            "--rate",
                            "200",
                            "--threads",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
            time.sleep(0.2)
        run.seconds = time.perf_counter() - t0
        rss.stop()
        run.entries_per_s = n / run.seconds
        run.cpu_us_per_entry = (cpu_seconds(monitor.pid) - cpu0) / n * 1e6
        run.server_cores = (cpu_seconds(server_pid) - server0) / run.seconds
        run.rss_peak = rss.peak
        print(
            f"  run {k + 1}: {n:,} entries checked in {run.seconds:.1f} s "
            f"(+{t0 - t_start:.1f} s start-up): {run.entries_per_s:,.0f}/s, "
            f"{run.cpu_us_per_entry:.0f} µs CPU/entry, RSS peak {run.rss_peak:.0f} MiB",
            flush=True,
        )
        if spy is not None:
            spy.wait(args.profile_seconds + 30)
            run.profile = profile_summary(workdir / "profile.txt")
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
        if monitor is not None:
            monitor.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    run.raw_after, cpu_after = raw_verify_rate()
    run.raw_cpu_us = (cpu_before + cpu_after) / 2
    return run


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--entries", type=int, default=1_000_000, help="log size (10^6)")
    p.add_argument("--vendors", type=int, default=16, help="vendors admitted (16)")
    p.add_argument("--runs", type=int, default=1, help="monitor runs over the log (1)")
    p.add_argument("--rebuild", action="store_true", help="build the log even if cached")
    p.add_argument("--timeout", type=float, default=3600, help="give up a run after (s)")
    p.add_argument("--profile", action="store_true", help="py-spy the monitor in run 1")
    p.add_argument("--profile-seconds", type=float, default=20)
    p.add_argument("--py-spy", help="path to py-spy (default: PATH, /tmp/benchtools/bin)")
    p.add_argument("--json-out", type=Path, help="write the results as JSON here")
    args = p.parse_args()
    n = args.entries

    log, build_s = build_log(n, args.vendors, rebuild=args.rebuild)
    print(
        f"log of {n:,} entries: "
        + (f"built in {build_s:.0f} s ({n / build_s:,.0f}/s)" if build_s else "cached")
        + f", {log.dir}",
        flush=True,
    )
    runs: list[Run] = []
    workdir = Path(tempfile.mkdtemp(prefix="firmlog-bench-catchup-"))
    server = start_log_server(log.data_dir, log.url, workdir / "server.log", "warning")
    try:
        size = json.loads(http_get(server.base + "/healthz")).get("tree_size")
        if size not in (None, n):
            raise RuntimeError(f"the server serves {size} entries, expected {n}")
        for k in range(args.runs):
            runs.append(one_run(args, server.base, server.pid, n, k))
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    rows = [
        [
            k + 1,
            r.entries_per_s,
            r.raw_before,
            r.raw_after,
            r.ratio,
            r.cpu_us_per_entry,
            r.raw_cpu_us,
            r.cpu_ratio,
            r.server_cores,
            r.rss_at.get(25, 0.0),
            r.rss_at.get(50, 0.0),
            r.rss_at.get(75, 0.0),
            r.rss_at.get(100, 0.0),
            r.rss_peak,
        ]
        for k, r in enumerate(runs)
    ]
    if len(runs) > 1:
        rows.append(
            ["median"] + [statistics.median(float(row[i]) for row in rows) for i in range(1, 14)]
        )
    print_table(
        f"Monitor catch-up, {n:,} entries (every signature verified, ledger replayed, stored)",
        [
            "run",
            "entries/s",
            "raw verify/s before",
            "after",
            "ratio",
            "monitor µs CPU/entry",
            "raw verify µs CPU",
            "CPU ratio",
            "server cores",
            "RSS MiB 25%",
            "50%",
            "75%",
            "100%",
            "peak",
        ],
        rows,
    )
    print(
        "goals: ratio >= 0.5; RSS flat and <= 200 MB. The monitor uses more than one "
        "thread (HTTP, replay, SQLite): on a busy machine compare the CPU ratio too"
    )
    for line in runs[0].profile if runs else []:
        print("   ", line)
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"entries": n, "runs": [r.__dict__ for r in runs]}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
