"""Witnessing benchmark: durable submissions/s of a log with a 2-of-3 witness policy
against the same log without one.

Run: ``.venv/bin/python loadtests/bench_witnessing.py`` (needs Debian's ``wrk``, as
bench_server_write.py does; PostgreSQL on 127.0.0.1:5432 for ``--backends postgres``).

Each run measures both variants of one write case (bench_server_write.run_case:
fresh database, ``firmlog-server serve``, wrk POSTing pre-signed entries, each
once, for ``--duration`` seconds, then the log re-verified), alternating which
goes first from run to run:

- ``plain``: the log publishes each checkpoint as it commits it;
- ``witnessed``: ``witness_policy`` in its config.toml names three witnesses,
  each a real ``firmlog-monitor run`` process (its own fresh data dir and key,
  following the log as a monitor does) with a quorum of 2 of 3. The log answers
  a submission only once a checkpoint covering it is cosigned, so wrk's
  acknowledged rate and its latency include the witnesses' round trips.

Reported per backend and connection level, medians of ``--runs``: acknowledged submissions/s (each a
200 carrying a bundle against a published checkpoint), the published tree's
growth per second after the warm-up, p50/p99 latency, and the ratio witnessed /
plain (goal >= 0.8). The monitors run on the same cores as the log, wrk and
the database: their CPU is part of the witnessed figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench_server_write import Case, Outcome, parse_list, run_case, sign_entries
from load_harness import (
    LOOPBACK,
    VENV_BIN,
    ServerProcess,
    cpu_seconds,
    free_port,
    http_get,
    median,
    need_wrk,
    print_table,
    snapshot_sources,
)

from firmlog.client.keys import Ed25519Signer, generate_key
from firmlog.client.merkle import leaf_hash
from firmlog.monitor.datadir import init_data_dir

ORIGIN = "bench.firmlog.example/log"
WITNESS_NAME = "bench.firmlog.example/witness"
QUORUM = "group witnesses 2 w0 w1 w2\nquorum witnesses\n"


class Witnesses:
    """Three monitors acting as witnesses for one case: data dirs and keys made
    before the log starts (its policy names them), processes started after."""

    def __init__(self, workdir: Path, log_vkey: str, operator_vkey: str) -> None:
        self.workdir = workdir
        self.log_vkey = log_vkey
        self.operator_vkey = operator_vkey
        self.dirs = [workdir / f"monitor{i}" for i in range(3)]
        self.ports = [free_port() for _ in self.dirs]
        lines = []
        for i, (d, port) in enumerate(zip(self.dirs, self.ports, strict=True)):
            vkey = init_data_dir(d, WITNESS_NAME).signer.verifier.vkey
            lines.append(f"witness w{i} {vkey} http://{LOOPBACK}:{port}")
        self.policy = workdir / "witnesses.policy"
        self.policy.write_text("\n".join(lines) + "\n" + QUORUM, encoding="utf-8")
        self.cpu_s = 0.0  # CPU seconds the three monitors used, once stopped
        self.report = ""  # from the log's /metrics, once the log is verified

    @contextmanager
    def running(self, servers: list[ServerProcess]) -> Iterator[None]:
        """The three monitors, following ``servers[0]`` and serving add-checkpoint."""
        monitors: list[ServerProcess] = []
        try:
            for d, port in zip(self.dirs, self.ports, strict=True):
                argv = [
                    str(VENV_BIN / "firmlog-monitor"),
                    "run",
                    "--data-dir",
                    str(d),
                    "--log-url",
                    servers[0].base,
                    "--log-key",
                    self.log_vkey,
                    "--operator-key",
                    self.operator_vkey,
                    "--listen",
                    f"{LOOPBACK}:{port}",
                    "--log-level",
                    "warning",
                    "--log-json",
                ]
                monitors.append(
                    ServerProcess(argv, port, self.workdir / f"{d.name}.log", "/healthz")
                )
                monitors[-1].wait_ready()
            yield
            self.report = witnessing_report(http_get(servers[0].base + "/metrics").decode())
        finally:
            for m in monitors:
                with contextlib.suppress(OSError):
                    self.cpu_s += cpu_seconds(m.pid)
                m.stop()


def witnessing_report(metrics: str) -> str:
    """Batches, publications and witness requests from the log's /metrics text."""
    samples: dict[str, float] = {}
    for line in metrics.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    batches = samples.get("firmlog_batch_entries_count", 0)
    published = samples.get("firmlog_checkpoints_published_total", 0)
    requests: dict[str, float] = {}
    for name, value in samples.items():
        if name.startswith("firmlog_witness_requests_total{"):
            outcome = name.split('outcome="', 1)[1].split('"', 1)[0]
            requests[outcome] = requests.get(outcome, 0) + value
    rounds = samples.get('firmlog_cosigning_seconds_count{outcome="cosigned"}', 0)
    seconds = samples.get('firmlog_cosigning_seconds_sum{outcome="cosigned"}', 0)
    return (
        f"{batches:.0f} batches, {published:.0f} checkpoints published, cosigning "
        f"{1000 * seconds / max(rounds, 1):.0f} ms on average, witness requests "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(requests.items()))
    )


def one_run(
    variant: str,
    case: Case,
    args: argparse.Namespace,
    workdir: Path,
    keys: tuple[Ed25519Signer, Ed25519Signer],
    entries: list[bytes],
    entries_by_hash: dict[bytes, bytes],
    run_no: int,
) -> Outcome:
    # Each variant in its own work dir: its own data dirs, database file and logs.
    where = workdir / variant
    where.mkdir(exist_ok=True)
    if variant == "plain":
        return run_case(case, args, where, keys, entries, entries_by_hash, run_no)
    log_key, operator = keys
    witnesses = Witnesses(
        # Fresh monitors for every case: a monitor that followed the previous
        # case's log (same key, another database) would rightly refuse this one.
        where / f"witnesses-{case.backend}-c{case.connections}-r{run_no}",
        log_key.verifier.vkey,
        operator.verifier.vkey,
    )
    outcome = run_case(
        case,
        args,
        where,
        keys,
        entries,
        entries_by_hash,
        run_no,
        settings={"witness_policy": str(witnesses.policy), "witness_timeout": args.witness_timeout},
        companions=witnesses.running,
    )
    # The monitors are not in run_case's CPU groups: their CPU counts in "other cores".
    print(
        f"  the three witnesses used {witnesses.cpu_s:.1f} CPU seconds in all "
        f"(started with the log, stopped after the log was verified); {witnesses.report}",
        flush=True,
    )
    return outcome


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=20, help="seconds of load per case (20)")
    p.add_argument("--runs", type=int, default=3, help="runs of each variant (3; medians)")
    p.add_argument("--backends", default="sqlite", help="sqlite,postgres (sqlite)")
    p.add_argument("--connections", default="256", help="wrk connections, a list (256)")
    p.add_argument(
        "--batch-interval", type=float, default=0.01, help="sequencer.batch_interval (0.01)"
    )
    p.add_argument("--batch-size", type=int, default=256, help="sequencer.batch_size (256)")
    p.add_argument("--witness-timeout", type=float, default=10, help="witness_timeout (10 s)")
    p.add_argument("--warmup", type=float, default=5, help="seconds excluded from growth (5)")
    p.add_argument("--max-rate", type=float, default=6000, help="entries signed per second of load")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--wrk-timeout", type=float, default=30)
    p.add_argument("--log-level", default="warning", help="server --log-level (warning)")
    p.add_argument("--verify-sample", type=int, default=25, help="bundles fetched and verified")
    p.add_argument("--no-verify", action="store_true", help="skip re-verifying the log")
    p.add_argument("--no-snapshot", action="store_true", help="run servers from the live tree")
    p.add_argument("--keep", action="store_true", help="keep the work dir (server logs)")
    p.add_argument("--json-out", type=Path, help="write every outcome as JSON here")
    args = p.parse_args()
    # run_case reads these too.
    args.profile, args.py_spy = False, None
    need_wrk()

    workdir = Path(tempfile.mkdtemp(prefix="firmlog-bench-witnessing-"))
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

        variants = ("plain", "witnessed")
        outcomes: dict[tuple[Case, str], list[Outcome]] = {}
        cases = [
            Case(backend, 1, args.batch_interval, args.batch_size, connections)
            for backend in parse_list(str, args.backends)
            for connections in parse_list(int, args.connections)
        ]
        for run_no in range(args.runs):
            for case in cases:
                # Interleaved, and alternating which goes first: drift in the
                # machine's load hits both alike.
                order = variants if run_no % 2 == 0 else variants[::-1]
                for variant in order:
                    o = one_run(
                        variant,
                        case,
                        args,
                        workdir,
                        (log_key, operator),
                        entries,
                        entries_by_hash,
                        run_no,
                    )
                    outcomes.setdefault((case, variant), []).append(o)
                    print(
                        f"run {run_no + 1}: {case.backend} c={case.connections} {variant}: "
                        f"{o.wrk_ok_per_s:,.0f}/s acked, "
                        f"{o.sustained_per_s:,.0f}/s published, p50 {o.p50_ms:.0f} ms, "
                        f"p99 {o.p99_ms:.0f} ms, non-2xx {o.non_2xx}, socket errors "
                        f"{o.socket_errors}, server {o.server_cores:.2f} cores "
                        f"({o.server_us_per_entry:.0f} us/entry), others "
                        f"{o.other_cores:.2f} cores, log {o.tree_size} verified={o.verified}",
                        flush=True,
                    )

        rows = []
        for case in cases:
            plain = outcomes[(case, "plain")]
            witnessed = outcomes[(case, "witnessed")]
            ratios = [
                w.wrk_ok_per_s / p.wrk_ok_per_s if p.wrk_ok_per_s else float("nan")
                for p, w in zip(plain, witnessed, strict=True)
            ]
            ratio = median([o.wrk_ok_per_s for o in witnessed]) / median(
                [o.wrk_ok_per_s for o in plain]
            )
            for variant, mine in (("plain", plain), ("witnessed", witnessed)):
                rows.append(
                    [
                        case.backend,
                        case.connections,
                        variant,
                        len(mine),
                        median([o.wrk_ok_per_s for o in mine]),
                        median([o.sustained_per_s for o in mine]),
                        median([o.p50_ms for o in mine]),
                        median([o.p99_ms for o in mine]),
                        sum(o.non_2xx + o.socket_errors for o in mine),
                        median([o.server_cores for o in mine]),
                        median([o.server_us_per_entry for o in mine]),
                        median([o.other_cores for o in mine]),
                        "yes" if all(o.verified for o in mine) else "no",
                        f"{ratio:.2f}" if variant == "witnessed" else "",
                    ]
                )
            print(
                f"\n{case.backend} c={case.connections}: witnessed / plain acknowledged "
                f"submissions/s = {ratio:.2f} (medians; per run "
                f"{', '.join(f'{r:.2f}' for r in ratios)}; goal >= 0.8)",
                flush=True,
            )
        print_table(
            f"Witnessing: medians of {args.runs} run(s) of {args.duration:.0f} s, "
            f"batch_interval={args.batch_interval}, "
            f"batch_size={args.batch_size}; witnessed = 2-of-3 firmlog-monitor witnesses",
            [
                "backend",
                "conns",
                "variant",
                "runs",
                "acked/s",
                "published/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "server cores",
                "server us/entry",
                "other cores",
                "log ok",
                "ratio",
            ],
            rows,
        )
        if args.json_out:
            args.json_out.write_text(
                json.dumps(
                    {
                        "args": vars(args) | {"json_out": str(args.json_out)},
                        "outcomes": {
                            f"{c.backend}/c{c.connections}/{v}": [
                                {**o.__dict__, "case": o.case.__dict__} for o in os_
                            ]
                            for (c, v), os_ in outcomes.items()
                        },
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
