"""A log server under test: the real app on a real loopback port, on either backend."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from firmlog.client.bundle import ProofBundle
from firmlog.client.checkpoint import open_checkpoint
from firmlog.client.entries import VendorAdmission, sign_entry
from firmlog.client.keys import Ed25519Signer, Ed25519Verifier, generate_key
from firmlog.client.merkle import leaf_hash, verify_inclusion
from firmlog.server.app import make_app
from firmlog.server.config import LimitsConfig, SequencerConfig, ServerConfig

ORIGIN = "test.firmlog.example/log"
_VENDOR_KEY = generate_key("vendor.example/release")


class LogUnderTest:
    def __init__(
        self,
        database_url: str,
        data_dir: Path,
        log_key: Ed25519Signer | None = None,
        operator: Ed25519Signer | None = None,
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
        ).validate()
        self.server: TestServer | None = None

    @property
    def verifier(self) -> Ed25519Verifier:
        return self.log_key.verifier

    @property
    def base(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def start(self) -> None:
        app = make_app(self.config, self.log_key, self.operator)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    def entry(self, i: int) -> bytes:
        """A distinct valid entry (an operator-signed vendor admission)."""
        body = VendorAdmission(
            vendor=f"v{i}.example", keys=(_VENDOR_KEY.verifier.vkey,), threshold=1
        )
        return sign_entry(body, [self.operator])

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
