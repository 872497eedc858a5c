"""What the pages show, read from the storage in a fixed number of queries per
page, whatever the number of rows: a listing is one search and one lookup of
the revocations of all its rows."""

from __future__ import annotations

from dataclasses import dataclass

from firmlog.client.entries import Entry, Release, Revocation, parse_entry
from firmlog.server.storage import KeySetRow, ReleaseQuery, Storage

_MAX_ENTRY = 1 << 16  # entries were checked when logged; this only bounds the parse
MAX_REVOCATIONS_SHOWN = 100  # of one release; a release is rarely revoked more than once
_HISTORY_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Listed:
    """A logged release: its index, its entry and the indexes of its revocations."""

    index: int
    entry: Entry
    release: Release
    revoked_by: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LoggedEntry:
    """One entry of the log with what refers to it."""

    index: int
    entry: Entry
    revocations: tuple[tuple[int, Entry], ...]  # of a release: (index, revocation entry)
    revoked_index: int | None  # of a revocation: the index of the release it withdraws


async def list_releases(
    storage: Storage, query: ReleaseQuery, cursor: int, limit: int, newest_first: bool
) -> list[Listed]:
    """Releases as ``search_releases`` orders them, with their revocations: two queries."""
    found = await storage.search_releases(query, cursor, limit, newest_first=newest_first)
    revoked = await storage.revocations_of([index for index, _ in found])
    listed = []
    for index, raw in found:
        entry = parse_entry(raw, max_size=_MAX_ENTRY)
        assert isinstance(entry.body, Release)
        listed.append(Listed(index, entry, entry.body, tuple(revoked.get(index, ()))))
    return listed


async def read_entry(storage: Storage, index: int) -> LoggedEntry | None:
    """The entry at ``index`` with its revocations (or, for a revocation, the
    release it names); None if there is no such entry."""
    raw = await storage.read_entries(index, index + 1)
    if not raw:
        return None
    entry = parse_entry(raw[0], max_size=_MAX_ENTRY)
    revocations: list[tuple[int, Entry]] = []
    revoked_index = None
    if isinstance(entry.body, Release):
        found = (await storage.revocations_of([index])).get(index, [])
        for i in found[:MAX_REVOCATIONS_SHOWN]:
            revocations += [
                (i, parse_entry(r, max_size=_MAX_ENTRY))
                for r in await storage.read_entries(i, i + 1)
            ]
    elif isinstance(entry.body, Revocation):
        revoked_index = await storage.find_identity(bytes.fromhex(entry.body.release_id))
    return LoggedEntry(index, entry, tuple(revocations), revoked_index)


async def key_history(storage: Storage, vendor: str) -> list[KeySetRow]:
    """Every key set of ``vendor`` in log order: admission first, then rotations."""
    history: list[KeySetRow] = []
    while True:
        page = await storage.key_history(
            vendor, history[-1].index if history else -1, _HISTORY_PAGE
        )
        history += page
        if len(page) < _HISTORY_PAGE:
            return history
