"""Run the locust scenarios (loadtests/locustfile.py) headless against a fresh log.

Run: ``./scripts/locust [--users 60] [--run-time 60] [--backend sqlite|postgres]
[--out DIR]`` (it installs locust into the workspace's venv first).

What it does:

1. starts ``firmlog-server serve`` on 127.0.0.1 over a fresh SQLite database
   in a temporary data dir (or a throwaway PostgreSQL database), with its
   own log and operator keys;
2. admits ``--vendors`` vendors and logs ``--releases`` releases spread over
   them, over HTTP, before anything is timed;
3. writes what the scenarios need (vendors with their signing seeds, the
   releases' ids and digests, the full level-0 tiles) to a fixture file and
   runs ``locust --headless`` with ``--users`` users (manufacturers, devices
   and researchers in the weights of the locustfile) for ``--run-time``
   seconds, writing locust's CSV files and HTML report to ``--out``;
4. checks the whole log afterwards (every entry bundle and tile against the
   signed checkpoint), prints the per-endpoint summary from the CSV, and
   stops the server. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import aiohttp
from load_entries import new_release
from load_harness import VENV_BIN, pg_database, start_log_server, write_data_dir

from firmlog.client.entries import VendorAdmission, parse_entry, sign_entry
from firmlog.client.keys import Ed25519Signer, generate_key
from firmlog.client.tiles import TILE_WIDTH, encode_index

ORIGIN = "locust.firmlog.example/log"


async def _seed(base: str, operator: Ed25519Signer, vendors: int, releases: int) -> dict:
    """Admit the vendors and log the first releases; the fixture of the scenarios."""
    keys = [
        Ed25519Signer.from_seed(f"v{i}.example/release", os.urandom(32)) for i in range(vendors)
    ]
    fixture: dict = {"vendors": [], "releases": [], "full_tiles": []}
    async with aiohttp.ClientSession() as session:

        async def post(entry: bytes) -> None:
            async with session.post(f"{base}/v1/entries", data=entry) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"seeding: {resp.status} {await resp.text()}")

        for i, key in enumerate(keys):
            name = f"v{i}.example"
            await post(sign_entry(VendorAdmission(name, (key.verifier.vkey,), 1), [operator]))
            fixture["vendors"].append({"name": name, "key_name": key.name, "seed": key.seed.hex()})
        entries = []
        for n in range(releases):
            i = n % vendors
            body = new_release(f"v{i}.example", f"1.{n}", os.urandom(32).hex())
            entries.append(sign_entry(body, [keys[i]]))
        for start in range(0, len(entries), 64):
            await asyncio.gather(*(post(e) for e in entries[start : start + 64]))
        for entry in entries:
            parsed = parse_entry(entry)
            fixture["releases"].append(
                {"id": parsed.identity.hex(), "sha256": parsed.body.image.sha256}
            )
    fixture["full_tiles"] = [encode_index(n) for n in range((vendors + releases) // TILE_WIDTH)]
    return fixture


def _check_log(base: str, log_key: str, mirror: Path) -> None:
    """Mirror the whole log as an auditor would and check every file of the mirror."""
    firmlog = str(VENV_BIN / "firmlog")
    for extra in ([], ["--verify"]):
        subprocess.run(
            [firmlog, "mirror", "--log", base, "--log-key", log_key, "--dir", str(mirror), *extra],
            check=True,
            timeout=600,
        )


def _summary(csv_path: Path) -> str:
    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    out = [
        f"{'endpoint':<32} {'requests':>9} {'fails':>6} {'req/s':>8} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
    ]
    for r in rows:
        out.append(
            f"{r['Name']:<32} {int(r['Request Count']):>9,} {int(r['Failure Count']):>6} "
            f"{float(r['Requests/s']):>8.1f} {r['50%']:>7} {r['95%']:>7} {r['99%']:>7}"
        )
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=60, help="locust users (default 60)")
    p.add_argument("--spawn-rate", type=float, default=20, help="users started per second")
    p.add_argument("--run-time", type=int, default=60, help="seconds of load (default 60)")
    p.add_argument("--vendors", type=int, default=20, help="vendors admitted before (default 20)")
    p.add_argument("--releases", type=int, default=1000, help="releases logged before")
    p.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--out", type=Path, default=Path("locust-report"), help="CSV and HTML here")
    p.add_argument("--keep", action="store_true", help="keep the data dir and server log")
    args = p.parse_args()

    locust = VENV_BIN / "locust"
    if not locust.exists():
        print("locust is not installed: run ./scripts/locust, which installs it", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="firmlog-locust-"))
    with ExitStack() as stack:
        if args.backend == "postgres":
            database = stack.enter_context(pg_database("firmlog_locust"))
        else:
            database = f"sqlite:///{work / 'data' / 'firmlog.db'}"
        log_key, operator = generate_key(ORIGIN), generate_key("locust.firmlog.example/operator")
        write_data_dir(work / "data", log_key.skey, operator.verifier.vkey, ORIGIN)
        server = start_log_server(work / "data", database, work / "server.log", "warning")
        stack.callback(server.stop)
        print(f"log on {server.base} ({args.backend}); seeding", flush=True)
        fixture = asyncio.run(_seed(server.base, operator, args.vendors, args.releases))
        fixture_path = work / "fixture.json"
        fixture_path.write_text(json.dumps(fixture), encoding="utf-8")
        argv = [
            str(locust),
            "-f",
            str(Path(__file__).with_name("locustfile.py")),
            "--headless",
            "--host",
            server.base,
            "--users",
            str(args.users),
            "--spawn-rate",
            str(args.spawn_rate),
            "--run-time",
            f"{args.run_time}s",
            "--stop-timeout",
            "10",
            "--csv",
            str(args.out / "firmlog"),
            "--html",
            str(args.out / "report.html"),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ]
        env = {**os.environ, "FIRMLOG_LOCUST_FIXTURE": str(fixture_path)}
        done = subprocess.run(argv, env=env, timeout=args.run_time + 120, check=False)
        _check_log(server.base, log_key.verifier.vkey, work / "mirror")
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(_summary(args.out / "firmlog_stats.csv"))
    print(f"reports: {args.out / 'report.html'}, {args.out}/firmlog_*.csv")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
