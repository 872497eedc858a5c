"""The firmware ledger over real HTTP, on SQLite and PostgreSQL: every acceptance rule
and every refusal, search, vendor history, escrow."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from support.entries import IMAGE
from support.entries import release as any_release
from support.harness import LogUnderTest, make_log, until
from support.ledger import OTHER, R1, R2, R3, Client
from support.logcheck import verify_whole_log

from firmlog.client.entries import (
    KeySet,
    Release,
    Revocation,
    VendorAdmission,
    parse_entry,
    sign_entry,
)
from firmlog.client.ledger import LedgerState


def release(version: str = "1.0", **changes: Any) -> Release:
    """The shared release; version 2.0 fixes CVE-2026-1234 (what test_search finds)."""
    fixes = ("CVE-2026-1234",) if version == "2.0" else ()
    return any_release(version, **{"fixes": fixes, **changes})


async def test_admission_needs_the_operator_and_happens_once(http_client: Client) -> None:
    body = VendorAdmission("acme.example", (R1.verifier.vkey,), 1)
    await http_client.refused(400, "not one of the operator's keys", body, R1)
    index = await http_client.admit(R1)
    assert await http_client.ok(body, http_client.log.operator) == index  # the same entry again
    other = VendorAdmission("acme.example", (R3.verifier.vkey,), 1)
    await http_client.refused(403, "already admitted", other, http_client.log.operator)


async def test_releases_need_the_current_keys_at_threshold(http_client: Client) -> None:
    await http_client.refused(403, "acme.example is not admitted", release(), R1)
    await http_client.admit(R1, R2, R3, threshold=2)
    await http_client.refused(
        403, "signed by 1 of the vendor's keys: threshold is 2", release(), R1
    )
    await http_client.refused(400, "not one of the vendor's keys", release(), OTHER)
    await http_client.refused(
        400, "not one of the vendor's keys", release(), http_client.log.operator
    )
    await http_client.refused(400, "each key signs once", release(), R1, R1, R3)
    await http_client.ok(release(), R1, R3)


async def test_rotation(http_client: Client) -> None:
    await http_client.admit(R1)
    old = await http_client.ok(release("1.0"), R1)
    rotate = KeySet("acme.example", (R2.verifier.vkey, R3.verifier.vkey), 2, 2)
    await http_client.refused(400, "not one of the vendor's keys", rotate, R2, R3)  # new keys can't
    stale = KeySet("acme.example", (R2.verifier.vkey, R3.verifier.vkey), 2, 3)
    await http_client.refused(403, "carries serial 3, but the current key set", stale, R1)
    rotated_at = await http_client.ok(rotate, R1)
    await http_client.refused(400, f"serial 2, from log index {rotated_at}", release("2.0"), R1)
    await http_client.refused(403, "threshold is 2", release("2.0"), R2)
    await http_client.ok(release("2.0"), R2, R3)
    # an entry logged under the old keys is still answered with its index
    assert await http_client.ok(release("1.0"), R1) == old
    await http_client.refused(
        403, "not admitted", KeySet("nobody.example", (R1.verifier.vkey,), 1, 2), R1
    )


async def test_revocations(http_client: Client) -> None:
    await http_client.admit(R1)
    await http_client.admit(OTHER, vendor="other.example")
    raw = sign_entry(release(), [R1])
    index = await http_client.ok(release(), R1)
    leaf = parse_entry(raw).leaf_hash.hex()
    release_id = parse_entry(raw).identity.hex()
    await http_client.refused(
        403, "not in this log", Revocation("acme.example", "ab" * 32, "bricks devices"), R1
    )
    await http_client.refused(
        403, "revokes only its own", Revocation("other.example", release_id, "hostile"), OTHER
    )
    await http_client.refused(
        400, "not one of the vendor's keys", Revocation("acme.example", release_id, "x"), OTHER
    )
    await http_client.refused(  # a leaf hash does not name a release
        403, "not in this log", Revocation("acme.example", leaf, "by leaf hash"), R1
    )
    revocation = await http_client.ok(
        Revocation("acme.example", release_id, "bricks devices", "ADV-1"), R1
    )
    status, got = await http_client.get("/v1/releases?vendor=acme.example")
    assert status == 200
    assert got["releases"][0]["index"] == index  # type: ignore[index]
    assert got["releases"][0]["revoked_by"] == [revocation]  # type: ignore[index]
    assert got["releases"][0]["id"] == release_id  # type: ignore[index]
    for ref in (release_id, leaf):  # by identity, or by the logged leaf hash
        status, got = await http_client.get(f"/v1/revocations/{ref}")
        assert status == 200
        assert got["release_index"] == index  # type: ignore[index]
        [rev] = got["revocations"]  # type: ignore[index]
        assert rev["index"] == revocation
        revoking = parse_entry(base64.b64decode(rev["entry"])).body
        assert isinstance(revoking, Revocation)
        assert revoking.release_id == release_id
    assert (await http_client.get(f"/v1/revocations/{'cd' * 32}"))[0] == 404
    assert (await http_client.get("/v1/revocations/xyz"))[0] == 400


async def test_the_ledger_is_authoritative_in_log_order(
    database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    """A release pre-checked against keys that a rotation earlier in the same batch
    replaces is refused in the integration, with the reason."""
    log = LogUnderTest(database_url, tmp_path, batch_size=64, batch_interval=0.05)
    await log.start()
    client = Client(log, session)
    try:
        await client.admit(R1)
        with log.clock.held():  # no entry ages: both land in one batch
            rotation = asyncio.create_task(
                client.post(KeySet("acme.example", (R2.verifier.vkey,), 1, 2), R1)
            )
            await until(lambda: log.pending == 1, "the rotation in the pool")
            late = asyncio.create_task(client.post(release(), R1))
            await until(lambda: log.pending == 2, "the release in the pool, pre-checked")
        assert (await rotation)[0] == 200
        status, got = await late
        assert status == 400, got
        assert "current key set of acme.example is serial 2, from log index 1" in str(got["error"])
        assert (await verify_whole_log(log.base, log.verifier)).checkpoint.tree_size == 2
    finally:
        await log.stop()


async def test_malformed_and_oversized(http_client: Client) -> None:
    await http_client.admit(R1)
    text = sign_entry(release(), [R1]).replace(b'"channel":"stable"', b'"channel":""')
    status, resp = await http_client.log.submit(http_client.session, text)
    assert status == 400
    assert b"release.channel" in resp
    big = release(changelog="x" * 8000, fixes=tuple(f"CVE-2026-{i:05d}" for i in range(500)))
    with pytest.raises(ValueError, match="limit"):
        sign_entry(big, [R1])  # the client refuses to build it
    status, resp = await http_client.log.submit(
        http_client.session, b"firmlog/release/v1\n" + b"x" * 17000
    )
    assert status == 413


async def test_search(http_client: Client) -> None:
    await http_client.admit(R1)
    await http_client.admit(OTHER, vendor="other.example")
    other_image = b"other image"
    indexes = {}
    for v in ("1.0", "1.1", "2.0", "2.1"):
        indexes[v] = await http_client.ok(release(v), R1)
    indexes["o"] = await http_client.ok(
        release("1.0", vendor="other.example", product="cam", image=other_image), OTHER
    )

    async def found(query: str) -> list[int]:
        status, got = await http_client.get(f"/v1/releases?{query}")
        assert status == 200, got
        return [r["index"] for r in got["releases"]]  # type: ignore[index]

    assert await found("vendor=acme.example") == [indexes[v] for v in ("1.0", "1.1", "2.0", "2.1")]
    assert await found("product=cam") == [indexes["o"]]
    assert await found("vendor=acme.example&version=2.0") == [indexes["2.0"]]
    assert await found("cve=CVE-2026-1234") == [indexes["2.0"]]
    sha = hashlib.sha256(other_image).hexdigest()
    assert await found(f"image_sha256={sha}") == [indexes["o"]]
    assert await found("vendor=nobody.example") == []
    # pagination: stable order by index, cursor from next_cursor
    seen: list[int] = []
    cursor = ""
    while True:
        status, got = await http_client.get(f"/v1/releases?limit=2&cursor={cursor}")
        assert status == 200
        seen += [r["index"] for r in got["releases"]]  # type: ignore[index]
        if got["next_cursor"] is None:  # type: ignore[index]
            break
        cursor = got["next_cursor"]  # type: ignore[index,assignment]
    assert seen == sorted(indexes.values())
    newest: list[int] = []
    cursor = ""
    while True:
        status, got = await http_client.get(f"/v1/releases?order=desc&limit=3&cursor={cursor}")
        assert status == 200
        newest += [r["index"] for r in got["releases"]]  # type: ignore[index]
        if got["next_cursor"] is None:  # type: ignore[index]
            break
        cursor = got["next_cursor"]  # type: ignore[index,assignment]
    assert newest == sorted(indexes.values(), reverse=True)
    status, got = await http_client.get("/v1/releases?version=2.0")
    release_json = got["releases"][0]["release"]  # type: ignore[index]
    assert release_json["fixes"] == ["CVE-2026-1234"]
    assert release_json["build"]["source_commit"] == "9f1c2e7"
    for bad in ("cve=CVE-1", "image_sha256=xyz", "limit=0", "limit=5000", "cursor=abc", "order=up"):
        status, got = await http_client.get(f"/v1/releases?{bad}")
        assert status == 400, bad
        assert got["error"]  # type: ignore[index]


async def test_vendor_history_is_derived_from_the_log(http_client: Client) -> None:
    await http_client.admit(R1)
    await http_client.ok(KeySet("acme.example", (R2.verifier.vkey, R3.verifier.vkey), 2, 2), R1)
    await http_client.admit(OTHER, vendor="other.example")
    status, got = await http_client.get("/v1/vendors/acme.example")
    assert status == 200
    assert got["keys"] == [R2.verifier.vkey, R3.verifier.vkey]  # type: ignore[index]
    assert got["threshold"] == 2  # type: ignore[index]
    assert [h["index"] for h in got["history"]] == [0, 1]  # type: ignore[index]
    assert [h["serial"] for h in got["history"]] == [1, 2]  # type: ignore[index]
    assert got["serial"] == 2  # type: ignore[index]
    status, got = await http_client.get("/v1/vendors")
    assert [(k["vendor"], k["index"]) for k in got["key_sets"]] == [  # type: ignore[index]
        ("acme.example", 0),
        ("acme.example", 1),
        ("other.example", 2),
    ]
    assert (await http_client.get("/v1/vendors/nobody.example"))[0] == 404
    # replaying the log alone reaches the same key sets
    checked = await verify_whole_log(http_client.log.base, http_client.log.verifier)
    state = LedgerState(operator_keys=(http_client.log.operator.verifier,))
    state.apply_all(parse_entry(e) for e in checked.entries)
    assert state.vendors["acme.example"].keys == (R2.verifier.vkey, R3.verifier.vkey)
    assert state.vendors["other.example"].since_index == 2


async def test_escrow(http_client: Client, tmp_path: Path) -> None:
    await http_client.admit(R1)
    sha = hashlib.sha256(IMAGE).hexdigest()
    url = f"{http_client.log.base}/v1/images/sha256/{sha}"
    async with http_client.session.put(url, data=IMAGE) as resp:
        assert resp.status == 404  # no logged release names it yet
    await http_client.ok(release(), R1)
    async with http_client.session.put(url, data=IMAGE[:-1] + b"!") as resp:
        assert resp.status == 400
        assert "does not match its release" in (await resp.json())["error"]
    async with http_client.session.put(url, data=IMAGE + b"extra") as resp:
        assert resp.status == 400
    async with http_client.session.put(url, data=IMAGE) as resp:
        assert resp.status == 201
    async with http_client.session.put(url, data=IMAGE) as resp:
        assert resp.status == 200
    async with http_client.session.get(url) as resp:
        assert resp.status == 200
        assert await resp.read() == IMAGE
        assert resp.headers["Repr-Digest"].startswith("sha-256=:")
    # corrupt the stored file: it is reported, quarantined, never served
    stored = http_client.log.config.escrow_path / "sha256" / sha
    stored.write_bytes(b"rotten" + IMAGE[6:])
    async with http_client.session.get(url) as resp:
        assert resp.status == 500
        assert "failed its digest check" in (await resp.json())["error"]
    assert list((http_client.log.config.escrow_path / "corrupt").iterdir())
    async with http_client.session.get(url) as resp:
        assert resp.status == 404
    async with http_client.session.put(url, data=IMAGE) as resp:
        assert resp.status == 201
    async with http_client.session.get(f"{http_client.log.base}/v1/images/sha256/XYZ") as resp:
        assert resp.status == 400


async def test_the_index_survives_a_restart(
    served_by: str, database_url: str, tmp_path: Path
) -> None:
    first = make_log(served_by, database_url, tmp_path)
    await first.start()
    async with ClientSession() as session:
        client = Client(first, session)
        await client.admit(R1)
        await client.ok(release(), R1)
        await first.stop()
        second = make_log(
            served_by, database_url, tmp_path, log_key=first.log_key, operator=first.operator
        )
        await second.start()
        try:
            client = Client(second, session)
            _status, got = await client.get("/v1/releases?vendor=acme.example")
            assert [r["index"] for r in got["releases"]] == [1]  # type: ignore[index]
            await client.ok(release("2.0"), R1)  # keys known after restart
        finally:
            await second.stop()


async def test_the_page_for_people(http_client: Client) -> None:
    await http_client.admit(R1)
    await http_client.ok(release("1.0", product="<b>thermo</b>"), R1)
    async with http_client.session.get(f"{http_client.log.base}/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert "&lt;b&gt;thermo&lt;/b&gt;" in page  # escaped, never markup
    assert "<b>thermo" not in page
    assert "acme.example" in page
    assert http_client.log.log_key.name in page
    assert "2 entries" in page
