"""Following a log: poll its checkpoint, prove it, read and replay every new entry.

Each poll (:meth:`Follower.poll_once`):

1. fetches ``/checkpoint`` and hands it, with the log's tiles, to a
   :class:`~firmlog.client.trust.CheckpointTracker` started at the trusted
   checkpoint: the log signature is verified and consistency is proven from
   tiles (the proof is built here, never taken from the log). A new larger
   checkpoint becomes the trusted one (and is cosigned,
   :meth:`firmlog.monitor.state.WatchedLog.advance`). A
   :class:`~firmlog.client.errors.SplitViewError` becomes evidence once it
   is checked to be one (for different sizes: the larger tree's root at the
   smaller size, computed from its tiles, with a consistency proof that
   verifies), and the log is no longer cosigned;
2. downloads the entry bundles from the last checked index to the trusted
   tree size, a chunk at a time; proves the chunk is the log's (the compact
   range of every leaf checked so far gives the root at the chunk's end,
   which must be the checkpoint's root or have a consistency proof to it);
   replays the ledger rules (:class:`firmlog.client.ledger.LedgerState`,
   with the monitor's own operator keys) over every entry, keeping an alert
   for each entry the log accepted but the replay rejects, and the content
   alerts of each entry it accepts (:mod:`firmlog.monitor.alerts`); and
   stores all of it in one transaction. Then ``--alert-command`` runs for
   each new alert. The next chunk is downloaded while one is checked; each
   entry is parsed once and its signatures verified once; what the rules
   look up in the store (identities, release versions) is read in a few
   queries per chunk.

A log that is down, slow or serving bad data is retried with exponential
backoff; the error is logged, counted and shown by ``/healthz``. Nothing
here ends the monitor.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import structlog

from firmlog.client.entries import Entry, Release, Revocation, parse_entry
from firmlog.client.errors import (
    FirmlogError,
    FormatError,
    ProofError,
    SplitViewError,
    TileMismatchError,
)
from firmlog.client.evidence import DIFFERENT_SIZES, SAME_SIZE, SplitViewEvidence
from firmlog.client.keys import Ed25519Verifier, KeyRing
from firmlog.client.ledger import VendorKeys, verify_ahead
from firmlog.client.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    leaf_hash,
    tree_hash,
    verify_consistency,
)
from firmlog.client.tiles import TILE_WIDTH, TileCache, TileFetcher, TileHashReader, tile_width
from firmlog.client.trust import CheckpointNote, CheckpointTracker
from firmlog.monitor.alerts import AlertCommand, ContentChecks
from firmlog.monitor.config import MonitorConfig
from firmlog.monitor.fetch import LogFetcher
from firmlog.monitor.state import MAX_ENTRY_SIZE, WatchedLog
from firmlog.monitor.store import AcceptedRow, Alert, StoredVersions

__all__ = ["ENTRY_REJECTED", "ENTRY_UNPARSEABLE", "Follower", "split_view_evidence"]

log = structlog.get_logger("firmlog.monitor.follower")

ENTRY_REJECTED = "ledger-rejected"  # the log accepted it; the monitor's replay does not
ENTRY_UNPARSEABLE = "unparseable-entry"


def split_view_evidence(exc: SplitViewError, fetch: TileFetcher) -> SplitViewEvidence:
    """Check a SplitViewError from the tracker and make it evidence anyone can verify.

    Same size: the two notes suffice. Different sizes: the root the larger
    tree has at the smaller size, from the larger tree's tiles, must differ
    from the smaller checkpoint's and be connected to the larger checkpoint by
    a consistency proof that verifies; if the tiles do not even match the
    larger checkpoint, nothing is proven about the log's signatures (the
    tiles are bad data) and TileMismatchError is raised instead. Blocking:
    run it in a worker thread.
    """
    old = CheckpointNote.parse(exc.old_note)
    new = CheckpointNote.parse(exc.new_note)
    a, b = old.checkpoint, new.checkpoint
    if a.tree_size == b.tree_size:
        return SplitViewEvidence(SAME_SIZE, exc.old_note, exc.new_note, (), None, str(exc))
    small, large = (a, b) if a.tree_size < b.tree_size else (b, a)
    if small.tree_size == 0:  # a signed empty tree whose root is not the empty root
        return SplitViewEvidence(
            DIFFERENT_SIZES, exc.old_note, exc.new_note, (), EMPTY_ROOT, str(exc)
        )
    reader = TileHashReader(large.tree_size, fetch)
    root = tree_hash(small.tree_size, reader)
    proof = tuple(consistency_proof(small.tree_size, large.tree_size, reader))
    try:
        verify_consistency(small.tree_size, large.tree_size, root, large.root_hash, proof)
    except ProofError as err:
        raise TileMismatchError(
            f"the tiles of {large.origin!r} at tree size {large.tree_size} do not match its "
            f"signed checkpoint ({err}): not evidence of a split view, the tiles are bad data"
        ) from err
    if root == small.root_hash:
        raise TileMismatchError(
            f"the tiles of {large.origin!r} changed while proving consistency from "
            f"{small.tree_size} to {large.tree_size}"
        )
    return SplitViewEvidence(DIFFERENT_SIZES, exc.old_note, exc.new_note, proof, root, str(exc))


VERIFY_THREADS = 2  # Ed25519 verification runs outside the GIL: these use a second core


@dataclass(slots=True)
class _Chunk:
    """Entries from log index ``start``: as read, parsed (or why not), and the
    ``verified_with`` of each (firmlog.client.ledger.verify_ahead)."""

    start: int
    raws: list[bytes]
    parsed: list[Entry | FormatError]
    verified: list[int | None]


def _parse_and_verify(
    raws: list[bytes], operator_keys: KeyRing[Ed25519Verifier], vendors: dict[str, VendorKeys]
) -> tuple[list[Entry | FormatError], list[int | None]]:
    """Parse entries and verify their signatures ahead of the replay (a worker thread)."""
    parsed: list[Entry | FormatError] = []
    verified: list[int | None] = []
    for raw in raws:
        try:
            entry = parse_entry(raw, max_size=MAX_ENTRY_SIZE)
        except FormatError as exc:
            parsed.append(exc)
            verified.append(None)
            continue
        parsed.append(entry)
        verified.append(verify_ahead(entry, operator_keys, vendors))
    return parsed, verified


class Follower:
    """The task that follows one log (see the module docstring). One per log."""

    def __init__(self, watched: WatchedLog, fetcher: LogFetcher, config: MonitorConfig) -> None:
        self.watched = watched
        self.fetcher = fetcher
        self.config = config
        self.cache = TileCache(1024)
        self.failures = 0
        self.checks = ContentChecks.watching(config.watch_vendors)
        self.command = (
            AlertCommand(config.alert_command, watched.store, watched.origin)
            if config.alert_command
            else None
        )
        self.versions: StoredVersions | None = None
        self._operator_ring: KeyRing[Ed25519Verifier] | None = None
        self._verifiers = ThreadPoolExecutor(VERIFY_THREADS, "firmlog-monitor-verify")

    async def run(self) -> None:
        """Poll forever (until cancelled)."""
        try:
            await self._poll_forever()
        finally:
            self._verifiers.shutdown(wait=False, cancel_futures=True)
            if self.command is not None:
                await self.command.close()

    async def _poll_forever(self) -> None:
        watched, metrics, config = self.watched, self.watched.metrics, self.config
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                watched.last_error = f"{type(exc).__name__}: {exc}"
                metrics.polls.labels(type(exc).__name__).inc()
                metrics.log_up.set(0)
                if isinstance(exc, FirmlogError):
                    log.warning(
                        "poll failed",
                        origin=watched.origin,
                        error=watched.last_error,
                        failures=self.failures,
                    )
                else:
                    log.exception("poll failed", origin=watched.origin, failures=self.failures)
            else:
                self.failures = 0
                watched.last_error = None
                metrics.polls.labels("ok").inc()
                metrics.log_up.set(1)
            watched.last_poll = time.time()
            delay = config.poll_interval
            if self.failures:
                delay = min(config.max_backoff, delay * 2 ** min(self.failures, 30))
            await asyncio.sleep(delay)

    async def poll_once(self) -> None:
        note = await self.fetcher.checkpoint()
        await self.update_checkpoint(note)
        await self.check_entries()

    def _fetch(self) -> TileFetcher:
        return self.fetcher.sync_tiles(asyncio.get_running_loop())

    async def update_checkpoint(self, note: bytes) -> None:
        """Prove ``note`` consistent with the trusted checkpoint and trust it, or keep
        the evidence. Raises what opening the note or fetching tiles raises."""
        watched = self.watched
        if watched.split_view:
            return  # the log is not trusted any more: nothing it signs is news
        expected = watched.trusted
        tracker = CheckpointTracker.for_log_key(watched.log_key, expected)
        fetch = self._fetch()
        try:
            new = await asyncio.to_thread(tracker.update, note, fetch)
        except SplitViewError as exc:
            evidence = await asyncio.to_thread(split_view_evidence, exc, fetch)
            async with watched.lock:
                if not watched.split_view:
                    await watched.record_split_view(evidence)
            return
        if expected is not None and new.checkpoint.tree_size <= expected.checkpoint.tree_size:
            return  # the same checkpoint, or a proven older one
        async with watched.lock:
            await watched.advance(expected, new, "follower")

    async def _bundles(self, first: int, last: int, tree_size: int) -> list[bytes]:
        """The entries of entry bundles ``first..last`` at ``tree_size``, in order."""
        sem = asyncio.Semaphore(self.config.fetch_concurrency)

        async def one(n: int) -> list[bytes]:
            async with sem:
                return await self.fetcher.entries(n, tile_width(tree_size, 0, n))

        out: list[bytes] = []
        for part in await asyncio.gather(*(one(n) for n in range(first, last + 1))):
            out += part
        return out

    def _prove_prefix(
        self, edge: CompactRange, trusted: CheckpointNote, fetch: TileFetcher
    ) -> None:
        """The leaves in ``edge`` are the first of the trusted tree (blocking)."""
        cp = trusted.checkpoint
        root = edge.root()
        if edge.tree_size == cp.tree_size:
            if root != cp.root_hash:
                raise TileMismatchError(
                    f"the entry bundles of {cp.origin!r} up to {cp.tree_size} hash to root "
                    f"{root.hex()}, expected {cp.root_hash.hex()} (the signed checkpoint's)"
                )
            return
        reader = TileHashReader(cp.tree_size, fetch, self.cache)
        proof = consistency_proof(edge.tree_size, cp.tree_size, reader)
        try:
            verify_consistency(edge.tree_size, cp.tree_size, root, cp.root_hash, proof)
        except ProofError as exc:
            raise TileMismatchError(
                f"the entry bundles of {cp.origin!r} up to {edge.tree_size} are not a prefix "
                f"of the signed tree of size {cp.tree_size}: {exc}"
            ) from exc

    def _replay(self, chunk: _Chunk) -> tuple[list[AcceptedRow], list[VendorKeys], list[Alert]]:
        """Apply the ledger rules to the chunk's entries. Blocking."""
        progress = self.watched.progress
        ledger = progress.ledger
        now = int(self.watched.clock())
        accepted: list[AcceptedRow] = []
        vendors: dict[str, VendorKeys] = {}
        alerts: list[Alert] = []
        start, parsed = chunk.start, chunk.parsed
        if progress.index is not None:  # what the rules look up, in a few queries
            wanted = [e.identity for e in parsed if isinstance(e, Entry)]
            wanted += [
                bytes.fromhex(e.body.release_id)
                for e in parsed
                if isinstance(e, Entry) and isinstance(e.body, Revocation)
            ]
            progress.index.prefetch(wanted)
        if self.versions is not None:
            self.versions.prefetch(
                (e.body.vendor, e.body.product, e.body.version)
                for e in parsed
                if isinstance(e, Entry) and isinstance(e.body, Release)
            )
        items = zip(chunk.raws, parsed, chunk.verified, strict=True)
        for index, (raw, entry, verified_with) in enumerate(items, start):
            assert ledger.size == index, (ledger.size, index)
            if isinstance(entry, FormatError):
                alerts.append(Alert(index, ENTRY_UNPARSEABLE, str(entry), now))
                ledger.size += 1
                continue
            try:
                applied = ledger.apply(entry, verified_with=verified_with)
            except Exception as exc:  # whatever the log serves, one entry never stops the replay
                if not isinstance(exc, FirmlogError):
                    log.exception("replaying an entry failed", index=index)
                detail = f"{entry.type} entry {entry.identity.hex()}: {exc}"
                alerts.append(Alert(index, ENTRY_REJECTED, detail, now))
                ledger.size += 1
                continue
            accepted.append((index, entry.identity, raw))
            alerts += self.checks.check(applied, now)
            if applied.keys is not None:
                vendors[applied.keys.vendor] = applied.keys
        return accepted, list(vendors.values()), alerts

    async def check_entries(self) -> None:
        """Read, prove and replay every entry up to the trusted tree size."""
        watched = self.watched
        trusted = watched.trusted
        if trusted is None:
            return
        size = trusted.checkpoint.tree_size
        fetch = self._fetch()
        if not self.checks.loaded:
            if self.versions is None:
                self.versions = watched.store.store.stored_versions()
            self.versions.clear()
            rows = await watched.store.run(watched.store.store.content_rows, False)
            self.checks.load(rows, self.versions)
        ahead: dict[int, asyncio.Task[_Chunk]] = {}  # chunk start -> its entries
        try:
            while watched.progress.next_index < size:
                await self._check_chunk(trusted, fetch, ahead)
        finally:
            for task in ahead.values():
                task.cancel()
            await asyncio.gather(*ahead.values(), return_exceptions=True)

    def _span(self, start: int, size: int) -> tuple[int, int]:
        """The first entry bundle and the end index of the chunk that starts at ``start``."""
        first = start // TILE_WIDTH
        return first, min(size, (first + self.config.chunk_tiles) * TILE_WIDTH)

    def _read_chunk(self, start: int, size: int) -> asyncio.Task[_Chunk]:
        """Download the chunk from ``start``, parse it and verify its signatures ahead
        (against the vendor key sets of now: the replay checks they still apply)."""
        first, end = self._span(start, size)
        ledger = self.watched.progress.ledger
        if self._operator_ring is None:
            self._operator_ring = KeyRing.of(ledger.operator_keys)
        ring = self._operator_ring

        async def read() -> _Chunk:
            entries = await self._bundles(first, (end - 1) // TILE_WIDTH, size)
            raws = entries[start - first * TILE_WIDTH : end - first * TILE_WIDTH]
            vendors = dict(ledger.vendors)
            loop = asyncio.get_running_loop()
            step = -(-len(raws) // VERIFY_THREADS)
            parts = await asyncio.gather(
                *(
                    loop.run_in_executor(
                        self._verifiers, _parse_and_verify, raws[k : k + step], ring, vendors
                    )
                    for k in range(0, len(raws), step)
                )
            )
            chunk = _Chunk(start, raws, [], [])
            for parsed, verified in parts:
                chunk.parsed += parsed
                chunk.verified += verified
            return chunk

        return asyncio.create_task(read(), name=f"firmlog-monitor-read-{start}")

    def _hash_and_prove(
        self, edge: CompactRange, chunk: list[bytes], trusted: CheckpointNote, fetch: TileFetcher
    ) -> None:
        """Append the chunk's leaves to ``edge`` and prove them the log's (blocking)."""
        append = edge.append
        for raw in chunk:
            append(leaf_hash(raw))
        self._prove_prefix(edge, trusted, fetch)

    async def _check_chunk(
        self,
        trusted: CheckpointNote,
        fetch: TileFetcher,
        ahead: dict[int, asyncio.Task[_Chunk]],
    ) -> None:
        """Check and store the next chunk; the one after it is read meanwhile."""
        watched = self.watched
        size = trusted.checkpoint.tree_size
        progress = watched.progress
        start = progress.next_index
        _, end = self._span(start, size)
        chunk = await (ahead.pop(start, None) or self._read_chunk(start, size))
        if end < size and end not in ahead:
            ahead[end] = self._read_chunk(end, size)
        edge = progress.edge.copy()
        await asyncio.to_thread(self._hash_and_prove, edge, chunk.raws, trusted, fetch)
        self.checks.rollback()
        try:
            accepted, vendors, alerts = await asyncio.to_thread(self._replay, chunk)
        except BaseException:
            self.checks.loaded = False
            await watched.reload_progress()
            raise
        content = self.checks.pending()
        try:
            saved = await watched.store.run(
                watched.store.store.save_entries,
                start,
                edge,
                accepted,
                vendors,
                alerts,
                content,
            )
        except BaseException:
            self.checks.loaded = False
            await watched.reload_progress()
            raise
        if not saved:
            self.checks.loaded = False
            await watched.reload_progress()
            raise RuntimeError(f"entry progress moved under this process at index {start}")
        self.checks.commit()
        progress.saved()
        progress.next_index = end
        progress.edge = edge
        watched.metrics.checked.set(end)
        for alert in alerts:
            watched.metrics.alerts.labels(alert.kind).inc()
            log.warning(
                "entry alert",
                origin=watched.origin,
                index=alert.index,
                kind=alert.kind,
                detail=alert.detail,
            )
        if alerts and self.command is not None:
            self.command.wake()
