"""Shared fixtures: the public test vectors, the PostgreSQL test server, and each
storage backend in turn."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import ClientSession
from support.loops import EVERY_EVENT_LOOP, LOOP_FACTORIES
from vectors import VECTORS

REPO = Path(__file__).resolve().parent.parent

PG_ADMIN_URL = os.environ.get(
    "FIRMLOG_TEST_DATABASE", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """A test marked every_event_loop runs once on each loop the services run on
    (support.loops); every other one on asyncio's."""
    if item.get_closest_marker(EVERY_EVENT_LOOP) is not None:
        return LOOP_FACTORIES
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The shared public vectors; their absence is an error, never a skip."""
    if not (VECTORS / "README.md").is_file():
        pytest.fail(f"public test vectors not found at {VECTORS} (set FIRMLOG_VECTORS)")
    return VECTORS


def _pg_unreachable(reason: str) -> None:
    msg = f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {reason}"
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture
async def pg_factory() -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Creates fresh, empty PostgreSQL databases for one test; drops them afterwards.

    In CI an unreachable server fails the test; elsewhere it skips it.
    """
    import asyncpg

    try:
        admin = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        _pg_unreachable(str(exc))
        raise  # unreachable: _pg_unreachable always raises
    created: list[str] = []
    base = PG_ADMIN_URL.rsplit("/", 1)[0]

    async def create() -> str:
        name = f"firmlog_test_{uuid.uuid4().hex[:12]}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"{base}/{name}"

    try:
        yield create
    finally:
        for name in created:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def pg_database(pg_factory: Callable[[], Awaitable[str]]) -> str:
    """A fresh, empty PostgreSQL database URL for one test."""
    return await pg_factory()


@pytest.fixture
def tmp_data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "firmlog-data"
    d.mkdir()
    return d


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """Each storage backend in turn: a test that takes this fixture, or database_url,
    runs once on SQLite and once on PostgreSQL."""
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on each backend: a SQLite file in tmp_path, or a new
    PostgreSQL database (only the PostgreSQL run needs the server)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'firmlog.db'}"
    url = request.getfixturevalue("pg_database")
    assert isinstance(url, str)
    return url


@pytest.fixture
async def session() -> AsyncIterator[ClientSession]:
    async with ClientSession() as s:
        yield s
