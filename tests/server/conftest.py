"""Fixtures of the server tests: a running log on each backend (database_url, from
tests/conftest.py), an HTTP session, a ledger client, and the database of a
server process (new_database).

``log`` is the app in the test's process, for tests that look inside it (its
services, its clock, its storage wrapped with faults). ``http_log`` is for the
tests of the HTTP contract alone: each runs twice on each backend, against the
app in the test's process and against a real ``serve --workers 2`` process
whose two workers share the port (support.harness)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import ClientSession
from support.harness import SERVED_BY, BlackBoxLog, LogUnderTest, make_log
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


@pytest.fixture(params=SERVED_BY)
def served_by(request: pytest.FixtureRequest) -> str:
    """How a black-box test's log is served: in this process, or by two workers."""
    return str(request.param)


@pytest.fixture
async def http_log(served_by: str, database_url: str, tmp_path: Path) -> AsyncIterator[BlackBoxLog]:
    """A log on ``database_url`` served as ``served_by`` says, stopped after the test."""
    server = make_log(served_by, database_url, tmp_path)
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
def http_client(http_log: BlackBoxLog, session: ClientSession) -> Client:
    """The ledger over HTTP, on ``http_log``."""
    return Client(http_log, session)


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
