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

Who owns what: ``_pending`` and ``_wake`` are shared between :meth:`submit`
(appends) and the run loop (takes); everything else belongs to the run loop.
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

from firmlog.client.bundle import ProofBundle
from firmlog.client.entries import parse_entry
from firmlog.client.integrate import edge_tiles, integrate
from firmlog.client.keys import Ed25519Signer
from firmlog.client.merkle import EMPTY_ROOT, inclusion_proof_plan
from firmlog.client.merkle import leaf_hash as merkle_leaf_hash
from firmlog.server.config import SequencerConfig
from firmlog.server.errors import (
    PoolFull,
    ProofUnavailable,
    SequencerStopped,
    SigningRefused,
    Unavailable,
)
from firmlog.server.gate import Candidate, GateResult, LedgerGate
from firmlog.server.metrics import ServerMetrics
from firmlog.server.reader import LogReader
from firmlog.server.signing import TreeSigner
from firmlog.server.storage import EntryRow, Integration, LogState, Storage
from firmlog.server.witnessing import WitnessCollector, WitnessingFailed

log = structlog.get_logger("firmlog.sequencer")


@dataclass(frozen=True, slots=True)
class Integrated:
    """The outcome of one submission: where it is and the proof that it is there."""

    leaf_index: int
    tree_size: int
    bundle: bytes
    duplicate: bool  # the entry was already in the log before this submission


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
    ) -> None:
        self._storage = storage
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
        self._witnesses = witnesses
        self._cosigned: tuple[int, bytes] | None = None  # (tree size, cosigned note)

    @property
    def origin(self) -> str:
        return self._signer.origin

    async def initialize(self) -> None:
        """Check that the database holds this log (TreeSigner.check_database: raises
        WrongLog if not); publish a signed checkpoint of the empty tree if it has none yet."""
        async with self._storage.integration() as tx:
            state = await tx.state()
            await self._signer.check_database(tx, state)
            note = state.checkpoint
            if not note:
                note = await self._signer.sign(state, 0, EMPTY_ROOT)
                await tx.write_state(LogState(0, b"", note))
        await self._signer.published(note)
        if not state.checkpoint:
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
            self._metrics.submissions.inc(1, "pool_full")
            raise PoolFull(retry_after=max(1.0, self._config.batch_interval * 2))
        future: asyncio.Future[Integrated] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(entry, leaf_hash, identity, future, self._clock(), candidate))
        self._metrics.pool.set(len(self._pending))
        if len(self._pending) == 1 or len(self._pending) >= self._config.batch_size:
            self._wake.set()
        return await asyncio.shield(future)

    async def run(self) -> None:
        """Integrate batches until :meth:`stop`; then integrate what is left and return."""
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
        for p, result in zip(batch, results, strict=True):
            if p.future.done():
                continue
            if isinstance(result, Integrated):
                self._metrics.submissions.inc(1, "duplicate" if result.duplicate else "integrated")
                p.future.set_result(result)
            else:
                outcome = "unproven" if isinstance(result, ProofUnavailable) else "refused"
                self._metrics.submissions.inc(1, outcome)
                p.future.set_exception(result)

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

    async def _integrate(self, batch: list[_Pending]) -> list[Integrated | Exception]:
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
        witnessed = True
        if self._witnesses is None:
            self._reader.publish(note, size, tree.root_hash)
        else:
            try:
                note = await self._witnessed(note, size)
            except WitnessingFailed as exc:
                log.warning("checkpoint not published: no quorum", tree_size=size, error=str(exc))
                witnessed = False
            else:
                self._reader.publish(note, size, tree.root_hash)
        self._metrics.tree_size.set(size)
        if new_entries:
            log.info("integrated", entries=len(new_entries), tree_size=size)

        indexes = sorted({index for index, _ in logged.values()})
        proofs: dict[int, list[bytes]] | None
        try:
            proofs = {}
            if not witnessed:
                proofs = None  # the checkpoint is not published: no bundle against it
            elif indexes:
                plans = [inclusion_proof_plan(index, size) for index in indexes]
                proofs = dict(zip(indexes, await self._reader.prove(size, plans), strict=True))
        except Exception:  # the batch is committed: never answer "nothing was stored"
            log.exception("proving a committed batch failed", tree_size=size)
            self._metrics.integration_errors.inc()
            proofs = None
        new_ids = {e.identity for e in new_entries}
        bundles: dict[int, bytes] = {}  # one bundle per entry, shared by its submitters
        results: list[Integrated | Exception] = []
        for p in batch:
            error = refused.get(id(p))
            if error is not None:
                results.append(error)
                continue
            index, raw = logged[p.identity]
            if proofs is None:
                results.append(ProofUnavailable(index, merkle_leaf_hash(raw)))
                continue
            bundle = bundles.get(index)
            if bundle is None:
                bundle = ProofBundle(
                    index=index, proof=tuple(proofs[index]), checkpoint=note, extra=raw
                ).format()
                bundles[index] = bundle
            results.append(
                Integrated(
                    leaf_index=index,
                    tree_size=size,
                    bundle=bundle,
                    duplicate=p.identity not in new_ids or p.entry != raw,
                )
            )
        return results

    async def _witnessed(self, note: bytes, size: int) -> bytes:
        """The checkpoint ``note`` of ``size`` cosigned by the policy's quorum
        (collected once per tree size); WitnessingFailed past the timeout."""
        assert self._witnesses is not None
        if self._cosigned is not None and self._cosigned[0] == size:
            return self._cosigned[1]
        cosigned = await self._witnesses.collect(note, size)
        self._cosigned = (size, cosigned)
        return cosigned


def _unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the log cannot integrate anything just now (the database
    is unavailable, or the signer refuses the stored tree), so that retrying the
    batch in parts cannot help, rather than that something in the batch is wrong."""
    return isinstance(exc, Unavailable | SigningRefused | OSError | TimeoutError)


def _fail(batch: list[_Pending], exc: Exception) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(exc)
