"""Fixtures of the server tests: every backend, a running log, an HTTP session, a
ledger client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import ClientSession
from support.harness import LogUnderTest
from support.ledger import Client


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, pg_factory: Callable[[], Awaitable[str]]
) -> str:
    """A fresh database on each backend: SQLite in tmp_path, a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'firmlog.db'}"
    return await pg_factory()


@pytest.fixture
async def log(database_url: str, tmp_path: Path) -> AsyncIterator[LogUnderTest]:
    """A log server on loopback over ``database_url``, stopped after the test."""
    server = LogUnderTest(database_url, tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[ClientSession]:
    async with ClientSession() as s:
        yield s


@pytest.fixture
def client(log: LogUnderTest, session: ClientSession) -> Client:
    """The ledger over HTTP, on ``log``."""
    return Client(log, session)
