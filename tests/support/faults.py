"""Fault injection around a real storage, as Sunlight's tests do it.

A wrapper passes every call through to the real backend (SQLite or PostgreSQL)
and changes only what a test asks for: it observes a call, or fails it. The
data is always in the real database; nothing here is a mock of it. A log
server under test takes a wrapper as ``LogUnderTest(..., storage=Wrapper)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from firmlog.server.storage import Storage


class StorageWrapper:
    """A real storage with every attribute passed through; subclasses override
    the calls they inject into."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)


class WatchedStorage(StorageWrapper):
    """Counts the integrations asked for: ``integrations`` grows when the
    sequencer has taken a batch from its pool, before it waits for the lock."""

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage)
        self.integrations = 0

    @asynccontextmanager
    async def integration(self) -> AsyncIterator[Any]:
        self.integrations += 1
        async with self.storage.integration() as tx:
            yield tx
