"""Shared fixtures: the public test vectors and the PostgreSQL test server."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from vectors import VECTORS

REPO = Path(__file__).resolve().parent.parent

PG_ADMIN_URL = os.environ.get(
    "FIRMLOG_TEST_DATABASE", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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
