"""The ledger over HTTP: a client of a log under test that checks every answer,
and acme.example's keys (R1, R2, R3) and another vendor's (OTHER)."""

from __future__ import annotations

import json

from aiohttp import ClientSession

from firmlog.client.entries import EntryBody, VendorAdmission, sign_entry
from firmlog.client.keys import Ed25519Signer, generate_key
from support.harness import BlackBoxLog
from support.logcheck import verify_whole_log

R1 = generate_key("acme.example/release")
R2 = generate_key("acme.example/security")
R3 = generate_key("acme.example/spare")
OTHER = generate_key("other.example/release")


class Client:
    """Posts entries to ``log``: an accepted one's bundle is verified, a refused one
    must leave the whole log as it was."""

    def __init__(self, log: BlackBoxLog, session: ClientSession) -> None:
        self.log, self.session = log, session

    async def post(self, body: EntryBody, *signers: Ed25519Signer) -> tuple[int, dict[str, object]]:
        raw = sign_entry(body, signers)
        status, resp = await self.log.submit(self.session, raw)
        if status == 200:
            bundle = self.log.check_bundle(resp, raw)
            return status, {"index": bundle.index}
        return status, json.loads(resp)

    async def ok(self, body: EntryBody, *signers: Ed25519Signer) -> int:
        status, got = await self.post(body, *signers)
        assert status == 200, got
        index = got["index"]
        assert isinstance(index, int)
        return index

    async def refused(
        self, status: int, match: str, body: EntryBody, *signers: Ed25519Signer
    ) -> None:
        before = await verify_whole_log(self.log.base, self.log.verifier)
        size = before.checkpoint.tree_size
        got_status, got = await self.post(body, *signers)
        assert got_status == status, got
        assert match in str(got["error"]), got["error"]
        after = await verify_whole_log(self.log.base, self.log.verifier, previous=before)
        assert after.checkpoint.tree_size == size, "a refused entry changed the log"

    async def get(self, path: str) -> tuple[int, object]:
        async with self.session.get(f"{self.log.base}{path}") as resp:
            return resp.status, await resp.json()

    async def admit(
        self, *keys: Ed25519Signer, threshold: int = 1, vendor: str = "acme.example"
    ) -> int:
        body = VendorAdmission(vendor, tuple(k.verifier.vkey for k in keys), threshold)
        return await self.ok(body, self.log.operator)
