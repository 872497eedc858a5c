"""The sequencer: batches submissions into the tree, one transaction per batch.

Submissions wait in an in-memory pool. The run loop takes a batch when it is
full or when the oldest entry has waited ``batch_interval`` (10 ms by default,
at most 500 ms): under load the next batch fills while the previous one
commits, so batches grow with the load (group commit). It integrates each
in one storage transaction under the log-wide lock: it reads the committed
state (another process may have grown the log), skips entries already logged
(by identity: for a firmlog entry, its signed text, so a copy with other
signature lines is the logged entry and gets its index and bundle),
lets the ledger gate decide in log order which new entries may be appended
(:class:`firmlog.server.gate.LedgerGate`; a sequencer without a gate logs
opaque entries, as a plain tlog), appends those to the tree (the client's
:func:`~firmlog.client.integrate.integrate`, from the stored right edge and
the stored tiles it names), writes the entries, the ledger index rows, the
hash tiles that changed and the new signed checkpoint, and commits. Only
then are the waiting submitters answered, each with a ``.tlog-proof`` bundle
against the new checkpoint: a proof, not a promise.

Per-entry verdicts: nothing one submitter sends can fail another's entry.
Every error while checking an entry is that entry's answer (the gate), and a
batch whose transaction fails for any other reason than the database being
unavailable is retried in halves, down to the entry that fails it.

With witnesses (:mod:`firmlog.server.witnessing`) a checkpoint is published
only once a quorum cosigned it, and integration does not wait for that: after
the commit the new checkpoint is offered to the :class:`CheckpointPublisher`
and the run loop goes on with the next batch. Submitters whose entries the
published checkpoint does not cover yet are parked; once any checkpoint
covering an entry is published (a newer one supersedes those still waiting
for witnesses), its submitters get their bundles against it. Past the
witness timeout a parked submitter gets 503 (:class:`NotCosigned`); its entry
is logged, and a resubmission gets the cosigned bundle once there is one.

Who owns what: ``_pending`` and ``_wake`` are shared between :meth:`submit`
(appends) and the run loop (takes); ``_parked`` between the run loop
(parks), the publisher's task (answers what a publication covers) and the
expiry timers (answer 503), each taking its items out before it awaits;
everything else belongs to the run loop.
The sequencer keeps no tree in memory beyond what one batch needs: the right
edge is stored with the state and re-read in every transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from firmlog.client.bundle import format_bundles
from firmlog.client.entries import parse_entry
from firmlog.client.integrate import edge_tiles, integrate
from firmlog.client.keys import Ed25519Signer
from firmlog.client.merkle import EMPTY_ROOT, inclusion_proof_plan
from firmlog.client.merkle import leaf_hash as merkle_leaf_hash
from firmlog.server.config import SequencerConfig
from firmlog.server.errors import (
    NotCosigned,
    PoolFull,
    ProofUnavailable,
    SequencerStopped,
    SigningRefused,
    Unavailable,
    answer,
)
from firmlog.server.gate import Candidate, GateResult, LedgerGate
from firmlog.server.metrics import ServerMetrics
from firmlog.server.reader import LatestCheckpoint, LogReader, checkpoint_of
from firmlog.server.signing import TreeSigner
from firmlog.server.storage import EntryRow, Integration, LogState, Storage
from firmlog.server.witnessing import CheckpointPublisher, WitnessCollector

log = structlog.get_logger("firmlog.sequencer")

_TIMER_SLACK = 0.01
"""Seconds by which an expiry timer may fire before the deadline it was set for."""


@dataclass(frozen=True, slots=True)
class Integrated:
    """The outcome of one submission: where it is and the proof that it is there."""

    leaf_index: int
    tree_size: int
    bundle: bytes
    duplicate: bool  # the entry was already in the log before this submission


@dataclass(frozen=True, slots=True)
class _Unpublished:
    """A logged entry whose submitter waits for a published checkpoint covering it."""

    leaf_index: int
    entry: bytes  # as logged
    duplicate: bool


@dataclass(slots=True)
class _Parked:
    pending: _Pending
    logged: _Unpublished
    deadline: float  # loop time: past it, 503


@dataclass(slots=True)
class _Pending:
    entry: bytes
    leaf_hash: bytes
    identity: bytes
    future: asyncio.Future[Integrated]
    queued_at: float
    candidate: Candidate | None


class Sequencer:
    def __init__(
        self,
        storage: Storage,
        reader: LogReader,
        signer: Ed25519Signer,
        config: SequencerConfig,
        metrics: ServerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        ledger: LedgerGate | None = None,
        checkpoint_file: Path | None = None,
        witnesses: WitnessCollector | None = None,
        on_public: Callable[[LatestCheckpoint], None] | None = None,
    ) -> None:
        """``on_public`` is called with each checkpoint once it is public (with
        witnesses: cosigned), after readers see it (firmlog.server.publish)."""
        self._storage = storage
        self._on_public = on_public
        self._ledger = ledger
        self._reader = reader
        self._config = config
        self._metrics = metrics or ServerMetrics()
        # The only way to the log key: it checks each tree against what was published.
        self._signer = TreeSigner(signer, reader, checkpoint_file, self._metrics)
        self._clock = clock
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._stopping = False
        # With witnesses, a checkpoint is published only once cosigned by a quorum.
        self._publisher: CheckpointPublisher | None = None
        self._witness_timeout = 0.0
        if witnesses is not None:
            self._publisher = CheckpointPublisher(
                witnesses, storage, reader, self._metrics, self._cosigned
            )
            self._witness_timeout = witnesses.timeout
        self._parked: list[_Parked] = []
        self._none_parked = asyncio.Event()
        self._none_parked.set()

    @property
    def origin(self) -> str:
        return self._signer.origin

    async def initialize(self) -> None:
        """Check that the database holds this log (TreeSigner.check_database: raises
        WrongLog if not); publish a signed checkpoint of the empty tree if it has none yet.

        With witnesses, publish the cosigned checkpoint recorded in storage, and
        offer the stored tree to the witnesses if it is newer (or the first)."""
        async with self._storage.integration() as tx:
            state = await tx.state()
            await self._signer.check_database(tx, state)
            note = state.checkpoint
            if not note:
                note = await self._signer.sign(state, 0, EMPTY_ROOT)
                await tx.write_state(LogState(0, b"", note))
        await self._signer.published(note)
        if self._publisher is not None:
            # Serve what was published before a restart; have a newer tree cosigned.
            await self._publisher.restore()
            self._publisher.offer(checkpoint_of(note))
        elif not state.checkpoint:
            self._reader.publish(note, 0, EMPTY_ROOT)
            log.info("published the empty tree", origin=self.origin)

    async def submit(
        self, entry: bytes, leaf_hash: bytes, candidate: Candidate | None = None
    ) -> Integrated:
        """Queue an entry and wait until it is durably in the log.

        ``candidate`` is the parsed entry as checked at submission; with a
        ledger gate, an entry without one is parsed here (EntryFormatError)
        and fully checked in the integration. Raises the gate's FirmlogError
        if the entry is refused. Without a gate entries are opaque: their
        identity is their leaf hash.
        """
        if self._ledger is not None and candidate is None:
            candidate = Candidate(parse_entry(entry))
        identity = candidate.entry.identity if candidate is not None else leaf_hash
        if self._stopping:
            raise SequencerStopped("the log is shutting down")
        if len(self._pending) >= self._config.pool_size:
            self._metrics.submitted("pool_full")
            raise PoolFull(retry_after=max(1.0, self._config.batch_interval * 2))
        future: asyncio.Future[Integrated] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(entry, leaf_hash, identity, future, self._clock(), candidate))
        self._metrics.pool.set(len(self._pending))
        if len(self._pending) == 1 or len(self._pending) >= self._config.batch_size:
            self._wake.set()
        return await asyncio.shield(future)

    async def run(self) -> None:
        """Integrate batches until :meth:`stop`; then integrate what is left, wait for
        the submitters still waiting for cosignatures (at most the witness timeout)
        and return. With witnesses, the publisher runs as long as this does."""
        if self._publisher is None:
            await self._integrate_batches()
            return
        publishing = asyncio.create_task(self._publisher.run(), name="firmlog-publisher")
        try:
            await self._integrate_batches()
            await self._none_parked.wait()
        finally:
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)
            self._expire(all_of_them=True)

    async def _integrate_batches(self) -> None:
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._pending[0].queued_at + self._config.batch_interval - self._clock()
            if len(self._pending) < self._config.batch_size and wait > 0 and not self._stopping:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
                continue
            batch = self._pending[: self._config.batch_size]
            del self._pending[: len(batch)]
            self._metrics.pool.set(len(self._pending))
            try:
                await self._integrate_and_answer(batch)
            except Exception as exc:  # the loop must outlive any batch; none is left waiting
                _fail(batch, exc)

    async def stop(self) -> None:
        """Refuse new entries; the run loop drains the pool, then returns."""
        self._stopping = True
        self._wake.set()

    async def _integrate_and_answer(self, batch: list[_Pending]) -> None:
        started = self._clock()
        try:
            results = await self._integrate(batch)
        except Exception as exc:
            self._metrics.integration_errors.inc()
            if len(batch) > 1 and not _unavailable(exc):
                # Perhaps one entry fails the whole transaction: retry in halves, so
                # that only the entry that fails it is answered with the error.
                log.warning(
                    "integration failed; retrying the batch in halves",
                    entries=len(batch),
                    error=f"{type(exc).__name__}: {exc}",
                )
                half = len(batch) // 2
                await self._integrate_and_answer(batch[:half])
                await self._integrate_and_answer(batch[half:])
                return
            _fail(batch, exc)  # answer first: logging may fail too
            log.exception("integration failed", entries=len(batch))
            return
        self._metrics.integrate_seconds.observe(self._clock() - started)
        self._metrics.batch_size.observe(len(batch))
        parked = False
        for p, result in zip(batch, results, strict=True):
            if p.future.done():
                continue
            if isinstance(result, _Unpublished):
                deadline = asyncio.get_running_loop().time() + self._witness_timeout
                self._parked.append(_Parked(p, result, deadline))
                self._none_parked.clear()
                parked = True
            elif isinstance(result, Integrated):
                self._metrics.submitted("duplicate" if result.duplicate else "integrated")
                p.future.set_result(result)
            else:
                if isinstance(result, ProofUnavailable):
                    self._metrics.submitted("unproven")
                else:
                    self._metrics.submitted("refused", answer(result).kind_of(result))
                p.future.set_exception(result)
        if parked:
            asyncio.get_running_loop().call_later(self._witness_timeout, self._expire)
            # A checkpoint covering them may have been published since the commit.
            if self._publisher is not None and self._publisher.published is not None:
                await self._answer_parked(self._publisher.published)

    def _expire(self, all_of_them: bool = False) -> None:
        """Answer 503 to the parked submitters past their deadline (or all of them)."""
        # A timer may fire up to the clock's resolution early: allow for that.
        now = asyncio.get_running_loop().time() + _TIMER_SLACK
        expired = [x for x in self._parked if all_of_them or x.deadline <= now]
        if not expired:
            return
        self._parked = [x for x in self._parked if not (all_of_them or x.deadline <= now)]
        if not self._parked:
            self._none_parked.set()
        for x in expired:
            if not x.pending.future.done():
                self._metrics.submitted("unproven")
                x.pending.future.set_exception(
                    NotCosigned(x.logged.leaf_index, merkle_leaf_hash(x.logged.entry))
                )

    async def _cosigned(self, published: LatestCheckpoint) -> None:
        """Called by the publisher once a cosigned checkpoint is published."""
        if self._on_public is not None:
            self._on_public(published)
        await self._answer_parked(published)

    async def _answer_parked(self, published: LatestCheckpoint) -> None:
        """Answer the parked submitters whose entries ``published`` covers, with
        bundles against it (called by the publisher once it is published)."""
        covered = [x for x in self._parked if x.logged.leaf_index < published.tree_size]
        if not covered:
            return
        self._parked = [x for x in self._parked if x.logged.leaf_index >= published.tree_size]
        if not self._parked:
            self._none_parked.set()
        entries = {x.logged.leaf_index: x.logged.entry for x in covered}
        try:
            bundles = await self._bundles(published, entries)
        except Exception:  # committed and cosigned: never answer "nothing was stored"
            log.exception(
                "proving against a published checkpoint failed", tree_size=published.tree_size
            )
            self._metrics.integration_errors.inc()
            for x in covered:
                if not x.pending.future.done():
                    self._metrics.submitted("unproven")
                    x.pending.future.set_exception(
                        ProofUnavailable(x.logged.leaf_index, merkle_leaf_hash(x.logged.entry))
                    )
            return
        for x in covered:
            if x.pending.future.done():
                continue
            self._metrics.submitted("duplicate" if x.logged.duplicate else "integrated")
            x.pending.future.set_result(
                Integrated(
                    leaf_index=x.logged.leaf_index,
                    tree_size=published.tree_size,
                    bundle=bundles[x.logged.leaf_index],
                    duplicate=x.logged.duplicate,
                )
            )

    async def _bundles(
        self, against: LatestCheckpoint, entries: dict[int, bytes]
    ) -> dict[int, bytes]:
        """A ``.tlog-proof`` bundle against ``against`` for each ``index: entry``."""
        indexes = sorted(entries)
        if not indexes:
            return {}
        size = against.tree_size
        proofs = await self._reader.prove(size, [inclusion_proof_plan(i, size) for i in indexes])
        # One checkpoint for the batch: checked once, shared proof hashes encoded once.
        bundles = format_bundles(
            against.note,
            [(i, proof, entries[i]) for i, proof in zip(indexes, proofs, strict=True)],
        )
        return dict(zip(indexes, bundles, strict=True))

    async def _gate(
        self, tx: Integration, start_index: int, fresh: list[_Pending]
    ) -> tuple[list[_Pending], dict[int, Exception], GateResult | None]:
        """Which new entries are appended, in order; and, by ``id()`` of the
        submission, why the others are not. A submission of an entry appended
        earlier in the batch is neither: it is answered as a duplicate."""
        if self._ledger is None:
            first: dict[bytes, _Pending] = {}  # opaque entries: the first of each
            for p in fresh:
                first.setdefault(p.identity, p)
            return list(first.values()), {}, None
        if not fresh:
            return [], {}, None
        candidates = [p.candidate for p in fresh]
        assert all(c is not None for c in candidates)  # submit parses every entry
        result = await self._ledger.admit(tx, start_index, [c for c in candidates if c is not None])
        accepted: list[_Pending] = []
        refused: dict[int, Exception] = {}
        for p, verdict in zip(fresh, result.verdicts, strict=True):
            if verdict is None:
                accepted.append(p)
            elif isinstance(verdict, Exception):
                refused[id(p)] = verdict
        return accepted, refused, result

    async def _integrate(
        self, batch: list[_Pending]
    ) -> list[Integrated | _Unpublished | Exception]:
        async with self._storage.integration() as tx:
            state = await tx.state()
            # identity -> (index, the logged entry's bytes): what each submission is answered with
            logged = await tx.entries_by_identity([p.identity for p in batch])
            known = set(logged)
            fresh = [p for p in batch if p.identity not in known]
            accepted, refused, gate = await self._gate(tx, state.tree_size, fresh)
            new_entries: list[EntryRow] = []
            for index, p in enumerate(accepted, start=state.tree_size):
                logged[p.identity] = (index, p.entry)
                new_entries.append(EntryRow(p.identity, p.leaf_hash, p.entry))
            edge = edge_tiles(state.tree_size, state.tree_size + len(new_entries))
            stored = await tx.read_tiles([(t.level, t.index) for t in edge]) if edge else {}
            tree = integrate(
                state.tree_size, state.right_edge, stored, [e.leaf_hash for e in new_entries]
            )
            if new_entries:
                note = await self._signer.sign(state, tree.tree_size, tree.root_hash)
                await tx.append_entries(state.tree_size, new_entries)
                if gate is not None:
                    await tx.write_ledger(gate.rows)
                await tx.write_tiles(tree.tiles)
                await tx.write_state(LogState(tree.tree_size, tree.right_edge, note))
            else:
                note = state.checkpoint
        # Committed: the entries are durable. Publish, then prove from the new tiles.
        if gate is not None and self._ledger is not None:
            self._ledger.committed(gate)
        size = tree.tree_size
        self._reader.remember_tiles(size, tree.tiles)
        await self._signer.published(note)  # the data dir records it before anyone sees it
        integrated = LatestCheckpoint(note=note, tree_size=size, root_hash=tree.root_hash)
        against: LatestCheckpoint | None = integrated
        if self._publisher is None:
            self._reader.publish(note, size, tree.root_hash)
            if self._on_public is not None and new_entries:
                self._on_public(integrated)
        else:  # published once cosigned; the submitters it does not cover wait for that
            self._publisher.offer(integrated)
            against = self._publisher.published
        self._metrics.tree_size.set(size)
        if new_entries:
            log.info("integrated", entries=len(new_entries), tree_size=size)

        covered = {
            index: raw
            for index, raw in logged.values()
            if against is not None and index < against.tree_size
        }
        bundles: dict[int, bytes] | None
        try:
            bundles = await self._bundles(against, covered) if against is not None else {}
        except Exception:  # the batch is committed: never answer "nothing was stored"
            log.exception("proving a committed batch failed", tree_size=size)
            self._metrics.integration_errors.inc()
            bundles = None
        new_ids = {e.identity for e in new_entries}
        results: list[Integrated | _Unpublished | Exception] = []
        for p in batch:
            error = refused.get(id(p))
            if error is not None:
                results.append(error)
                continue
            index, raw = logged[p.identity]
            duplicate = p.identity not in new_ids or p.entry != raw
            if against is None or index >= against.tree_size:
                results.append(_Unpublished(index, raw, duplicate))
            elif bundles is None:
                results.append(ProofUnavailable(index, merkle_leaf_hash(raw)))
            else:
                results.append(
                    Integrated(
                        leaf_index=index,
                        tree_size=against.tree_size,
                        bundle=bundles[index],
                        duplicate=duplicate,
                    )
                )
        return results


def _unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the log cannot integrate anything just now (the database
    is unavailable, or the signer refuses the stored tree), so that retrying the
    batch in parts cannot help, rather than that something in the batch is wrong."""
    return isinstance(exc, Unavailable | SigningRefused | OSError | TimeoutError)


def _fail(batch: list[_Pending], exc: Exception) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(exc)
