"""Fixtures of the server tests: a running log on each backend (database_url, from
tests/conftest.py), an HTTP session, a ledger client, and the database of a
server process (new_database)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import ClientSession
from support.harness import LogUnderTest
from support.ledger import Client


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
def client(log: LogUnderTest, session: ClientSession) -> Client:
    """The ledger over HTTP, on ``log``."""
    return Client(log, session)


@pytest.fixture
def new_database(
    backend: str, request: pytest.FixtureRequest
) -> Callable[[], Awaitable[str | None]]:
    """Makes the database: None is SQLite in the data directory (the server's default)."""
    if backend == "sqlite":

        async def sqlite() -> None:
            return None

        return sqlite
    pg_factory: Callable[[], Awaitable[str]] = request.getfixturevalue("pg_factory")
    return pg_factory
