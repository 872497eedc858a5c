"""A database that cannot be reached or written: 503 with Retry-After, and /healthz says so.

Real faults, no mocks: SQLite's write lock held by another connection;
PostgreSQL behind a TCP proxy that is taken away, and a PostgreSQL database
switched to read-only sessions.

PostgreSQL taken away is tested against the app in this process and against
``serve --workers 2``, whose workers reach it through the same proxy. The others
need the app's insides, so they run in this process: the lock test shortens
SQLite's timeouts (a server waits 60 s for the lock), and the read-only test has
the app's pool drop its connections, so that new sessions see the setting.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from aiohttp import ClientSession
from splitproxy import SplitProxy
from support.harness import BlackBoxLog, LogUnderTest, make_log

from firmlog.client.entries import VendorAdmission, sign_entry
from firmlog.client.keys import generate_key
from firmlog.server.app import SERVICES
from firmlog.server.storage import StorageUnavailable, open_storage
from firmlog.server.storage import sqlite as sqlite_backend

KEY = generate_key("acme.example/release")


def admission(log: BlackBoxLog, vendor: str) -> bytes:
    return sign_entry(VendorAdmission(vendor, (KEY.verifier.vkey,), 1), [log.operator])


async def get(session: ClientSession, url: str) -> tuple[int, dict[str, object], str | None]:
    async with session.get(url) as resp:
        return resp.status, await resp.json(), resp.headers.get("Retry-After")


async def post(session: ClientSession, url: str, raw: bytes) -> tuple[int, dict[str, object]]:
    async with session.post(url, data=raw) as resp:
        return resp.status, await resp.json() if resp.status != 200 else {}


async def test_sqlite_locked_by_another_process(
    tmp_path: Path, session: ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(sqlite_backend, "HEALTH_TIMEOUT_S", 0.2)
    path = tmp_path / "firmlog.db"
    log = LogUnderTest(f"sqlite:///{path}", tmp_path)
    await log.start()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        status, doc, _ = await get(session, f"{log.base}/healthz")
        assert (status, doc["status"]) == (200, "ok")
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        status, doc, retry = await get(session, f"{log.base}/healthz")
        assert status == 503
        assert retry
        assert doc["kind"] == "StorageUnavailable"
        assert "locked" in str(doc["error"])
        status, doc = await post(session, f"{log.base}/v1/entries", admission(log, "a.example"))
        assert (status, doc["kind"]) == (503, "StorageUnavailable")
        other.execute("ROLLBACK")
        status, doc, _ = await get(session, f"{log.base}/healthz")
        assert (status, doc["status"]) == (200, "ok")
        status, _ = await post(session, f"{log.base}/v1/entries", admission(log, "a.example"))
        assert status == 200
    finally:
        other.close()
        await log.stop()


async def test_sqlite_errors_of_the_file_are_unavailability_and_others_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "firmlog.db"
    storage = open_storage(f"sqlite:///{path}")
    await storage.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageUnavailable, match="database is locked") as info:
            async with storage.integration():
                pass
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        other.execute("ROLLBACK")
        await storage.check_writable()
        # a statement error is a bug, not unavailability
        threads = storage._threads  # type: ignore[attr-defined]
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await threads.read(lambda conn: conn.execute("SELECT * FROM nowhere"))
    finally:
        other.close()
        await storage.close()


async def test_postgres_that_cannot_be_reached(
    served_by: str,
    pg_factory: Callable[[], Awaitable[str]],
    tmp_path: Path,
    session: ClientSession,
) -> None:
    url = await pg_factory()
    host_port, _, name = url.rpartition("@")[2].partition("/")
    host, _, port = host_port.partition(":")
    proxy = SplitProxy(host, int(port), split=False)
    await proxy.start()
    log = make_log(served_by, f"postgresql://postgres@127.0.0.1:{proxy.port}/{name}", tmp_path)
    await log.start()
    try:
        assert (await get(session, f"{log.base}/healthz"))[0] == 200
        status, _ = await post(session, f"{log.base}/v1/entries", admission(log, "a.example"))
        assert status == 200
        await proxy.stop()  # the database is gone
        status, doc, retry = await get(session, f"{log.base}/healthz")
        assert (status, doc["kind"]) == (503, "StorageUnavailable")
        assert retry
        for path in ("/v1/releases", "/v1/vendors", "/v1/bundle/" + "ab" * 32):
            status, doc, retry = await get(session, f"{log.base}{path}")
            assert (status, doc["kind"]) == (503, "StorageUnavailable"), path
            assert retry
        status, doc = await post(session, f"{log.base}/v1/entries", admission(log, "b.example"))
        assert (status, doc["kind"]) == (503, "StorageUnavailable")
        if isinstance(log, LogUnderTest):  # what the app's storage raised, and why
            with pytest.raises(StorageUnavailable) as info:
                await log.services.storage.latest_checkpoint()
            assert isinstance(info.value.__cause__, OSError | asyncpg.PostgresConnectionError)
    finally:
        await log.stop()
        await proxy.stop()


async def test_postgres_that_is_read_only(
    pg_factory: Callable[[], Awaitable[str]], tmp_path: Path, session: ClientSession
) -> None:
    url = await pg_factory()
    log = LogUnderTest(url, tmp_path)
    await log.start()
    try:
        status, _ = await post(session, f"{log.base}/v1/entries", admission(log, "a.example"))
        assert status == 200
        name = url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(url)
        try:
            await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        finally:
            await admin.close()
        assert log.server is not None
        await log.server.app[SERVICES].storage._pool.expire_connections()  # type: ignore[attr-defined]
        status, doc, retry = await get(session, f"{log.base}/healthz")
        assert (status, doc["kind"]) == (503, "StorageUnavailable")
        assert "read-only" in str(doc["error"])
        assert retry
        status, doc = await post(session, f"{log.base}/v1/entries", admission(log, "b.example"))
        assert (status, doc["kind"]) == (503, "StorageUnavailable")
        status, doc, _ = await get(session, f"{log.base}/v1/vendors")
        assert status == 200  # reads still work
    finally:
        await log.stop()
