"""The HTTP layer's cost: server CPU per request on cached reads, against a bare handler.

Run: ``.venv/bin/python loadtests/bench_http_overhead.py`` (needs Debian's ``wrk``).
To compare two checkouts, run this file with each checkout's interpreter: the
server is the ``firmlog-server`` next to the interpreter (``VENV_BIN``), so
``/other/tree/.venv/bin/python loadtests/bench_http_overhead.py`` measures the
other tree's server with the same driver.

One log server (``serve --workers 1``, SQLite, ``--log-level`` as given) with a
one-entry log, and the bare aiohttp handler of ``load_bare_server.py``. For
each of ``--runs`` rounds, each target in turn gets an unrecorded warm-up and
then ``--duration`` seconds of wrk load with ``--connections`` keep-alive
connections; the server's user + system CPU over that window, divided by the
responses, is its CPU per request (less noisy than the rate on a shared
machine). Targets:

- ``bare``: ``GET /bare`` on the bare handler (1 KiB body, no middleware);
- ``checkpoint``: ``GET /checkpoint`` (the cached latest checkpoint);
- ``proof``: ``GET /v1/proof/inclusion?index=0&tree_size=1`` (cached; an empty proof);
- ``badrequest``: ``GET /v1/proof/inclusion?index=1&tree_size=1`` (400 with a JSON body
  before any storage read: the error path, logged).

Medians over the rounds are printed, and every figure as one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import time
from pathlib import Path

from load_harness import (
    LOOPBACK,
    VENV_BIN,
    CpuMeter,
    ServerProcess,
    median,
    need_wrk,
    run_wrk,
    start_bare_server,
    start_log_server,
    write_data_dir,
    wrk_command,
)

from firmlog.client.entries import VendorAdmission, sign_entry
from firmlog.client.keys import generate_key

ORIGIN = "bench.firmlog.example/log"
TARGETS = {
    "bare": "/bare",
    "checkpoint": "/checkpoint",
    "proof": "/v1/proof/inclusion?index=0&tree_size=1",
    "badrequest": "/v1/proof/inclusion?index=1&tree_size=1",
}


def _post(port: int, path: str, body: bytes) -> int:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    try:
        conn.request("POST", path, body=body)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _measure(server: ServerProcess, path: str, args: argparse.Namespace) -> tuple[float, float]:
    """(server CPU us per response, responses per second) under ``args.duration`` s of load."""
    url = f"http://{LOOPBACK}:{server.port}{path}"

    def wrk(duration: float) -> list[str]:
        return wrk_command(
            url,
            "load_wrk.lua",
            threads=1,
            connections=args.connections,
            duration=duration,
            timeout=10,
            script_args=["get", path],
        )

    run_wrk(wrk(args.warmup), args.warmup)
    meter = CpuMeter()
    groups = {"server": server.pids()}
    meter.start(groups)
    result = run_wrk(wrk(args.duration), args.duration)
    used = meter.stop(groups)
    return used["server"] / max(result.requests, 1) * 1e6, result.requests / result.duration_s


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10, help="seconds per measurement (10)")
    p.add_argument("--warmup", type=float, default=2, help="unrecorded seconds before each (2)")
    p.add_argument("--runs", type=int, default=3, help="rounds (medians; 3)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    p.add_argument("--targets", default=",".join(TARGETS), help="a list of " + ",".join(TARGETS))
    p.add_argument("--log-level", default="info", help="server --log-level (info)")
    p.add_argument("--label", default=str(VENV_BIN.parent.parent), help="names this tree")
    args = p.parse_args()
    need_wrk()
    targets = [t for t in args.targets.split(",") if t]
    for t in targets:
        if t not in TARGETS:
            p.error(f"unknown target {t!r}: expected some of {', '.join(TARGETS)}")
    results: dict[str, list[tuple[float, float]]] = {t: [] for t in targets}
    with tempfile.TemporaryDirectory(prefix="firmlog-http-bench-") as tmp:
        work = Path(tmp)
        log_key, operator = generate_key(ORIGIN), generate_key(f"{ORIGIN}/operator")
        data_dir = work / "data"
        write_data_dir(data_dir, log_key.skey, operator.verifier.vkey, ORIGIN)
        server = start_log_server(
            data_dir, f"sqlite:///{data_dir / 'log.db'}", work / "server.log", args.log_level
        )
        bare = start_bare_server(work / "bare.log")
        try:
            admission = sign_entry(
                VendorAdmission("acme.example", (operator.verifier.vkey,), 1), [operator]
            )
            status = _post(server.port, "/v1/entries", admission)
            if status != 200:
                raise RuntimeError(f"POST /v1/entries answered {status}")
            for run in range(args.runs):
                for target in targets:
                    who = bare if target == "bare" else server
                    us, rps = _measure(who, TARGETS[target], args)
                    results[target].append((us, rps))
                    print(
                        f"run {run + 1} {target:<10} {us:7.1f} us/req  {rps:8.0f} req/s",
                        file=sys.stderr,
                        flush=True,
                    )
                    time.sleep(0.5)
        finally:
            server.stop()
            bare.stop()
    bare_us = median([us for us, _ in results.get("bare", [])]) if "bare" in results else None
    bare_rps = median([r for _, r in results.get("bare", [])]) if "bare" in results else None
    print(f"{args.label}: medians of {args.runs} runs, c={args.connections}, {args.duration:.0f} s")
    for target in targets:
        us = median([u for u, _ in results[target]])
        rps = median([r for _, r in results[target]])
        vs = f"  {rps / bare_rps:.2f}x bare req/s" if bare_rps and target != "bare" else ""
        print(f"  {target:<10} {us:7.1f} us/req  {rps:8.0f} req/s{vs}")
        print(
            "JSON "
            + json.dumps(
                {
                    "label": args.label,
                    "target": target,
                    "us_per_req": round(us, 2),
                    "req_per_s": round(rps, 1),
                    "bare_us_per_req": bare_us,
                    "runs": [[round(u, 2), round(r, 1)] for u, r in results[target]],
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
