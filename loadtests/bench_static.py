"""Tiles from the publish directory served by nginx, against the server's own /tile path.

Run: ``.venv/bin/python loadtests/bench_static.py`` (needs Debian's ``wrk`` and
``nginx``: ``apt-get update && apt-get install -y wrk nginx``).

A log of ``--size`` synthetic entries is grown in bulk in a SQLite database
(bench_server_read.grow_direct), then ``firmlog-server serve`` starts on it
with ``publish_dir`` set, and writes the directory at start (its catch-up:
the time it takes is reported). nginx is started on that directory with a
minimal configuration written into a temporary prefix (one worker, loopback
port, ``sendfile``; the one in OPERATIONS.md without the cache headers
detail), and a sample of tiles is checked byte for byte against the server.
Then ``GET /tile/0/<K>``, K uniform over the full level-0 tiles, is measured
with wrk against nginx and against the server, alternately, ``--runs`` times
after a warm-up of each: medians are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_server_read import ORIGIN, grow_direct, wrk_once
from load_harness import (
    LOOPBACK,
    ServerProcess,
    free_port,
    http_get,
    median,
    print_table,
    start_log_server,
    write_data_dir,
)

from firmlog.client.checkpoint import Checkpoint
from firmlog.client.keys import generate_key
from firmlog.client.note import split_note
from firmlog.client.tiles import TILE_WIDTH, Tile

NGINX_CONF = """\
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    server {{
        listen {host}:{port};
        root {root};
        location = /checkpoint {{
            default_type text/plain;
            charset utf-8;
            add_header Cache-Control "no-cache";
        }}
        location /tile/ {{
            add_header Cache-Control "public, max-age=31536000, immutable";
        }}
        location ~ /\\. {{ return 404; }}   # the writers' temporary files
    }}
}}
"""


def start_nginx(nginx: str, prefix: Path, root: Path, workers: int) -> ServerProcess:
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(workers=workers, prefix=prefix, host=LOOPBACK, port=port, root=root)
    )
    argv = [nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]
    server = ServerProcess(argv, port, prefix / "nginx.out", "/checkpoint")
    server.wait_ready()
    return server


def dir_size(root: Path) -> int:
    path = root / "checkpoint"
    if not path.exists():
        return -1
    return Checkpoint.parse(split_note(path.read_bytes())[0]).tree_size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=262144, help="entries in the log (262144)")
    p.add_argument("--duration", type=float, default=10, help="seconds per wrk run (10)")
    p.add_argument("--warmup", type=float, default=3, help="unrecorded warm-up seconds (3)")
    p.add_argument("--runs", type=int, default=3, help="repetitions (medians; 3)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--wrk-timeout", type=float, default=10, help="wrk request timeout (10 s)")
    p.add_argument("--nginx", default="/usr/sbin/nginx", help="the nginx binary")
    p.add_argument("--nginx-workers", type=int, default=1, help="nginx worker processes (1)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    args = p.parse_args()
    if not Path(args.nginx).is_file():
        sys.exit(f"nginx not found at {args.nginx}: apt-get install -y nginx, or --nginx PATH")
    full_tiles = args.size // TILE_WIDTH
    if full_tiles < 1:
        sys.exit("--size must hold at least one full tile (256 entries)")

    workdir = Path(tempfile.mkdtemp(prefix="firmlog-bench-static-"))
    workdir.chmod(0o755)  # nginx's workers run as another user: they read the publish dir
    try:
        log_key = generate_key(ORIGIN)
        operator = generate_key(f"{ORIGIN}/operator")
        data_dir, public = workdir / "data", workdir / "public"
        url = f"sqlite:///{workdir / 'firmlog.db'}"
        bulk_s = asyncio.run(grow_direct(url, log_key, 0, args.size, 65536))
        print(f"grew the log to {args.size:,} entries in {bulk_s:.1f} s", flush=True)
        write_data_dir(
            data_dir,
            log_key.skey,
            operator.verifier.vkey,
            ORIGIN,
            settings={"publish_dir": str(public)},
        )
        started = time.monotonic()
        server = start_log_server(data_dir, url, workdir / "server.log")
        try:
            while dir_size(public) < args.size:
                if time.monotonic() - started > 600:
                    raise RuntimeError("the publish directory was not written in 600 s")
                time.sleep(0.05)
            catch_up_s = time.monotonic() - started
            files = sum(1 for f in public.rglob("*") if f.is_file())
            print(f"the server wrote {files:,} files at start in {catch_up_s:.1f} s", flush=True)
            nginx = start_nginx(args.nginx, workdir / "nginx", public, args.nginx_workers)
            try:
                for k in random.sample(range(full_tiles), min(32, full_tiles)):
                    path = "/" + Tile(0, k).path
                    if http_get(nginx.base + path) != http_get(server.base + path):
                        raise AssertionError(f"{path}: nginx and the server serve other bytes")
                if http_get(nginx.base + "/checkpoint") != http_get(server.base + "/checkpoint"):
                    raise AssertionError("/checkpoint: nginx and the server serve other bytes")
                rows = measure(args, {"nginx (publish dir)": nginx, "firmlog-server": server})
            finally:
                nginx.stop()
        finally:
            server.stop()
        print()
        print_table(
            f"GET /tile/0/<K> over {full_tiles:,} full tiles, wrk -t{args.wrk_threads} "
            f"-c{args.connections} -d{args.duration:.0f}s, median of {args.runs}",
            ["served by", "tiles/s", "p50 ms", "p99 ms", "errors", "runs (tiles/s)"],
            rows,
        )
        print(f"\nbulk load {bulk_s:.1f} s; publish dir written at start in {catch_up_s:.1f} s")
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def measure(args: argparse.Namespace, servers: dict[str, ServerProcess]) -> list[list[object]]:
    mode = ["tile", str(args.size // TILE_WIDTH)]
    for server in servers.values():
        wrk_once(server.base, args, mode, args.warmup, args.connections)
    runs: dict[str, list[tuple[float, float, float, int, float]]] = {n: [] for n in servers}
    for i in range(args.runs):
        for name, server in servers.items():
            r = wrk_once(server.base, args, mode, args.duration, args.connections)
            runs[name].append(r)
            print(f"run {i + 1}: {name}: {r[0]:,.0f} tiles/s, p99 {r[2]:.1f} ms", flush=True)
    return [
        [
            name,
            median([r[0] for r in rs]),
            median([r[1] for r in rs]),
            median([r[2] for r in rs]),
            sum(r[3] for r in rs),
            " / ".join(f"{r[0]:,.0f}" for r in rs),
        ]
        for name, rs in runs.items()
    ]


if __name__ == "__main__":
    main()
