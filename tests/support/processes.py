"""Real ``firmlog-server serve`` and ``firmlog-monitor run`` processes on loopback.

Both run through the console scripts installed beside the test interpreter
(``firmlog-server``, ``firmlog-monitor``, ``firmlog``), each with its output
appended to a log file in its data directory's parent, which
:func:`running` prints the tail of when it stops them (pytest shows it for
failed tests only).

- :class:`LogProcess`: a log server; ``start`` waits for ``/healthz``.
- :class:`MonitorProcess`: a monitor; ``start`` waits for ``/healthz`` and
  reads the witness key it prints.
- :class:`Process`: what they share, and tests/server/procs.py's
  ``ServerProcess`` too: start and wait for ``/healthz``, kill the process
  group, stop (SIGTERM, then SIGKILL), the log's tail and errors.
- :func:`running`, :func:`stop_all`: a list to put processes in; on exit
  every one is stopped (SIGTERM, then SIGKILL), whatever happened.
- :func:`until`: poll an async condition until a deadline.
- :func:`kill_group`, :func:`children_of`: a server's process group and workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp

from firmlog.client.cosignature import parse_witness_verifier_key
from firmlog.client.keys import Ed25519Signer, Ed25519Verifier, parse_signer_key
from firmlog.server.config import OPERATOR_KEY_OFFLINE_FILE

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def script(name: str) -> str:
    """The path of one of the project's console scripts."""
    path = BIN / name
    assert path.is_file(), f"console script {name} not found beside {sys.executable}"
    return str(path)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.05
) -> float:
    """Poll ``check`` until it holds; AssertionError after ``timeout`` seconds.
    Returns how long it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - started


def _stat(pid: str) -> tuple[str, int, int] | None:
    """State, parent pid and process group of a process, from /proc (Linux)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def _processes() -> Iterator[tuple[int, str, int, int]]:
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(entry)) is not None:
            yield (int(entry), *stat)


def children_of(parent: int) -> set[int]:
    """Live (not zombie) children of ``parent``."""
    return {pid for pid, state, ppid, _ in _processes() if ppid == parent and state != "Z"}


def kill_group(leader: int, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGKILL the process group ``leader`` leads, and wait until none of it runs (a
    killed process holds its sockets until it is dead)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(pgrp == leader and state != "Z" for _, state, _, pgrp in _processes()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"process group {leader} still runs {timeout} s after SIGKILL")
        time.sleep(0.01)


class Process:
    """One subprocess at a time, restartable on the same port, in a session of its own
    (a server's worker processes are in its process group), with its output appended to
    ``log_path`` (by default ``<data dir>.out`` beside the data dir).

    Subclasses give the :meth:`command`; every message about the process, in its log and
    in exceptions, is headed by ``name`` (by default the data dir's name)."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        name: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.name = name or data_dir.name
        self.port = port or free_port()
        self.log_path = log_path or data_dir.parent / f"{data_dir.name}.out"
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        raise NotImplementedError

    async def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the process and wait until ``/healthz`` answers 200."""
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError(f"{self.name} is already running (pid {self._proc.pid})")
        self.starts += 1
        if self._log is None:
            self._log = self.log_path.open("ab")
        self._note(f"start #{self.starts} on {self.base}")
        # The process gets only its flags: no FIRMLOG_* settings from the environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIRMLOG_")}
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its workers share its process group
        )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise RuntimeError(
                        f"{self.name} exited with status {code} during start #{self.starts}:\n"
                        f"{self.tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.base}/healthz") as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"{self.name} did not answer /healthz within {timeout} s "
                        f"(start #{self.starts}):\n{self.tail()}"
                    )
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL to the process group: it and its workers die at once, in the middle of
        whatever they were doing; returns once none of them holds its port."""
        if self._proc is None:
            return
        alive = self._proc.poll() is None
        kill_group(self._proc.pid)
        self._proc.wait()
        if alive:
            self._note(f"killed with SIGKILL (status {self._proc.returncode})")

    def children(self) -> set[int]:
        """The pids of the process's live children (a server's workers)."""
        return children_of(self._proc.pid) if self._proc is not None else set()

    def terminate(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, deadline: float) -> int | None:
        """Wait for the process until ``deadline`` (monotonic), then SIGKILL it; its exit
        status (None: it was killed)."""
        if self._proc is None:
            return None
        try:
            code = self._proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        self._note(f"stopped (status {code})")
        return code

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit status (None: killed)."""
        self.terminate()
        return self.wait_stopped(time.monotonic() + timeout)

    def close(self) -> None:
        if self._proc is not None:
            kill_group(self._proc.pid)  # nothing it started outlives the test
        if self._log is not None:
            self._log.close()
            self._log = None

    def _note(self, message: str) -> None:
        if self._log is not None and not self._log.closed:
            self._log.write(f"=== {self.name}: {message} ===\n".encode())
            self._log.flush()

    def output(self) -> str:
        """Everything the process wrote, over all its starts ("": nothing yet)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _lines(self) -> list[str]:
        if not self.log_path.exists():
            return [f"({self.log_path} does not exist)"]
        return [_compact(line) for line in self.output().splitlines()]

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self._lines()[-lines:])

    def errors(self, kinds: int = 5) -> str:
        """Log lines at level error or above: the last ``kinds`` distinct ones, with counts."""
        counts: dict[str, int] = {}
        for line in self._lines():
            if '"level": "error"' in line or '"level": "critical"' in line:
                key = _TIMESTAMP.sub("", line)
                counts[key] = counts.get(key, 0) + 1
        return "\n".join(f"{n} x {line}" for line, n in list(counts.items())[-kinds:])


_TIMESTAMP = re.compile(r', "timestamp": "[^"]*"')


def _compact(line: str, limit: int = 500) -> str:
    """A log line for a test report: a JSON line's traceback cut to its last line."""
    try:
        record = json.loads(line)
    except ValueError:
        return line[:limit]
    if not isinstance(record, dict):
        return line[:limit]
    if isinstance(record.get("exception"), str):
        record["exception"] = record["exception"].strip().splitlines()[-1]
    return json.dumps(record)[:limit]


class LogProcess(Process):
    """``firmlog-server serve`` over SQLite in its data dir, with short batches.

    One worker process unless told otherwise: the tests that use it submit a
    few entries at once and expect them logged in the order sent, which one
    sequencer keeps and several workers integrating in turn do not."""

    def __init__(
        self,
        data_dir: Path,
        origin: str,
        *,
        port: int | None = None,
        witness_policy: Path | None = None,
        witness_timeout: float = 3.0,
        workers: int = 1,
    ) -> None:
        super().__init__(data_dir, port)
        self.origin = origin
        self.witness_policy = witness_policy
        self.workers = workers
        data_dir.mkdir(parents=True, exist_ok=True)
        config = data_dir / "config.toml"
        if not config.exists():  # the first start keeps it
            config.write_text(
                f'origin = "{origin}"\nwitness_timeout = {witness_timeout}\n\n'
                "[sequencer]\nbatch_interval = 0.05\nbatch_size = 64\n",
                encoding="utf-8",
            )

    def command(self) -> list[str]:
        cmd = [script("firmlog-server"), "serve", "--data-dir", str(self.data_dir)]
        cmd += ["--listen", f"127.0.0.1:{self.port}", "--origin", self.origin, "--log-json"]
        cmd += ["--workers", str(self.workers)]
        if self.witness_policy is not None:
            cmd += ["--witness-policy", str(self.witness_policy)]
        return cmd

    def _key(self, name: str) -> Ed25519Signer:
        return parse_signer_key((self.data_dir / name).read_text(encoding="utf-8").strip())

    @property
    def log_key(self) -> Ed25519Verifier:
        return self._key("log.key").verifier

    @property
    def operator(self) -> Ed25519Signer:
        """The operator's signer key, where the first start wrote it (a copied data
        dir carries it along: both logs then trust one operator)."""
        return self._key(OPERATOR_KEY_OFFLINE_FILE)

    async def submit(self, session: aiohttp.ClientSession, entry: bytes) -> tuple[int, bytes]:
        async with session.post(f"{self.base}/v1/entries", data=entry) as resp:
            return resp.status, await resp.read()

    async def get(self, session: aiohttp.ClientSession, path: str) -> tuple[int, bytes]:
        async with session.get(f"{self.base}/{path.lstrip('/')}") as resp:
            return resp.status, await resp.read()


class MonitorProcess(Process):
    """``firmlog-monitor run`` following one log."""

    def __init__(
        self,
        data_dir: Path,
        log_url: str,
        log_key: Ed25519Verifier,
        *,
        name: str,
        port: int | None = None,
        operator_keys: Sequence[Ed25519Verifier] = (),
        peers: Sequence[str] = (),
        gossip_interval: float | None = None,
        poll_interval: float = 0.1,
        alert_command: str | None = None,
    ) -> None:
        super().__init__(data_dir, port)
        self.log_url = log_url
        self.log_key = log_key
        self.witness_name = name
        self.operator_keys = tuple(operator_keys)
        self.peers = list(peers)
        self.gossip_interval = gossip_interval
        self.poll_interval = poll_interval
        self.alert_command = alert_command

    def command(self) -> list[str]:
        cmd = [script("firmlog-monitor"), "run", "--data-dir", str(self.data_dir)]
        cmd += ["--log-url", self.log_url, "--log-key", self.log_key.vkey]
        cmd += ["--listen", f"127.0.0.1:{self.port}", "--name", self.witness_name]
        cmd += ["--poll-interval", str(self.poll_interval), "--log-json"]
        cmd += ["--max-backoff", "1"]  # a failed poll never delays a test for long
        for key in self.operator_keys:
            cmd += ["--operator-key", key.vkey]
        for peer in self.peers:
            cmd += ["--peer", peer]
        if self.gossip_interval is not None:
            cmd += ["--gossip-interval", str(self.gossip_interval)]
        if self.alert_command is not None:
            cmd += ["--alert-command", self.alert_command]
        return cmd

    @property
    def witness_vkey(self) -> str:
        """The witness verifier key the monitor logged at its first start (event "keys")."""
        for line in self.output().splitlines():
            if line.startswith("{") and (event := json.loads(line))["event"] == "keys":
                vkey: str = event["witness_key"]
                parse_witness_verifier_key(vkey)
                return vkey
        raise AssertionError(f"{self.data_dir.name} logged no witness key:\n{self.tail()}")

    async def get_json(self, session: aiohttp.ClientSession, path: str) -> Any:
        async with session.get(f"{self.base}/{path.lstrip('/')}") as resp:
            assert resp.status == 200, f"GET {path}: {resp.status} {await resp.text()}"
            return await resp.json()

    async def health(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        found: dict[str, Any] = await self.get_json(session, "healthz")
        return found

    async def evidence(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.get_json(session, "v1/evidence")
        return found

    async def alerts(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.get_json(session, "v1/alerts")
        return found

    async def metrics(self, session: aiohttp.ClientSession) -> str:
        async with session.get(f"{self.base}/metrics") as resp:
            return await resp.text()

    async def cosigned(self, session: aiohttp.ClientSession) -> bytes | None:
        """The latest checkpoint it cosigned (None: none yet)."""
        path = hashlib.sha256(self.log_key.name.encode()).hexdigest()
        async with session.get(f"{self.base}/{path}/checkpoint") as resp:
            if resp.status == 404:
                return None
            assert resp.status == 200, await resp.text()
            return await resp.read()


def stop_all(procs: Sequence[Process]) -> None:
    """Stop every process and print its output's tail and errors (pytest shows them for
    failed tests only).

    All get SIGTERM at once and share one :data:`STOP_TIMEOUT_S`, after which the
    stragglers get SIGKILL."""
    for p in procs:
        p.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for p in procs:
        p.wait_stopped(deadline)
        p.close()
    for p in procs:
        print(f"\n--- last lines of {p.name}'s log ({p.log_path}) ---\n{p.tail()}")
        if errors := p.errors():
            print(f"--- errors in {p.name}'s log ---\n{errors}")


@contextlib.contextmanager
def running() -> Iterator[list[Process]]:
    """A list to put processes in; on exit every one is stopped (:func:`stop_all`)."""
    procs: list[Process] = []
    try:
        yield procs
    finally:
        stop_all(procs)


def firmlog_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``firmlog`` command line; its result (never raises for a non-zero exit)."""
    return subprocess.run(
        [script("firmlog"), *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
