"""One watched log: the state the follower and the witness share, and the one way it changes.

The monitor keeps, per log, exactly one belief: the latest checkpoint it
verified (signed by the log key, consistent with every checkpoint it
verified before). The follower advances it from the log's ``/checkpoint``
with a proof it builds from the log's tiles
(:class:`firmlog.client.trust.CheckpointTracker`); the witness advances it
from ``add-checkpoint`` requests, with the proof the log sends
(c2sp.org/tlog-witness); gossip (:mod:`firmlog.monitor.gossip`) advances
it from a peer's checkpoint with a proof built from the log's tiles. Every
checkpoint it trusts, it cosigns: the trusted checkpoint is the latest
cosigned one.

Both go through :meth:`WatchedLog.advance` holding :attr:`WatchedLog.lock`:
the in-memory state and the database (a compare-and-swap on the stored
tree size) change together or not at all. A proven split view
(:meth:`WatchedLog.record_split_view`) is kept as evidence, with a
``split-view`` alert, and ends cosigning for good; ``--alert-command`` then
runs for that alert, with the evidence in its JSON.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from firmlog.client.cosignature import CosignatureSigner
from firmlog.client.evidence import SplitViewEvidence
from firmlog.client.keys import Ed25519Verifier
from firmlog.client.ledger import LedgerState
from firmlog.client.merkle import CompactRange
from firmlog.client.note import Signature, add_signatures, split_note
from firmlog.client.trust import CheckpointNote
from firmlog.monitor.alerts import AlertCommand
from firmlog.monitor.metrics import MonitorMetrics
from firmlog.monitor.store import MAX_ENTRY_SIZE, Alert, AsyncStore, Snapshot, StoredEntryIndex

__all__ = ["MAX_ENTRY_SIZE", "SPLIT_VIEW_ALERT", "Clock", "EntryProgress", "WatchedLog"]

log = structlog.get_logger("firmlog.monitor")

Clock = Callable[[], float]
SPLIT_VIEW_ALERT = "split-view"  # the kind of the alert kept with split-view evidence


@dataclass(slots=True)
class EntryProgress:
    """How far the entries were checked: owned by the follower.

    ``ledger.entries`` is ``index`` once loaded from the store: the entries
    stay on disk, what the replay of the chunk in hand accepted is pending in
    ``index`` until :meth:`saved` (its chunk was stored) or :meth:`discard`.
    """

    next_index: int
    edge: CompactRange  # leaves [0, next_index)
    ledger: LedgerState
    index: StoredEntryIndex | None = None

    def saved(self) -> None:
        if self.index is not None:
            self.index.saved()

    def discard(self) -> None:
        if self.index is not None:
            self.index.discard()


class WatchedLog:
    """The state of one log. Change it only through the methods below, holding :attr:`lock`."""

    def __init__(
        self,
        log_key: Ed25519Verifier,
        signer: CosignatureSigner,
        store: AsyncStore,
        metrics: MonitorMetrics,
        clock: Clock = time.time,
    ) -> None:
        self.log_key = log_key
        self.signer = signer
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.lock = asyncio.Lock()
        self.trusted: CheckpointNote | None = None
        self.cosigned_note: bytes | None = None
        self.split_view = False
        self.progress = EntryProgress(0, CompactRange(), LedgerState(()))
        self.last_error: str | None = None
        self.last_poll: float | None = None
        self.command: AlertCommand | None = None  # --alert-command, shared with the follower

    @property
    def origin(self) -> str:
        return self.log_key.name

    @property
    def tree_size(self) -> int:
        return self.trusted.checkpoint.tree_size if self.trusted else 0

    async def load(self, operator_keys: tuple[Ed25519Verifier, ...]) -> None:
        """Read the stored state (at start)."""
        snap = await self.store.run(self.store.store.load)
        self._take_checkpoint(snap)
        self._load_progress(snap, operator_keys)

    def _take_checkpoint(self, snap: Snapshot) -> None:
        """The trusted and cosigned checkpoints, and the split view, as stored."""
        self.trusted = CheckpointNote.parse(snap.trusted_note) if snap.trusted_note else None
        self.cosigned_note = snap.cosigned_note
        self.split_view = snap.split_view
        self.metrics.tree_size.set(self.tree_size)

    async def reload_progress(self) -> None:
        """Read the entry progress and ledger back from the store (after a failed save)."""
        snap = await self.store.run(self.store.store.load)
        self._load_progress(snap, self.progress.ledger.operator_keys)

    def _load_progress(self, snap: Snapshot, operator_keys: tuple[Ed25519Verifier, ...]) -> None:
        """The ledger as stored: the vendor key sets in memory (vendors are few), the
        entries left in the store (one index per process, reused on reload)."""
        index = self.progress.index
        if index is None:
            index = self.store.store.entry_index()
        index.discard()
        ledger = LedgerState(
            operator_keys,
            vendors={v.vendor: v for v in snap.vendors},
            entries=index,
            size=snap.next_index,
        )
        self.progress = EntryProgress(snap.next_index, snap.edge, ledger, index)
        self.metrics.checked.set(snap.next_index)

    def cosign(self, note: bytes) -> tuple[bytes, Signature]:
        """The note as the monitor serves it (the log's signature lines and the
        monitor's cosignature, other lines dropped) and the cosignature alone."""
        text, signatures = split_note(note)
        key = self.log_key
        own = [s for s in signatures if s.name == key.name and s.key_id == key.key_id]
        sig = Signature(
            self.signer.name, self.signer.key_id, self.signer.sign_at(text, int(self.clock()))
        )
        body = text.encode("utf-8") + b"\n" + b"".join(s.line().encode("utf-8") for s in own)
        return add_signatures(body, [sig]), sig

    async def advance(
        self, expected: CheckpointNote | None, new: CheckpointNote, via: str
    ) -> Signature | None:
        """Trust and cosign ``new`` if the trusted checkpoint is still ``expected``.

        The caller holds :attr:`lock` and has proven ``new`` consistent with
        ``expected``. Returns the cosignature, or None (nothing changed) when
        the state moved on meanwhile or the log is split.
        """
        assert self.lock.locked()
        if self.split_view or self.trusted != expected:
            return None
        cosigned, sig = self.cosign(new.note)
        expected_size = expected.checkpoint.tree_size if expected is not None else None
        # Shielded: a caller cancelled while the store commits (a witness request
        # whose client went away) must not leave the memory behind the store.
        saved = await asyncio.shield(self._save(expected_size, new, cosigned))
        if not saved:
            # Another process, or a save whose caller was cancelled before this
            # process noted it: take the stored checkpoint, so that the next
            # request is answered from the truth (409 with the stored size).
            log.error("stored state moved under this process", origin=self.origin)
            self._take_checkpoint(await self.store.run(self.store.store.load))
            return None
        if expected is None or expected.checkpoint.tree_size != new.checkpoint.tree_size:
            log.info(
                "checkpoint verified",
                origin=self.origin,
                tree_size=new.checkpoint.tree_size,
                via=via,
            )
        self.metrics.cosignatures.labels(via).inc()
        return sig

    async def _save(self, expected_size: int | None, new: CheckpointNote, cosigned: bytes) -> bool:
        """Store ``new`` as trusted (if the stored size is ``expected_size``) and,
        once stored, note it in memory: both, or neither."""
        saved = await self.store.run(
            self.store.store.save_checkpoint,
            expected_size,
            new.note,
            new.checkpoint.tree_size,
            cosigned,
        )
        if saved:
            self.trusted, self.cosigned_note = new, cosigned
            self.metrics.tree_size.set(new.checkpoint.tree_size)
        return bool(saved)

    async def record_split_view(self, evidence: SplitViewEvidence) -> None:
        """Keep the evidence, byte for byte, with its alert, stop cosigning this log, and
        run the alert command (the evidence in its JSON). Holding :attr:`lock`."""
        assert self.lock.locked()
        alert = Alert(
            None,
            SPLIT_VIEW_ALERT,
            f"split view of {self.origin}: {evidence.kind}: {evidence.detail}",
            int(self.clock()),
        )
        number = await self.store.run(self.store.store.save_split_view, evidence, alert)
        self.split_view = True
        self.metrics.split_views.inc()
        log.critical(
            "split view: the log signed two checkpoints that cannot both be true; "
            "evidence stored, cosigning stopped",
            origin=self.origin,
            kind=evidence.kind,
            detail=evidence.detail,
            evidence=number,
        )
        if self.command is not None:
            self.command.wake()
