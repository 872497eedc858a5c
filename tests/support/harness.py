"""A log server under test: the real app on a real loopback port, on either backend.

- :class:`LogUnderTest` runs the app in the test's own process and event loop.
  Where the order of events matters, a test synchronizes on what the server
  does, never on a sleep: it holds the sequencer's clock
  (:class:`SequencerClock`) so that what it submits is one batch, wraps the
  real storage to observe or fail it (support.faults), and waits with
  :func:`until` for the pool to hold what it submitted.
- :class:`LogProcessUnderTest` is the same log served by a real
  ``firmlog-server serve --workers N`` process (two workers by default): the
  kernel hands each connection to one of the workers, so a test of the HTTP
  contract alone runs against both (tests/server/conftest.py ``http_log``).

What both offer, and all a black-box test may use, is :class:`BlackBoxLog`'s:
the base URL, the log's and the operator's keys, its config, valid entries,
submission and full verification of a bundle.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

import firmlog.server.app as server_app
from firmlog.client.bundle import ProofBundle
from firmlog.client.checkpoint import open_checkpoint
from firmlog.client.keys import Ed25519Signer, Ed25519Verifier, generate_key
from firmlog.client.merkle import leaf_hash, verify_inclusion
from firmlog.server.app import SERVICES, Services, make_app
from firmlog.server.config import (
    CONFIG_FILE,
    LOG_KEY_FILE,
    OPERATOR_PUB_FILE,
    LimitsConfig,
    SequencerConfig,
    ServerConfig,
)
from firmlog.server.storage import Storage
from firmlog.service.http import HTTPConfig, ServiceRunner
from support.entries import admission
from support.processes import Process, script, stop_all

ORIGIN = "test.firmlog.example/log"


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds (checked every millisecond); fail the test
    saying what did not happen if it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout} s for {what}")
        await asyncio.sleep(0.001)


class SequencerClock:
    """The sequencer's clock (time.monotonic), which a test can hold still.

    While it is held no pending entry ages, so the sequencer takes a batch only
    when ``batch_size`` entries are pending: what is submitted meanwhile is one
    batch, integrated as soon as the clock runs again.
    """

    def __init__(self) -> None:
        self._held_at: float | None = None

    def __call__(self) -> float:
        return time.monotonic() if self._held_at is None else self._held_at

    @contextmanager
    def held(self) -> Iterator[None]:
        self._held_at = time.monotonic()
        try:
            yield
        finally:
            self._held_at = None


class ServiceTestServer(TestServer):
    """An app on loopback with the connection handling production runs (ServiceRunner)."""

    def __init__(
        self, app: web.Application, http: HTTPConfig, name: str, port: int | None = None
    ) -> None:
        super().__init__(app, host="127.0.0.1", port=port)
        self.http = http
        self.name = name

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return ServiceRunner(self.app, self.http, name=self.name, **kwargs)


class BlackBoxLog:
    """A log server seen from outside: what a test of the HTTP contract alone uses.

    ``log_key`` and ``operator`` are the log's and the operator's signer keys
    (fresh unless given); ``config`` is the server's, with ``sequencer`` setting
    fields of its SequencerConfig."""

    def __init__(
        self,
        database_url: str,
        data_dir: Path,
        log_key: Ed25519Signer | None = None,
        operator: Ed25519Signer | None = None,
        witness_policy: Path | None = None,
        witness_timeout: float = 10.0,
        publish_dir: Path | None = None,
        **sequencer: Any,
    ) -> None:
        self.log_key = log_key or generate_key(ORIGIN)
        self.operator = operator or generate_key("operator.example")
        self.config = ServerConfig(
            data_dir=data_dir,
            origin=self.log_key.name,
            database=database_url,
            sequencer=replace(SequencerConfig(batch_interval=0.05), **sequencer),
            limits=LimitsConfig(),
            witness_policy=str(witness_policy) if witness_policy else "",
            witness_timeout=witness_timeout,
            publish_dir=str(publish_dir) if publish_dir else "",
        ).validate()

    served_by_workers = False
    """Whether worker processes serve it (``serve --workers N``), not this process."""

    @property
    def verifier(self) -> Ed25519Verifier:
        return self.log_key.verifier

    @property
    def base(self) -> str:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def pids(self) -> set[int]:
        """The processes that answer its requests."""
        raise NotImplementedError

    def entry(self, i: int) -> bytes:
        """A distinct valid entry (an operator-signed vendor admission)."""
        return admission(self.operator, f"v{i}.example")

    async def submit(self, session: ClientSession, entry: bytes) -> tuple[int, bytes]:
        async with session.post(f"{self.base}/v1/entries", data=entry) as resp:
            return resp.status, await resp.read()

    def check_bundle(self, bundle: bytes, entry: bytes) -> ProofBundle:
        """Verify a bundle fully: checkpoint signature, inclusion of the entry."""
        parsed = ProofBundle.parse(bundle)
        assert parsed.extra == entry
        cp = open_checkpoint(parsed.checkpoint, self.verifier).checkpoint
        verify_inclusion(leaf_hash(entry), parsed.index, cp.tree_size, parsed.proof, cp.root_hash)
        return parsed


class LogUnderTest(BlackBoxLog):
    """The app in this process, on a loopback port (module docstring)."""

    def __init__(
        self,
        database_url: str,
        data_dir: Path,
        log_key: Ed25519Signer | None = None,
        operator: Ed25519Signer | None = None,
        storage: Callable[[Storage], Storage] | None = None,
        witness_policy: Path | None = None,
        witness_timeout: float = 10.0,
        publish_dir: Path | None = None,
        **sequencer: Any,
    ) -> None:
        """``storage`` wraps the real storage the app opens (support.faults);
        ``sequencer`` sets fields of its SequencerConfig."""
        super().__init__(
            database_url,
            data_dir,
            log_key,
            operator,
            witness_policy,
            witness_timeout,
            publish_dir,
            **sequencer,
        )
        self.server: TestServer | None = None
        self.clock = SequencerClock()
        self._wrap_storage = storage

    @property
    def base(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    @property
    def services(self) -> Services:
        """What the running app's handlers use: its storage, sequencer, metrics."""
        assert self.server is not None
        return self.server.app[SERVICES]

    @property
    def pending(self) -> int:
        """How many submissions wait in the sequencer's pool."""
        return int(self.sample("firmlog_pool_entries"))

    def sample(self, name: str, **labels: str) -> float:
        """The value of one sample of the running app's metrics (0 if it has none yet)."""
        value = self.services.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    async def start(self, port: int | None = None) -> None:
        app = make_app(self.config, self.log_key, [self.operator.verifier])
        self.server = ServiceTestServer(app, self.config.http, "log server", port)
        with self._injected():
            await self.server.start_server()

    @contextmanager
    def _injected(self) -> Iterator[None]:
        """While the app starts, it opens its storage wrapped by ``storage`` and
        builds its sequencer with this log's clock."""
        real_open, real_sequencer = server_app.open_storage, server_app.Sequencer
        wrap = self._wrap_storage

        def open_storage(url: str) -> Storage:
            storage = real_open(url)
            return storage if wrap is None else wrap(storage)

        server_app.open_storage = open_storage
        server_app.Sequencer = functools.partial(real_sequencer, clock=self.clock)
        try:
            yield
        finally:
            server_app.open_storage, server_app.Sequencer = real_open, real_sequencer

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    def pids(self) -> set[int]:
        return {os.getpid()}


class LogProcessUnderTest(BlackBoxLog):
    """The same log served by ``firmlog-server serve --workers N`` (module docstring).

    Its data dir is made to hold this log's key, the operator's verifier key and
    a config.toml from :attr:`config`; its output goes to ``<data dir>/server.out``,
    whose tail is printed when it stops (pytest shows it for failed tests)."""

    def __init__(
        self,
        database_url: str,
        data_dir: Path,
        log_key: Ed25519Signer | None = None,
        operator: Ed25519Signer | None = None,
        witness_policy: Path | None = None,
        witness_timeout: float = 10.0,
        publish_dir: Path | None = None,
        *,
        workers: int = 2,
        **sequencer: Any,
    ) -> None:
        super().__init__(
            database_url,
            data_dir,
            log_key,
            operator,
            witness_policy,
            witness_timeout,
            publish_dir,
            **sequencer,
        )
        self.workers = workers
        self.served_by_workers = workers > 1
        self.process = _ServeProcess(self)

    @property
    def base(self) -> str:
        return self.process.base

    async def start(self) -> None:
        self._write_data_dir()
        await self.process.start()

    async def stop(self) -> None:
        stop_all([self.process])

    def pids(self) -> set[int]:
        """Its workers (or, with one, the server process itself)."""
        pid = self.process.pid
        return self.process.children() if self.workers > 1 else ({pid} if pid else set())

    def _write_data_dir(self) -> None:
        data_dir = self.config.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / LOG_KEY_FILE).write_text(self.log_key.skey + "\n", encoding="utf-8")
        (data_dir / OPERATOR_PUB_FILE).write_text(
            self.operator.verifier.vkey + "\n", encoding="utf-8"
        )
        (data_dir / CONFIG_FILE).write_text(_config_toml(self.config), encoding="utf-8")


def _config_toml(config: ServerConfig) -> str:
    """config.toml for ``config``'s origin, sequencer, witnessing and publish dir."""
    lines = [f"origin = {json.dumps(config.origin)}"]
    if config.witness_policy:
        lines.append(f"witness_policy = {json.dumps(config.witness_policy)}")
    lines.append(f"witness_timeout = {config.witness_timeout!r}")
    if config.publish_dir:
        lines.append(f"publish_dir = {json.dumps(config.publish_dir)}")
    lines.append("\n[sequencer]")
    lines += [f"{f.name} = {getattr(config.sequencer, f.name)!r}" for f in fields(config.sequencer)]
    return "\n".join(lines) + "\n"


class _ServeProcess(Process):
    def __init__(self, log: LogProcessUnderTest) -> None:
        data_dir = log.config.data_dir
        super().__init__(data_dir, name=f"{data_dir.name} ({log.workers} workers)")
        self.log_path = data_dir / "server.out"
        self._log_under_test = log

    def command(self) -> list[str]:
        log = self._log_under_test
        cmd = [script("firmlog-server"), "serve", "--data-dir", str(self.data_dir)]
        cmd += ["--listen", f"127.0.0.1:{self.port}", "--log-json"]
        cmd += ["--database", log.config.database_url, "--workers", str(log.workers)]
        return cmd


SERVED_BY = ["in-process", "2-workers"]
"""How a black-box test's log is served (tests/server/conftest.py ``served_by``)."""


def make_log(
    served_by: str,
    database_url: str,
    data_dir: Path,
    log_key: Ed25519Signer | None = None,
    operator: Ed25519Signer | None = None,
    **options: Any,
) -> BlackBoxLog:
    """A log served in this process or by a ``serve --workers 2`` process; not started.
    ``options`` are the other arguments of :class:`BlackBoxLog`."""
    if served_by == "in-process":
        return LogUnderTest(database_url, data_dir, log_key, operator, **options)
    if served_by == "2-workers":
        return LogProcessUnderTest(database_url, data_dir, log_key, operator, workers=2, **options)
    raise ValueError(f"served_by must be one of {SERVED_BY}, got {served_by!r}")
