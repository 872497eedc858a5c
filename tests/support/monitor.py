"""A monitor under test: the real app on a real loopback port, and helpers to drive a log."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from firmlog.client.cosignature import CosignatureSigner
from firmlog.client.keys import Ed25519Verifier
from firmlog.monitor.app import SERVICES, make_app
from firmlog.monitor.config import MonitorConfig
from firmlog.monitor.datadir import init_data_dir
from firmlog.monitor.state import WatchedLog
from support.harness import BlackBoxLog, ServiceTestServer

WITNESS_NAME = "monitor.test/witness"
NOWHERE = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused


class MonitorUnderTest:
    def __init__(
        self,
        data_dir: Path,
        log_url: str,
        log_key: Ed25519Verifier,
        operator_keys: Sequence[Ed25519Verifier] = (),
        *,
        poll_interval: float = 0.05,
        max_backoff: float = 0.3,
        peers: Sequence[str] = (),
        gossip_interval: float = 0.1,
        port: int | None = None,
        request_timeout: float = 5.0,
        **options: Any,
    ) -> None:
        """``options`` set other fields of the MonitorConfig."""
        self.data_dir = data_dir
        self.port = port
        self.config = MonitorConfig(
            data_dir=data_dir,
            log_url=log_url,
            log_key=log_key,
            operator_keys=tuple(operator_keys),
            poll_interval=poll_interval,
            max_backoff=max_backoff,
            request_timeout=request_timeout,
            peers=tuple(peers),
            gossip_interval=gossip_interval,
            **options,
        ).validate()
        self.server: TestServer | None = None
        self.signer: CosignatureSigner | None = None

    async def start(self) -> None:
        self.signer = init_data_dir(self.data_dir, WITNESS_NAME).signer
        self.server = ServiceTestServer(
            make_app(self.config, self.signer), self.config.http, "monitor", self.port
        )
        await self.server.start_server()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    @property
    def base(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    @property
    def watched(self) -> WatchedLog:
        assert self.server is not None
        return self.server.app[SERVICES].watched

    async def add_checkpoint(
        self, session: ClientSession, old: int, proof: Sequence[bytes], note: bytes
    ) -> tuple[int, str, bytes]:
        body = f"old {old}\n".encode() + b"".join(base64.b64encode(h) + b"\n" for h in proof)
        async with session.post(f"{self.base}/add-checkpoint", data=body + b"\n" + note) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


def free_port() -> int:
    """A loopback port nothing listens on now (for monitors that must know each other's URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def eventually(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Wait until ``predicate()`` holds (polling), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


async def checkpoint(session: ClientSession, base: str) -> bytes:
    async with session.get(f"{base}/checkpoint") as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


async def consistency(session: ClientSession, base: str, old: int, new: int) -> list[bytes]:
    async with session.get(f"{base}/v1/proof/consistency?old={old}&new={new}") as resp:
        assert resp.status == 200, await resp.text()
        return [base64.b64decode(h) for h in (await resp.json())["hashes"]]


async def grow(log: BlackBoxLog, session: ClientSession, start: int, count: int) -> None:
    results = await asyncio.gather(
        *(log.submit(session, log.entry(i)) for i in range(start, start + count))
    )
    assert all(status == 200 for status, _ in results), results[:3]
