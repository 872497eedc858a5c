"""What the log accepts at submission, before an entry joins the pool.

A submission must be a well-formed firmlog entry (a signed note of a known
type with canonical JSON, within the size limit) signed as DESIGN.md section 3
requires: an admission by an operator key, everything else by the vendor's
current key set at its threshold. This is the fast check that answers 4xx at
once; the authoritative one runs in log order inside the integration
(:class:`firmlog.server.gate.LedgerGate`).
"""

from __future__ import annotations

from collections.abc import Sequence

from firmlog.client.entries import Entry, VendorAdmission, parse_entry
from firmlog.client.errors import (
    EntryPolicyError,
    SignatureError,
    SignatureLineError,
)
from firmlog.client.keys import Ed25519Verifier, KeyRing
from firmlog.client.ledger import check_signatures
from firmlog.server.errors import EntryTooLarge
from firmlog.server.gate import OPERATOR_CHECKED, Candidate, VendorKeyCache
from firmlog.server.storage import Storage

# What a change of the vendor's keys since this process last looked can cause.
_KEY_ERRORS = (EntryPolicyError, SignatureError, SignatureLineError)


class Acceptance:
    def __init__(
        self,
        storage: Storage,
        operator_keys: Sequence[Ed25519Verifier],
        cache: VendorKeyCache,
        max_entry_size: int,
    ) -> None:
        self._storage = storage
        self.operator_keys = tuple(operator_keys)
        self._operators = KeyRing(self.operator_keys)  # indexed once, not per admission
        self._cache = cache
        self.max_entry_size = max_entry_size

    async def check(self, raw: bytes) -> Candidate:
        """Parse and authorize one submission, or raise a FirmlogError saying why not.

        A submission whose signed text is already logged is the logged entry,
        whatever its signature lines and whatever happened to its vendor's keys
        since: it passes, unchecked, and the sequencer answers it with the
        original index and bundle.
        """
        if len(raw) > self.max_entry_size:
            raise EntryTooLarge(f"entry is {len(raw)} bytes: the limit is {self.max_entry_size}")
        entry = parse_entry(raw, max_size=self.max_entry_size)
        try:
            return await self._authorize(entry)
        except _KEY_ERRORS:
            if await self._storage.find_identity(entry.identity) is not None:
                return Candidate(entry, None)
            raise

    async def _authorize(self, entry: Entry) -> Candidate:
        if isinstance(entry.body, VendorAdmission):
            check_signatures(entry, self._operators, None)
            return Candidate(entry, OPERATOR_CHECKED)
        vendor = entry.body.vendor
        current = self._cache.get(vendor) or await self._cache.load(self._storage, vendor)
        try:
            check_signatures(entry, self._operators, current)
        except _KEY_ERRORS:
            # Another process may have rotated the vendor's keys: look again.
            fresh = await self._cache.load(self._storage, vendor)
            if fresh is None or fresh == current:
                raise
            check_signatures(entry, self._operators, fresh)
            current = fresh
        assert current is not None
        return Candidate(entry, current.since_index)
