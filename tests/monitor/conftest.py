"""Fixtures of the monitor tests: a real log server on loopback (SQLite), an HTTP session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
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
async def fork(log: LogUnderTest, tmp_path: Path) -> AsyncIterator[LogUnderTest]:
    """A second log server with the same log key over another database: another tree."""
    data = tmp_path / "fork"
    data.mkdir()
    server = LogUnderTest(
        f"sqlite:///{data / 'firmlog.db'}", data, log_key=log.log_key, operator=log.operator
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
