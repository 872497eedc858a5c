"""What the log accepts: the checks a submission passes before it joins the pool.

A submission must be a well-formed firmlog entry (a signed note of a known
type with canonical JSON, within the size limit) signed as DESIGN.md section 3
requires. Until vendor state is derived from the log, every entry type must
carry a valid signature by the operator key.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmlog.client.entries import Entry, parse_entry, verify_entry_signatures
from firmlog.client.errors import EntryFormatError
from firmlog.client.note import Ed25519Verifier


class EntryTooLarge(EntryFormatError):
    """The submission exceeds the entry size limit. Answer 413."""


@dataclass(frozen=True, slots=True)
class AcceptancePolicy:
    operator: Ed25519Verifier
    max_entry_size: int

    def check(self, raw: bytes) -> Entry:
        """Parse and authorize one submission, or raise a FirmlogError saying why not."""
        if len(raw) > self.max_entry_size:
            raise EntryTooLarge(f"entry is {len(raw)} bytes: the limit is {self.max_entry_size}")
        entry = parse_entry(raw, max_size=self.max_entry_size)
        verify_entry_signatures(entry, [self.operator], threshold=1)
        return entry
