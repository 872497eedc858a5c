"""A real log server on 127.0.0.1 in a background thread, for synchronous clients.

The server is :class:`support.harness.LogUnderTest` (the real aiohttp app) on
an event loop of its own thread, so that the client's urllib can talk to it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from firmlog.client.keys import Ed25519Signer
from firmlog.client.online import LogClient
from firmlog.client.policy import Policy, parse_policy
from support.entries import admission
from support.harness import LogUnderTest

T = TypeVar("T")


class LiveLog:
    """A real firmlog log server on 127.0.0.1, run in a background thread."""

    def __init__(
        self,
        data_dir: Path,
        log_key: Ed25519Signer | None = None,
        operator: Ed25519Signer | None = None,
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = LogUnderTest(
            f"sqlite:///{data_dir / 'log.db'}",
            data_dir,
            log_key=log_key,
            operator=operator,
            batch_interval=0.005,
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def __enter__(self) -> LiveLog:
        self.thread.start()
        self._run(self.log.start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._run(self.log.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
            self.loop.close()

    @property
    def url(self) -> str:
        return self.log.base

    @property
    def log_key(self) -> Ed25519Signer:
        return self.log.log_key

    @property
    def operator(self) -> Ed25519Signer:
        return self.log.operator

    def client(self, **kwargs: Any) -> LogClient:
        return LogClient(self.url, **kwargs)

    def policy(self) -> Policy:
        return parse_policy(f"log {self.log_key.verifier.vkey}\nquorum none\n")

    def submit(self, entry: bytes) -> bytes:
        return self.client().submit(entry)

    def submit_many(self, entries: Sequence[bytes]) -> list[bytes]:
        """Submit concurrently (the sequencer integrates them in batches)."""
        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(self.submit, entries))

    def admit_vendor(self, vendor: str = "acme.example") -> bytes:
        """Admit ``vendor`` with support.entries.VENDOR_KEY (the operator signs it)."""
        return self.submit(admission(self.operator, vendor))

    def filler(self, start: int, count: int) -> list[bytes]:
        """Distinct valid entries (operator-signed vendor admissions)."""
        return [self.log.entry(i) for i in range(start, start + count)]
