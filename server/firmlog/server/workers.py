"""Several worker processes serving one set of listening sockets (DESIGN.md 4).

``firmlog-server serve --workers N``: the parent binds the listening sockets
once, then forks N workers. Each worker inherits the sockets and runs the
whole app on them: its own event loop, storage pool, sequencer and caches,
all created after the fork (the parent never starts an event loop or a
thread, so a fork copies nothing but the bound sockets and the parsed
configuration). The kernel hands each new connection to one of the workers
waiting on the shared sockets.

Workers share nothing but the database and the data dir. Integration is
serialized by the storage's lock (PostgreSQL: the state row; SQLite: ``BEGIN
IMMEDIATE``), so each worker's sequencer integrates its own batches in turn
and the log never forks; what each worker caches is either immutable (tiles,
entry bundles) or re-checked against the database: the latest checkpoint is
re-read when older than the reader's ``refresh_interval`` (0.25 s) or when a
request names a larger tree (:mod:`firmlog.server.reader`); a vendor key set
missing from the cache, or one a signature fails against, is re-read at
submission, and the integration decides against the key sets committed
(:mod:`firmlog.server.gate`); the cosigned checkpoint is kept in the database
(:mod:`firmlog.server.witnessing`); the data dir's checkpoint record only
moves forward (:mod:`firmlog.server.signing`).

What the workers of one server share besides is a :class:`WorkerHost`, made
by the parent before it forks:

- its :class:`TreeSizeBoard`, in shared memory, where each worker writes the
  largest tree size it has shown (a checkpoint it published, or read from
  storage and served) and every worker reads the largest of all. A worker
  whose own latest checkpoint is smaller re-reads it from storage before it
  answers (:mod:`firmlog.server.reader`): a client shown tree size N by one
  worker is never shown less by another;
- a private directory, made when the supervisor starts and removed when it
  stops, where each worker listens on a Unix socket of its own
  (``worker-<slot>.sock``) for the other workers: ``/metrics`` is answered
  with the metrics of every worker, merged (:mod:`firmlog.server.metrics`);
- with witnesses, one worker (slot 0, the *cosigner*) has checkpoints
  cosigned for the whole host, so that the witnesses get the traffic of one
  server whatever N is; the others wake it through a pipe after each commit
  (:mod:`firmlog.server.witnessing`).

The parent (:class:`Supervisor`) only supervises, in one thread with no event
loop:

- each worker reports on a pipe when it listens (``ready``) or why it refuses
  to start (``refused <problem>``); once all N listen, ``on_ready`` runs once
  (the start-up banner); if any worker refuses or dies before all listened,
  the others are stopped and :class:`WorkersRefused` carries the problem (the
  command prints it in one line and exits 2);
- SIGTERM and SIGINT are forwarded to every worker as SIGTERM, and the parent
  waits for them to stop gracefully (SIGKILL past ``stop_timeout``);
- a worker that dies while serving is logged and restarted after a backoff
  (``RESTART_MIN`` doubling to ``RESTART_MAX``; back to the minimum once a
  worker has served ``RESTART_RESET`` seconds);
- the workers die with the parent: if the parent is killed (SIGKILL), the
  kernel kills them too (Linux's parent-death signal), so nothing keeps
  the port or the database after a crash of the supervisor.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import selectors
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

__all__ = [
    "Supervisor",
    "TreeSizeBoard",
    "WorkerHost",
    "WorkerRefused",
    "WorkersRefused",
    "default_workers",
]

log = structlog.get_logger("firmlog.workers")

COSIGNER_SLOT = 0
"""The worker that has checkpoints cosigned for the whole host (with witnesses)."""
RESTART_MIN = 0.25
"""Seconds before a worker that died is restarted, the first time."""
RESTART_MAX = 30.0
"""The longest wait before a restart, after repeated deaths."""
RESTART_RESET = 30.0
"""A worker that served this long before it died is restarted after RESTART_MIN again."""
STOP_TIMEOUT = 90.0
"""Seconds the workers get to stop gracefully (they drain their pools) before SIGKILL."""

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_READY = b"ready"
_REFUSED = b"refused "
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def default_workers() -> int:
    """One worker per core."""
    return os.cpu_count() or 1


class TreeSizeBoard:
    """The largest tree size each worker slot has shown, in memory shared by the
    parent and every worker it forks (:class:`firmlog.server.reader.HostTreeSize`).

    One aligned 64-bit word per slot, each written only by the worker running in
    that slot (:meth:`claim`), and only ever raised: no lock is needed, and no
    worker that dies holding one can block the others. A worker restarted in a
    slot takes it over as it was (tree sizes never go back). Readers take the
    largest word; an aligned 64-bit store or load is one instruction on the
    platforms this runs on, so it is never read half-written.
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a tree size board needs at least one slot, got {slots}")
        # An anonymous shared mapping: the same memory in every process forked later.
        self._memory = mmap.mmap(-1, 8 * slots, flags=mmap.MAP_SHARED)
        self._words = (ctypes.c_int64 * slots).from_buffer(self._memory)
        self._slot: int | None = None

    def claim(self, slot: int) -> None:
        """In a worker: this process writes ``slot`` from now on."""
        if not 0 <= slot < len(self._words):
            raise ValueError(f"slot {slot} is not on a board of {len(self._words)}")
        self._slot = slot

    def largest(self) -> int:
        return int(max(self._words))

    def raise_to(self, tree_size: int) -> None:
        if self._slot is None:
            raise RuntimeError("only a worker that claimed a slot writes the board")
        self._words[self._slot] = max(self._words[self._slot], tree_size)


class WorkerHost:
    """What the ``count`` workers of one server share (module docstring): the
    :attr:`board`, and the :attr:`directory` of their sockets (set by
    :meth:`Supervisor.run` before it forks). In a worker, :attr:`slot` is its own."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.board = TreeSizeBoard(count)
        self.directory: Path | None = None
        self.slot: int | None = None
        # Written by the other workers after a commit, read by the cosigner; both
        # ends stay open in the parent, so a restarted cosigner has them too.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    @property
    def cosigner(self) -> bool:
        """Whether this worker has checkpoints cosigned for the host."""
        return self.slot == COSIGNER_SLOT

    @property
    def cosigner_wakeups(self) -> int:
        """The file descriptor the cosigner watches (:meth:`drain_wakeups` when readable)."""
        return self._wake_r

    def wake_cosigner(self) -> None:
        """Tell the cosigner that this worker committed a tree (never blocks: a full
        pipe already wakes it)."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def claim(self, slot: int) -> None:
        """In a worker: it runs in ``slot``."""
        self.board.claim(slot)
        self.slot = slot

    def socket_of(self, slot: int) -> Path:
        """Where the worker in ``slot`` listens for the other workers."""
        if self.directory is None:
            raise RuntimeError("the workers' directory exists only while the supervisor runs")
        return self.directory / f"worker-{slot}.sock"


class WorkerRefused(Exception):
    """Raised in a worker that must not start: the message is the one-line problem."""


class WorkersRefused(Exception):
    """The workers did not all start: the message is the one-line problem (exit 2)."""


WorkerMain = Callable[[Callable[[], None]], None]
"""What a worker runs: serve, calling its argument once it listens; raise
WorkerRefused if it must not start; return when stopped (SIGTERM)."""


@dataclass(slots=True)
class _Worker:
    slot: int
    pid: int
    status: int  # the read end of the worker's status pipe
    started: float
    ready_at: float | None = None
    report: bytearray = field(default_factory=bytearray)

    def refusal(self) -> str | None:
        for line in bytes(self.report).splitlines():
            if line.startswith(_REFUSED):
                return line[len(_REFUSED) :].decode("utf-8", "replace")
        return None


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` dies."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:  # no parent-death signal: watch for being re-parented

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, name="firmlog-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)


class Supervisor:
    """Forks ``count`` workers running ``main`` and keeps them running (module docstring).

    ``on_ready`` runs in the parent, once, when every worker listens. Create
    and :meth:`run` it in the main thread of a process with no event loop and
    no other thread running. :attr:`host` is shared by the workers; in each,
    it is claimed for the worker's slot before ``main`` runs.
    """

    def __init__(
        self,
        count: int,
        main: WorkerMain,
        *,
        on_ready: Callable[[], None] | None = None,
        stop_timeout: float = STOP_TIMEOUT,
        restart_min: float = RESTART_MIN,
        restart_max: float = RESTART_MAX,
    ) -> None:
        if count < 1:
            raise ValueError(f"a supervisor needs at least one worker, got {count}")
        self._count = count
        self._main = main
        self._on_ready = on_ready
        self._stop_timeout = stop_timeout
        self._restart_min = restart_min
        self._restart_max = restart_max
        self._workers: dict[int, _Worker] = {}  # by pid
        self.host = WorkerHost(count)
        self._restarts: dict[int, float] = {}  # slot -> when (monotonic)
        self._backoff: dict[int, float] = {}  # slot -> the next wait
        self._selector = selectors.DefaultSelector()
        self._wake_r = -1
        self._wake_w = -1
        self._signals: list[int] = []
        self._serving = False  # every worker listened once
        self._stop_deadline: float | None = None
        self._failed: str | None = None  # why the start failed
        self._unclean = False

    # -- the parent ---------------------------------------------------------------

    def run(self) -> int:
        """Run the workers until SIGTERM or SIGINT; the exit status (0: all stopped
        gracefully). Raises WorkersRefused if they did not all start."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (*_STOP_SIGNALS, signal.SIGCHLD)
        }
        old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        self.host.directory = Path(tempfile.mkdtemp(prefix="firmlog-workers-"))
        try:
            for slot in range(self._count):
                self._spawn(slot)
            while self._workers or (self._stop_deadline is None and self._restarts):
                self._select()
                self._handle_signals()
                self._reap()
                self._restart_due()
                self._enforce_stop_deadline()
        finally:
            self._kill_all()
            shutil.rmtree(self.host.directory, ignore_errors=True)
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        if self._failed is not None:
            raise WorkersRefused(self._failed)
        return 1 if self._unclean else 0

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)  # handled in the loop (the wakeup fd wakes it)

    def _select(self) -> None:
        now = time.monotonic()
        due = [*self._restarts.values()]
        if self._stop_deadline is not None:
            due.append(self._stop_deadline)
        timeout = max(0.0, min(due) - now) if due else None
        for key, _ in self._selector.select(timeout):
            fd = key.fd
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    while os.read(fd, 512):
                        pass
                continue
            worker = next((w for w in self._workers.values() if w.status == fd), None)
            if worker is not None:
                self._read_status(worker)

    def _read_status(self, worker: _Worker) -> None:
        """Read what the worker reported, until EAGAIN (or its end, once it died)."""
        while True:
            try:
                chunk = os.read(worker.status, 4096)
            except BlockingIOError:
                return
            if not chunk:
                self._selector.unregister(worker.status)
                os.close(worker.status)
                worker.status = -1
                return
            worker.report += chunk
            if worker.ready_at is None and _READY + b"\n" in worker.report:
                worker.ready_at = time.monotonic()
                self._check_all_ready()

    def _check_all_ready(self) -> None:
        if self._serving or self._stop_deadline is not None:
            return
        ready = [w for w in self._workers.values() if w.ready_at is not None]
        if len(ready) == self._count:
            self._serving = True
            log.info("workers started", workers=self._count, pids=sorted(self._workers))
            if self._on_ready is not None:
                self._on_ready()

    def _handle_signals(self) -> None:
        signals, self._signals = self._signals, []
        if any(s in _STOP_SIGNALS for s in signals):
            self._stop("stopping the workers", signal=signal.Signals(signals[-1]).name)

    def _stop(self, why: str, **context: object) -> None:
        """SIGTERM every worker (again, if they were told already)."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self._stop_timeout
            self._restarts.clear()
            # A refusal to start is said in one line, by the command: nothing else then.
            say = log.debug if self._failed is not None else log.info
            say(why, workers=len(self._workers), **context)
        for pid in self._workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _reap(self) -> None:
        while self._workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self._workers.pop(pid, None)
            if worker is None:
                continue
            if worker.status >= 0:  # what it wrote before it died
                os.set_blocking(worker.status, True)
                self._read_status(worker)
            self._exited(worker, status)

    def _exited(self, worker: _Worker, status: int) -> None:
        how = _describe(status)
        if self._stop_deadline is not None:
            if status != 0:
                self._unclean = True
            say = log.debug if self._failed is not None else log.info
            say("worker stopped", slot=worker.slot, pid=worker.pid, outcome=how)
            return
        if not self._serving:  # during start-up: nobody is served yet, give up
            self._failed = worker.refusal() or (
                f"a worker process {how} while starting; see the log above, and check "
                "the data dir, config.toml and --database"
            )
            self._stop("a worker failed to start: stopping the others", slot=worker.slot)
            return
        now = time.monotonic()
        served = now - worker.ready_at if worker.ready_at is not None else 0.0
        wait = self._backoff.get(worker.slot, self._restart_min)
        if served >= RESTART_RESET:
            wait = self._restart_min
        self._backoff[worker.slot] = min(wait * 2, self._restart_max)
        self._restarts[worker.slot] = now + wait
        log.warning(
            "worker died; restarting it",
            slot=worker.slot,
            pid=worker.pid,
            outcome=how,
            refused=worker.refusal(),
            restart_in=round(wait, 3),
        )

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot, when in sorted(self._restarts.items()):
            if when <= now and self._stop_deadline is None:
                del self._restarts[slot]
                pid = self._spawn(slot)
                log.info("worker restarted", slot=slot, pid=pid)

    def _enforce_stop_deadline(self) -> None:
        if self._stop_deadline is None or time.monotonic() < self._stop_deadline:
            return
        for pid in self._workers:
            log.error("worker did not stop in time; killing it", pid=pid)
        self._kill_all()
        self._unclean = True

    def _kill_all(self) -> None:
        """SIGKILL and reap every worker still running."""
        for pid in list(self._workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid, worker in list(self._workers.items()):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            if worker.status >= 0:
                self._selector.unregister(worker.status)
                os.close(worker.status)
            del self._workers[pid]

    def _spawn(self, slot: int) -> int:
        read_end, write_end = os.pipe()
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            code = 1
            try:
                os.close(read_end)
                self._forget_parent()
                _die_with_parent(parent)
                code = self._work(slot, write_end)
            except BaseException:
                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self._workers[pid] = _Worker(slot, pid, read_end, time.monotonic())
        self._selector.register(read_end, selectors.EVENT_READ)
        return pid

    # -- in a worker ----------------------------------------------------------------

    def _forget_parent(self) -> None:
        """Drop what belongs to the parent: its signal handling and file descriptors."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in (self._wake_r, self._wake_w, *(w.status for w in self._workers.values())):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._selector.close()  # the parent's epoll, not ours
        self._workers = {}

    def _work(self, slot: int, status: int) -> int:
        structlog.contextvars.bind_contextvars(worker=slot)
        self.host.claim(slot)

        def ready() -> None:
            _write_all(status, _READY + b"\n")

        try:
            self._main(ready)
        except WorkerRefused as exc:
            problem = " ".join(str(exc).split())
            _write_all(status, _REFUSED + problem.encode("utf-8") + b"\n")
            return 2
        return 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # the parent is gone: nobody to tell
                return
            raise
