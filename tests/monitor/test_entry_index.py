"""The replay's entries kept in the monitor's SQLite store, not in memory
(firmlog.monitor.store.StoredEntryIndex): the one-identity rule and the
revocation rule hold across restarts and for entries long out of the cache."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from aiohttp import ClientSession
from support.entries import VENDOR, VENDOR_KEY, admission, release
from support.harness import LogUnderTest
from support.monitor import MonitorUnderTest, eventually

from firmlog.client.entries import Entry, Revocation, parse_entry, sign_entry
from firmlog.client.errors import EntryPolicyError
from firmlog.client.keys import generate_key
from firmlog.client.ledger import LedgerState
from firmlog.client.merkle import CompactRange, leaf_hash
from firmlog.monitor.alerts import DUPLICATE_VERSION, REVOCATION
from firmlog.monitor.follower import ENTRY_REJECTED
from firmlog.monitor.store import MonitorStore, StoredEntryIndex

OPERATOR = generate_key("log.example/operator")
META = {"origin": "log.example/log"}


def signed(version: str) -> Entry:
    return parse_entry(sign_entry(release(version), [VENDOR_KEY]))


def replay_and_save(store: MonitorStore, ledger: LedgerState, entries: list[Entry]) -> None:
    """Apply ``entries`` and store them as the follower does, one chunk."""
    start = ledger.size
    edge = CompactRange.from_bytes(0, b"") if start == 0 else None
    assert edge is not None, "one chunk from the start"
    for e in entries:
        ledger.apply(e)
        edge.append(leaf_hash(e.raw))
    accepted = [(start + i, e.identity, e.raw) for i, e in enumerate(entries)]
    assert store.save_entries(start, edge, accepted, [], [])
    assert isinstance(ledger.entries, StoredEntryIndex)
    ledger.entries.saved()


def reopened(path: Path, size: int, cache_size: int = 4) -> tuple[MonitorStore, LedgerState]:
    """A store opened afresh (a restart) and a ledger on its entries (no vendor state
    needed for the rules tested here but the admission's key set)."""
    store = MonitorStore(path)
    store.open(META)
    ledger = LedgerState((OPERATOR.verifier,), entries=store.entry_index(cache_size), size=size)
    return store, ledger


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Path, list[Entry]]:
    """A store holding an admission and 50 releases of acme.example."""
    path = tmp_path / "monitor.db"
    store, ledger = reopened(path, 0)
    entries = [parse_entry(admission(OPERATOR)), *(signed(f"1.{i}") for i in range(50))]
    replay_and_save(store, ledger, entries)
    store.close()
    return path, entries


def admitted(ledger: LedgerState) -> LedgerState:
    replay = LedgerState((OPERATOR.verifier,))
    replay.apply(parse_entry(admission(OPERATOR)))
    ledger.vendors = dict(replay.vendors)
    return ledger


def test_nothing_is_loaded_at_start_and_a_duplicate_is_refused_after_a_restart(
    stored: tuple[Path, list[Entry]],
) -> None:
    path, entries = stored
    store, ledger = reopened(path, len(entries))
    admitted(ledger)
    index = ledger.entries
    assert isinstance(index, StoredEntryIndex)
    assert index.reads == 0
    with pytest.raises(EntryPolicyError, match=r"already in the log at index 7"):
        ledger.apply(entries[7])
    with pytest.raises(EntryPolicyError, match=r"already in the log at index 0"):
        ledger.apply(entries[0])
    assert ledger.size == len(entries)
    ledger.apply(signed("2.0"))  # a new text is fine
    store.close()


def test_a_revocation_of_an_entry_out_of_the_cache(stored: tuple[Path, list[Entry]]) -> None:
    path, entries = stored
    store, ledger = reopened(path, len(entries), cache_size=4)
    admitted(ledger)
    for e in entries[-4:]:  # fill the cache with the newest releases
        with pytest.raises(EntryPolicyError, match="already in the log"):
            ledger.apply(e)
    index = ledger.entries
    assert isinstance(index, StoredEntryIndex)
    reads = index.reads
    first = entries[1]
    applied = ledger.apply(
        parse_entry(sign_entry(Revocation(VENDOR, first.identity.hex(), "bricks"), [VENDOR_KEY]))
    )
    assert applied.revoked == 1
    assert index.reads == reads + 1  # read back from the database
    # Of another vendor's entry, or of a non-release: the same rules as in memory.
    with pytest.raises(EntryPolicyError, match="not a firmlog/release/v1"):
        ledger.apply(
            parse_entry(
                sign_entry(Revocation(VENDOR, entries[0].identity.hex(), "x"), [VENDOR_KEY])
            )
        )
    with pytest.raises(EntryPolicyError, match="not in this log"):
        ledger.apply(parse_entry(sign_entry(Revocation(VENDOR, "ab" * 32, "x"), [VENDOR_KEY])))
    store.close()


def test_entries_pending_in_a_chunk_are_seen_and_a_discarded_chunk_is_forgotten(
    stored: tuple[Path, list[Entry]],
) -> None:
    path, entries = stored
    store, ledger = reopened(path, len(entries))
    admitted(ledger)
    index = ledger.entries
    assert isinstance(index, StoredEntryIndex)
    new = signed("3.0")
    ledger.apply(new)
    with pytest.raises(EntryPolicyError, match=f"already in the log at index {len(entries)}"):
        ledger.apply(new)  # the same chunk, not stored yet
    index.discard()  # the chunk was not stored
    assert index.get(new.identity) is None
    assert index.get(entries[3].identity) == (3, entries[3])
    store.close()


def test_a_store_written_before_the_identity_index_is_indexed_at_open(
    stored: tuple[Path, list[Entry]],
) -> None:
    path, entries = stored
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM entry_ids")
    store, ledger = reopened(path, len(entries))
    admitted(ledger)
    with pytest.raises(EntryPolicyError, match=r"already in the log at index 42"):
        ledger.apply(entries[42])
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM entry_ids").fetchone() == (len(entries),)


async def test_a_restarted_monitor_checks_a_revocation_of_a_release_it_saw_before(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    """End to end: the release is only in the monitor's database when its revocation
    comes, after a restart; so is the first release of a version released again."""
    releases = [sign_entry(release(f"1.{i}"), [VENDOR_KEY]) for i in range(5)]
    for raw in [admission(log.operator), *releases]:
        status, body = await log.submit(session, raw)
        assert status == 200, body
    data = tmp_path / "monitor"
    monitor = MonitorUnderTest(data, log.base, log.verifier, [log.operator.verifier])
    await monitor.start()
    try:
        await eventually(lambda: monitor.watched.progress.next_index == 6, what="6 entries")
    finally:
        await monitor.stop()

    revoked = parse_entry(releases[2])
    revocation = sign_entry(Revocation(VENDOR, revoked.identity.hex(), "bricks"), [VENDOR_KEY])
    again_1_1 = sign_entry(release("1.1", image=b"another image"), [VENDOR_KEY])
    for raw in (revocation, again_1_1):
        status, body = await log.submit(session, raw)
        assert status == 200, body
    again = MonitorUnderTest(data, log.base, log.verifier, [log.operator.verifier])
    await again.start()
    try:
        await eventually(lambda: again.watched.progress.next_index == 8, what="8 entries")
        index = again.watched.progress.index
        assert index is not None
        assert index.reads == 1  # the revoked release, from the database
        async with session.get(f"{again.base}/v1/alerts") as resp:
            alerts = await resp.json()
        assert [(a["index"], a["kind"]) for a in alerts] == [
            (7, DUPLICATE_VERSION),
            (6, REVOCATION),
        ]
        assert "the first is at index 2" in alerts[0]["detail"]
        assert "(index 3)" in alerts[1]["detail"]
        assert ENTRY_REJECTED not in {a["kind"] for a in alerts}
    finally:
        await again.stop()


def test_release_versions_are_looked_up_by_key_not_by_scanning(tmp_path: Path) -> None:
    """The content checks' lookups of a chunk stay a few index searches however many
    releases the log holds (they used to scan the table: quadratic catch-up)."""
    store = MonitorStore(tmp_path / "monitor.db")
    store.open(META)
    rows = [(VENDOR, "router-9000", f"1.{i}", i, bytes(32)) for i in range(20_000)]
    edge = CompactRange()
    assert store.save_entries(0, edge, [], [], [], (rows, []))
    versions = store.stored_versions()
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    versions._db.set_progress_handler(count, 100)  # one call per 100 VM instructions
    versions.prefetch([(VENDOR, "router-9000", "1.7"), (VENDOR, "router-9000", "9.9")])
    assert steps < 100, f"{steps * 100} VM instructions for two keys: a table scan"
    assert versions.get((VENDOR, "router-9000", "1.7")) == (7, bytes(32))
    assert versions.get((VENDOR, "router-9000", "9.9")) is None
    store.close()
