"""The ledger gate: which submissions the log appends, decided in log order.

The rules and their replay are :mod:`firmlog.client.ledger`'s (written once,
shared with monitors); this module only feeds them what the database holds
and turns their outcome into index rows. They are applied twice:

- at submission (:class:`firmlog.server.acceptance.Acceptance`), against the
  vendor key sets this process knows, so bad entries are refused at once with
  a 403 and never take a place in a batch;
- in the integration transaction (:class:`LedgerGate`), authoritatively, in
  the order entries get their indexes, against the key sets committed in the
  database (another process may have rotated a vendor's keys meanwhile) and
  those set earlier in the same batch. An entry refused here is not logged;
  its submitter gets the reason. Every error while checking one entry, even
  an unexpected one, is that entry's verdict: nothing one submitter sends can
  fail another's entry.

Entries are one per identity (their signed text): of several submissions of
one text in a batch, the first that the rules accept is appended and the
others are answered with its index.

Signatures verified at submission against the key set that is still current
in the transaction are not verified again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from firmlog.client.entries import Entry, Release, Revocation, parse_entry
from firmlog.client.errors import FirmlogError
from firmlog.client.keys import Ed25519Verifier
from firmlog.client.ledger import OPERATOR_KEYS, LedgerState, VendorKeys
from firmlog.server.storage import (
    Integration,
    KeySetRow,
    LedgerIndex,
    LedgerRows,
    ReleaseRow,
    RevocationRow,
)

log = structlog.get_logger("firmlog.gate")

OPERATOR_CHECKED = OPERATOR_KEYS  # Candidate.checked_against: the operator signature passed


@dataclass(frozen=True, slots=True)
class Candidate:
    """A parsed submission and what its signatures were verified against.

    ``checked_against`` is the ``since_index`` of the vendor key set the
    signatures were verified with at submission, OPERATOR_CHECKED for an
    admission, or None when nothing was verified yet.
    """

    entry: Entry
    checked_against: int | None = None


def vendor_keys(row: KeySetRow) -> VendorKeys:
    return VendorKeys(row.vendor, row.keys, row.threshold, row.index, row.serial)


class VendorKeyCache:
    """The newest vendor key sets this process has seen (vendors are few)."""

    def __init__(self) -> None:
        self._keys: dict[str, VendorKeys] = {}

    def get(self, vendor: str) -> VendorKeys | None:
        return self._keys.get(vendor)

    def learn(self, keys: VendorKeys) -> None:
        known = self._keys.get(keys.vendor)
        if known is None or keys.since_index > known.since_index:
            self._keys[keys.vendor] = keys

    async def load(self, storage: LedgerIndex, vendor: str) -> VendorKeys | None:
        """Re-read a vendor's current key set from the committed ledger index."""
        rows = await storage.key_sets([vendor])
        if vendor in rows:
            self.learn(vendor_keys(rows[vendor]))
        return self._keys.get(vendor)


Verdict = Exception | int | None
"""Of one candidate: None, appended; an int, the same entry (identity) was
appended earlier in this batch at that index; an exception, refused (a
FirmlogError says why; anything else is a server error)."""


@dataclass(frozen=True, slots=True)
class GateResult:
    verdicts: list[Verdict]  # one per candidate
    rows: LedgerRows
    key_sets: list[VendorKeys]  # set by this batch, in order


class LedgerGate:
    def __init__(self, operator_keys: Sequence[Ed25519Verifier], cache: VendorKeyCache) -> None:
        self.operator_keys = tuple(operator_keys)
        self.cache = cache

    async def admit(
        self, tx: Integration, start_index: int, candidates: Sequence[Candidate]
    ) -> GateResult:
        """Decide, in order, which candidates are appended from ``start_index`` on.

        The rules are :meth:`firmlog.client.ledger.LedgerState.apply`'s, on a
        state built from what the database holds: the current key sets of the
        candidates' vendors and the releases their revocations name.
        """
        vendors = sorted({c.entry.body.vendor for c in candidates})
        wanted = [
            bytes.fromhex(c.entry.body.release_id)
            for c in candidates
            if isinstance(c.entry.body, Revocation)
        ]
        stored = await tx.entries_by_identity(wanted) if wanted else {}
        state = LedgerState(
            self.operator_keys,
            vendors={v: vendor_keys(row) for v, row in (await tx.key_sets(vendors)).items()},
            entries={
                identity: (index, parse_entry(raw, max_size=1 << 16))
                for identity, (index, raw) in stored.items()
            },
            size=start_index,
        )
        verdicts: list[Verdict] = []
        key_sets: list[VendorKeys] = []
        releases: list[ReleaseRow] = []
        revocations: list[RevocationRow] = []
        for c in candidates:
            entry, body = c.entry, c.entry.body
            earlier = state.entries.get(entry.identity)
            if earlier is not None and earlier[0] >= start_index:
                verdicts.append(earlier[0])  # appended earlier in this batch
                continue
            try:
                applied = state.apply(entry, verified_with=c.checked_against)
            except Exception as exc:  # this entry's verdict, whatever went wrong
                if not isinstance(exc, FirmlogError):
                    log.exception("checking an entry failed", entry_id=entry.identity.hex())
                verdicts.append(exc)
                continue
            verdicts.append(None)
            if applied.keys is not None:
                key_sets.append(applied.keys)
            if isinstance(body, Release):
                releases.append(
                    ReleaseRow(
                        index=applied.index,
                        vendor=body.vendor,
                        product=body.product,
                        version=body.version,
                        security_version=body.security_version,
                        image_sha256=body.image.sha256,
                        image_size=body.image.size,
                        fixes=body.fixes,
                    )
                )
            elif applied.revoked is not None:
                revocations.append(RevocationRow(applied.index, body.vendor, applied.revoked))
        rows = LedgerRows(
            key_sets=[
                KeySetRow(k.vendor, k.since_index, k.keys, k.threshold, k.serial) for k in key_sets
            ],
            releases=releases,
            revocations=revocations,
        )
        return GateResult(verdicts=verdicts, rows=rows, key_sets=key_sets)

    def committed(self, result: GateResult) -> None:
        """After the commit: let submissions see the new key sets."""
        for keys in result.key_sets:
            self.cache.learn(keys)


__all__ = [
    "OPERATOR_CHECKED",
    "Candidate",
    "GateResult",
    "LedgerGate",
    "VendorKeyCache",
    "Verdict",
]
