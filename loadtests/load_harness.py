"""Shared plumbing for the server benchmarks (bench_server_write.py, bench_server_read.py).

Everything here talks to 127.0.0.1 only and cleans up after itself:

- :class:`ServerProcess` runs ``firmlog-server serve`` (or the bare aiohttp
  handler of ``load_bare_server.py``) as a child process and stops it;
- :func:`pg_database` creates a throwaway PostgreSQL database and drops it;
- :func:`run_wrk` runs one bounded ``wrk`` load (``-d`` seconds) with a Lua
  script from this folder and parses the JSON its ``done()`` prints;
- :class:`CpuMeter` and :class:`RssSampler` read ``/proc`` to tell what the
  server, PostgreSQL and the load generator itself cost.

``wrk`` is Debian's package (``apt-get update && apt-get install -y wrk``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV_BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get("FIRMLOG_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOPBACK = "127.0.0.1"


def need_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        sys.exit(
            "wrk is not installed: it is Debian's package, install it with\n"
            "  apt-get update && apt-get install -y wrk"
        )
    return path


def find_py_spy(given: str | None) -> str | None:
    """py-spy from --py-spy, PATH, or the throwaway venv the benchmarks document."""
    for candidate in (given, shutil.which("py-spy"), "/tmp/benchtools/bin/py-spy"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 10.0) -> bytes:
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError(f"benchmarks only talk to {LOOPBACK}, not {url}")
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback only, checked above
        return bytes(resp.read())


# -- data directories -------------------------------------------------------


def write_data_dir(
    data_dir: Path,
    log_skey: str,
    operator_vkey: str,
    origin: str,
    sequencer: dict[str, float | int] | None = None,
    limits: dict[str, int] | None = None,
    settings: dict[str, str | float] | None = None,
) -> None:
    """A data directory with the log key, the operator's verifier key and a
    config.toml (overwritten each time); ``settings`` are top-level keys of
    config.toml (witness_policy, ...). The operator's signer key stays with
    the caller, as it stays off a real server."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "log.key"
    if not log_path.exists():
        log_path.write_text(log_skey + "\n", encoding="utf-8")
        log_path.chmod(0o600)
    (data_dir / "operator.pub").write_text(operator_vkey + "\n", encoding="utf-8")
    lines = [f'origin = "{origin}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in (settings or {}).items()]
    for section, values in (("sequencer", sequencer), ("limits", limits)):
        if values:
            lines.append(f"[{section}]")
            lines += [f"{k} = {v!r}" for k, v in values.items()]
    (data_dir / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


# -- a frozen copy of the code under test --------------------------------------

_SNAPSHOT_ENV: dict[str, str] = {}  # empty: servers run from the live tree


def snapshot_sources(workdir: Path, tree: Path = REPO) -> str:
    """Copy the client, service and server sources into ``workdir`` and run servers from that copy.

    A long benchmark in a tree other people edit would otherwise start later
    servers from different (or half-edited) code. ``tree``: the checkout whose
    sources are copied (default: this one; another, e.g. a checkout of main, to
    measure its code with this benchmark). Returns a fingerprint of what was
    copied (git HEAD and a hash of the sources) for the report.
    """
    import hashlib

    dest = workdir / "src"
    digest = hashlib.sha256()
    for member in ("client", "service", "server"):
        if not (tree / member / "firmlog").is_dir():
            raise FileNotFoundError(f"{tree} is not a firmlog checkout: no {member}/firmlog")
        for path in sorted((tree / member / "firmlog").rglob("*.py")):
            rel = path.relative_to(tree / member)
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            data = path.read_bytes()
            target.write_bytes(data)
            digest.update(str(rel).encode() + b"\0" + data)
    # The copy comes first on sys.path, ahead of the editable installs.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(dest), env.get("PYTHONPATH")) if p)
    _SNAPSHOT_ENV.update(env)
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{tree}: git {head or '?'} + working tree, sources sha256 {digest.hexdigest()[:12]}"


# -- processes --------------------------------------------------------------


class ServerProcess:
    """A child process serving HTTP on 127.0.0.1:<port>; stopped by :meth:`stop`."""

    def __init__(self, argv: Sequence[str], port: int, log_path: Path, ready_path: str) -> None:
        self.port = port
        self.argv = list(argv)
        self.log_path = log_path
        self._ready_path = ready_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
            env=_SNAPSHOT_ENV or None,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        """The process and its children: with ``--workers``, the supervisor and its workers."""
        return family(self.proc.pid)

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.close()
                tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(
                    f"{self.argv[0]} exited with {self.proc.returncode}; its log ends:\n"
                    + "\n".join(tail)
                )
            with contextlib.suppress(OSError):
                http_get(self.base + self._ready_path, timeout=2)
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server on port {self.port} not ready after {timeout} s")

    def stop(self, timeout: float = 40.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def start_log_server(
    data_dir: Path, database_url: str, log_path: Path, log_level: str = "info", workers: int = 1
) -> ServerProcess:
    """``firmlog-server serve`` with ``--workers`` (1: one process, as before the flag),
    ready once every worker listens."""
    port = free_port()
    argv = [
        str(VENV_BIN / "firmlog-server"),
        "serve",
        "--data-dir",
        str(data_dir),
        "--listen",
        f"{LOOPBACK}:{port}",
        "--database",
        database_url,
        "--log-level",
        log_level,
        "--log-json",
        "--workers",
        str(workers),
    ]
    server = ServerProcess(argv, port, log_path, "/healthz")
    try:
        server.wait_ready()
        _wait_workers(server, workers)
    except RuntimeError as exc:  # e.g. the free port was taken meanwhile: one more try
        print(f"  server did not start, retrying: {exc}", file=sys.stderr, flush=True)
        port = free_port()
        argv[argv.index("--listen") + 1] = f"{LOOPBACK}:{port}"
        server = ServerProcess(argv, port, log_path, "/healthz")
        server.wait_ready()
        _wait_workers(server, workers)
    return server


def _listening(log: str) -> bool:
    """Whether the banner says every worker listens: the line, or with --log-json the event."""
    return "listening on" in log or '"event": "listening"' in log


def _wait_workers(server: ServerProcess, workers: int, timeout: float = 60.0) -> None:
    """Until the supervisor printed its banner (every worker listens)."""
    if workers == 1:
        return
    deadline = time.monotonic() + timeout
    while not _listening(server.log_path.read_text(errors="replace")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{workers} workers on port {server.port} not ready")
        time.sleep(0.1)


def start_bare_server(log_path: Path) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, str(HERE / "load_bare_server.py"), "--port", str(port)]
    server = ServerProcess(argv, port, log_path, "/bare")
    server.wait_ready()
    return server


# -- PostgreSQL ---------------------------------------------------------------


@contextlib.contextmanager
def pg_database(prefix: str = "firmlog_bench") -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1, dropped (WITH FORCE) on exit."""
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    base = PG_ADMIN_URL.rsplit("/", 1)[0]

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- /proc measurements -------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy (not idle, not waiting for I/O) since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def postgres_pids(database_url: str) -> list[int]:
    """PostgreSQL processes working for one database: its backends, plus the shared
    WAL writer, checkpointer and background writer (which others' load also uses)."""
    import asyncpg

    name = database_url.rsplit("/", 1)[1]

    async def query() -> list[int]:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 OR backend_type IN "
                "('walwriter', 'checkpointer', 'background writer')",
                name,
            )
            return [int(r[0]) for r in rows]
        finally:
            await conn.close()

    return asyncio.run(query())


def family(pid: int) -> list[int]:
    """``pid`` and its live children (from /proc)."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def vm_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class CpuMeter:
    """CPU seconds used by groups of processes between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self._start: dict[str, dict[int, float]] = {}
        self.used: dict[str, float] = {}

    def start(self, groups: dict[str, Sequence[int]]) -> None:
        self._start = {g: {p: cpu_seconds(p) for p in pids} for g, pids in groups.items()}

    def stop(self, groups: dict[str, Sequence[int]]) -> dict[str, float]:
        """Processes that exited meanwhile are left out (their last CPU time is unknown)."""
        for g, pids in groups.items():
            before = self._start.get(g, {})
            total = 0.0
            for p in pids:
                now = cpu_seconds(p)
                if now > 0.0:
                    total += now - before.get(p, 0.0)
            self.used[g] = total
        return self.used


class RssSampler(threading.Thread):
    """Samples VmRSS of a process every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[float] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            found = [vm_rss_mib(p) for p in family(self.pid)]  # with its workers, if any
            if found and found[0] is not None:
                self.samples.append(sum(r for r in found if r is not None))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    @property
    def peak(self) -> float:
        return max(self.samples, default=0.0)


# -- wrk ----------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int  # completed responses, any status
    duration_s: float
    errors: dict[str, int]
    latency_us: dict[str, float]  # p50, p90, p99, max, mean
    cpu_s: float = 0.0  # CPU the wrk process itself used
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return self.requests - self.errors.get("status", 0)

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0


def wrk_command(
    url: str,
    script: str,
    *,
    threads: int,
    connections: int,
    duration: float,
    timeout: float,
    script_args: Sequence[str] = (),
) -> list[str]:
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError(f"benchmarks only talk to {LOOPBACK}, not {url}")
    argv = [
        need_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={max(1, round(timeout))}s",
        "-s",
        str(HERE / script),
        url,
    ]
    if script_args:
        argv += ["--", *script_args]
    return argv


def start_wrk(argv: Sequence[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_wrk(proc: subprocess.Popen[str], duration: float) -> WrkResult:
    """Wait for a wrk started by :func:`start_wrk` (bounded) and parse its JSON line."""
    try:
        out, err = proc.communicate(timeout=duration + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    for line in out.splitlines():
        if line.startswith("WRK_JSON "):
            data = json.loads(line.removeprefix("WRK_JSON "))
            return WrkResult(
                requests=int(data["requests"]),
                duration_s=float(data["duration_us"]) / 1e6,
                errors={k: int(v) for k, v in data["errors"].items()},
                latency_us={k: float(v) for k, v in data["latency_us"].items()},
            )
    raise RuntimeError(f"wrk printed no result (exit {proc.returncode}):\n{out}\n{err}")


def run_wrk(argv: Sequence[str], duration: float) -> WrkResult:
    return finish_wrk(start_wrk(argv), duration)


def children_cpu_s() -> float:
    t = os.times()
    return t.children_user + t.children_system


# -- tables ---------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Print (and return) a Markdown table."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            if v != v:  # NaN
                return "-"
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
        return str(v)

    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in text_rows)) for i, c in enumerate(columns)]
    lines = [
        f"\n{title}\n",
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) + " |"
        for r in text_rows
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    return text
