"""Static SQL run on a test's database behind the storage's back (SQLite or
PostgreSQL, by the storage URL): to put a database in a state that an older
firmlog-server, or damage, would have left, and to look at what is stored."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import asyncpg


async def run_sql(url: str, *statements: str) -> None:
    """Run ``statements`` in order, committed."""
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            for statement in statements:
                conn.execute(statement)
            conn.commit()
        return
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def fetch_sql(url: str, statement: str) -> list[tuple[object, ...]]:
    """The rows of a query."""
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return [tuple(r) for r in conn.execute(statement)]
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(statement)]
    finally:
        await conn.close()
