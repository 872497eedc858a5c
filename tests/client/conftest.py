"""Fixtures of the client tests: a real log server for the synchronous client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.livelog import LiveLog


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveLog]:
    """A log server on loopback (SQLite in tmp_path), stopped after the test."""
    with LiveLog(tmp_path / "log") as log:
        yield log
