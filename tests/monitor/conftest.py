"""Fixtures of the monitor tests: a real log server on loopback (SQLite), an HTTP session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession
from support.harness import LogUnderTest


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[LogUnderTest]:
    """A log server on loopback over SQLite, stopped after the test."""
    data = tmp_path / "log"
    data.mkdir()
    server = LogUnderTest(f"sqlite:///{data / 'firmlog.db'}", data)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[ClientSession]:
    async with ClientSession() as s:
        yield s
