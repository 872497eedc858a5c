"""Hostile submitters against the log's promises, over real HTTP on both backends.

One identity per entry (its signed text), ordered key sets, exact signature
lines, and per-entry verdicts: nothing one submitter sends can change what is
logged under another's name or fail another submitter's entry.

The tests that only talk HTTP run against the app in this process and against
``serve --workers 2`` (``http_client``); those that hold the sequencer's clock
to make one batch, or inject faults into its storage or rules, in this process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from support.entries import IMAGE, release
from support.faults import StorageWrapper
from support.harness import BlackBoxLog, LogUnderTest, until
from support.hostile import colliding_vkeys, repeat_first_signature, with_signature_lines
from support.ledger import OTHER, R1, R2, R3, Client
from support.logcheck import verify_whole_log

import firmlog.client.ledger as ledger_rules
from firmlog.client.bundle import ProofBundle
from firmlog.client.canonjson import canonical_json
from firmlog.client.entries import (
    Entry,
    KeySet,
    Revocation,
    VendorAdmission,
    entry_json,
    entry_type,
    parse_entry,
    sign_entry,
)
from firmlog.client.errors import UpdateRefused
from firmlog.client.keys import Ed25519Signer, generate_key
from firmlog.client.note import Signature, sign_note
from firmlog.client.online import LogClient, check_not_revoked
from firmlog.client.policy import parse_policy
from firmlog.client.verify import DeviceState, PinnedVendorKeys, verify_update
from firmlog.server.storage import EntryRow, Storage, StorageUnavailable

MALLORY = generate_key("mallory.example/x")


def mangle(raw: bytes, how: str) -> bytes:
    """The same signed text with other signature lines: one more line by a key
    nobody admitted, or the first line twice."""
    if how == "repeated line":
        return repeat_first_signature(raw)
    text = parse_entry(raw).text
    line = Signature(MALLORY.name, MALLORY.key_id, MALLORY.sign(text.encode()))
    return with_signature_lines(raw, [line])


async def tree_size(log: BlackBoxLog) -> int:
    return (await verify_whole_log(log.base, log.verifier)).checkpoint.tree_size


# -- defect 1: a replayed key rotation ------------------------------------------------


@pytest.mark.parametrize("how", ["unknown line", "repeated line"])
async def test_a_replayed_rotation_is_the_logged_entry(http_client: Client, how: str) -> None:
    """{R1} -> {R1, R2} -> {R1, R3} drops a compromised R2. Re-submitting the first
    rotation with other signature lines must not make R2 current again."""
    client = http_client
    log = client.log
    await client.admit(R1)
    first = sign_entry(KeySet("acme.example", (R1.verifier.vkey, R2.verifier.vkey), 1, 2), [R1])
    first_index = ProofBundle.parse((await log.submit(client.session, first))[1]).index
    second = KeySet("acme.example", (R1.verifier.vkey, R3.verifier.vkey), 1, 3)
    await client.ok(second, R1)
    size = await tree_size(log)

    status, answer = await log.submit(client.session, mangle(first, how))
    assert status == 200, answer
    bundle = log.check_bundle(answer, first)  # the original entry, byte for byte
    assert bundle.index == first_index
    assert await tree_size(log) == size  # nothing new was logged

    status, vendor = await client.get("/v1/vendors/acme.example")
    assert status == 200
    assert vendor["keys"] == [R1.verifier.vkey, R3.verifier.vkey]  # type: ignore[index]
    assert vendor["serial"] == 3  # type: ignore[index]
    await client.refused(400, "not one of the vendor's keys", release("9.0"), R2)


# -- defect 2: a revoked release logged again ------------------------------------------


@pytest.mark.parametrize("how", ["unknown line", "repeated line"])
async def test_a_revoked_release_cannot_be_logged_again(
    http_client: Client, how: str, tmp_path: Path
) -> None:
    client = http_client
    log = client.log
    await client.admit(R1)
    raw = sign_entry(release(), [R1])
    status, answer = await log.submit(client.session, raw)
    assert status == 200
    original = ProofBundle.parse(answer).index
    entry = parse_entry(raw)
    revoked_at = await client.ok(
        Revocation("acme.example", entry.identity.hex(), "bricks devices"), R1
    )
    size = await tree_size(log)

    again = mangle(raw, how)
    status, answer = await log.submit(client.session, again)
    assert status == 200, answer
    assert log.check_bundle(answer, raw).index == original
    assert await tree_size(log) == size
    # Nothing is logged under the new leaf hash; the release's revocations are
    # found by its identity (or by the leaf hash that is logged).
    new_leaf = parse_entry(again).leaf_hash.hex()
    assert (await client.get(f"/v1/revocations/{new_leaf}"))[0] == 404
    for ref in (entry.identity.hex(), entry.leaf_hash.hex()):
        status, got = await client.get(f"/v1/revocations/{ref}")
        assert status == 200
        assert [r["index"] for r in got["revocations"]] == [revoked_at]  # type: ignore[index]

    # A device given the answer refuses the image as revoked (firmlog verify --log).
    image = tmp_path / "firmware.bin"
    image.write_bytes(IMAGE)
    policy = parse_policy(f"log {log.verifier.vkey}\nquorum none\n")
    keys = PinnedVendorKeys((R1.verifier,), vendor="acme.example")

    def device() -> None:
        update = verify_update(image, answer, policy, keys, DeviceState("router-9000", 0))
        check_not_revoked(LogClient(log.base), update, keys)

    with pytest.raises(UpdateRefused) as info:
        await asyncio.to_thread(device)
    assert info.value.step == "revocation"
    assert f"log index {revoked_at}: bricks devices" in info.value.detail


async def test_one_text_signed_two_ways_in_one_batch_is_one_entry(
    database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    """A 1-of-2 vendor's release arrives signed by one key and by the other in the
    same batch: one entry, both submitters get its index and the same bundle."""
    log = LogUnderTest(database_url, tmp_path, batch_size=64, batch_interval=0.05)
    await log.start()
    try:
        client = Client(log, session)
        await client.admit(R1, R2)
        size = await tree_size(log)
        one, other = sign_entry(release(), [R1]), sign_entry(release(), [R2])
        (s1, b1), (s2, b2) = await one_batch(log, session, [one, other])
        assert (s1, s2) == (200, 200)
        assert b1 == b2
        log.check_bundle(b1, one)
        assert await tree_size(log) == size + 1
    finally:
        await log.stop()


# -- defect 3: a key set with two keys of one name and key ID --------------------------


async def test_keys_with_one_name_and_key_id_are_refused(http_client: Client) -> None:
    client = http_client
    first, second = colliding_vkeys("acme.example/release")
    admission = VendorAdmission("acme.example", (first, second), 1)
    status, answer = await client.log.submit(
        client.session, unvalidated_note(admission, client.log.operator)
    )
    assert status == 400, answer
    assert "the same name and key ID" in json.loads(answer)["error"]
    await client.admit(R1)
    rotation = KeySet("acme.example", (first, second), 1, 2)
    status, answer = await client.log.submit(client.session, unvalidated_note(rotation, R1))
    assert status == 400, answer
    assert "the same name and key ID" in json.loads(answer)["error"]
    await client.ok(release(), R1)  # the vendor is unaffected


def unvalidated_note(body: KeySet | VendorAdmission, signer: Ed25519Signer) -> bytes:
    """The signed note of a key set the client would refuse to build."""
    text = f"{entry_type(body)}\n{canonical_json(entry_json(body)).decode()}\n"
    return sign_note(text, [signer])


# -- per-entry verdicts: nothing one submitter sends fails another's entry --------------


async def one_batch(
    log: LogUnderTest, session: ClientSession, entries: Sequence[bytes]
) -> list[tuple[int, bytes]]:
    """Submit ``entries`` so that they are one batch: the sequencer's clock is held
    until all of them wait in its pool (the log's batch_size must be larger)."""
    with log.clock.held():
        tasks = [asyncio.create_task(log.submit(session, e)) for e in entries]
        await until(lambda: log.pending == len(entries), f"{len(entries)} entries in the pool")
    return list(await asyncio.gather(*tasks))


def admissions(log: LogUnderTest, vendors: Sequence[str]) -> list[bytes]:
    return [
        sign_entry(VendorAdmission(v, (OTHER.verifier.vkey,), 1), [log.operator]) for v in vendors
    ]


async def test_an_error_checking_one_entry_is_that_entrys_verdict(
    database_url: str, tmp_path: Path, session: ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug the ledger rules hit on one entry (here injected) answers that entry
    with a server error; the others of its batch are logged."""
    real = ledger_rules.authorize

    def authorize(entry: Entry, *args: Any, **kwargs: Any) -> Any:
        if entry.body.vendor == "poison.example":
            raise ValueError("injected: a bug only this entry reaches")
        return real(entry, *args, **kwargs)

    monkeypatch.setattr(ledger_rules, "authorize", authorize)
    log = LogUnderTest(database_url, tmp_path, batch_size=64, batch_interval=0.05)
    await log.start()
    try:
        vendors = ["a.example", "poison.example", "b.example", "c.example"]
        results = await one_batch(log, session, admissions(log, vendors))
        statuses = dict(zip(vendors, (s for s, _ in results), strict=True))
        assert statuses.pop("poison.example") == 500
        assert set(statuses.values()) == {200}, results
        assert await tree_size(log) == 3
    finally:
        await log.stop()


class _PoisonedIntegration:
    """A real integration whose append fails when a poisoned entry is in it."""

    def __init__(self, tx: Any, poison: bytes) -> None:
        self._tx, self._poison = tx, poison

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    async def append_entries(self, start_index: int, entries: Sequence[EntryRow]) -> None:
        if any(self._poison in e.data for e in entries):
            raise RuntimeError("injected: the database refuses this one entry")
        await self._tx.append_entries(start_index, entries)


class _PoisonedStorage(StorageWrapper):
    """A real storage whose integrations fail when a poisoned entry is in them."""

    def __init__(self, storage: Storage, poison: bytes = b"poison.example") -> None:
        super().__init__(storage)
        self._poison = poison
        self.attempts = 0

    @asynccontextmanager
    async def integration(self) -> AsyncIterator[Any]:
        self.attempts += 1
        async with self.storage.integration() as tx:
            yield _PoisonedIntegration(tx, self._poison)


async def test_a_batch_that_fails_is_retried_without_the_entry_that_fails_it(
    database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    log = LogUnderTest(
        database_url, tmp_path, storage=_PoisonedStorage, batch_size=64, batch_interval=0.05
    )
    await log.start()
    poisoned = log.services.storage
    assert isinstance(poisoned, _PoisonedStorage)
    try:
        vendors = [f"v{i}.example" for i in range(7)]
        vendors.insert(3, "poison.example")
        results = await one_batch(log, session, admissions(log, vendors))
        statuses = dict(zip(vendors, (s for s, _ in results), strict=True))
        assert statuses.pop("poison.example") == 500
        assert set(statuses.values()) == {200}, results
        checked = await verify_whole_log(log.base, log.verifier)
        assert checked.checkpoint.tree_size == 7
        assert not any(b"poison.example" in e for e in checked.entries)
        # 1 empty-tree checkpoint + the batch + halves down to the poisoned entry
        assert poisoned.attempts <= 1 + 2 * 4
    finally:
        await log.stop()


async def test_an_unavailable_database_is_not_retried_in_parts(
    database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    """When the database itself fails, halving the batch cannot help: every
    submitter is answered at once, with one attempt."""
    attempts: list[int] = []

    class Down(StorageWrapper):
        def __init__(self, storage: Storage) -> None:
            super().__init__(storage)
            self.down = False

        @asynccontextmanager
        async def integration(self) -> AsyncIterator[Any]:
            if self.down:
                attempts.append(1)
                raise StorageUnavailable("injected: the database is down")
            async with self.storage.integration() as tx:
                yield tx

    log = LogUnderTest(database_url, tmp_path, storage=Down, batch_size=64, batch_interval=0.05)
    await log.start()
    storage = log.services.storage
    assert isinstance(storage, Down)
    try:
        storage.down = True
        entries = admissions(log, [f"d{i}.example" for i in range(8)])
        results = await asyncio.gather(*(log.submit(session, e) for e in entries))
        assert all(status == 503 for status, _ in results), results
        assert len(attempts) <= 2  # one per batch, never one per half
    finally:
        storage.down = False
        await log.stop()
