"""The firmware ledger's acceptance rules (DESIGN.md section 3), as pure functions.

Which keys may sign what is state derived from the log's own entries, so
anyone replaying the log (the server, a monitor, a researcher's mirror)
reaches the same verdicts:

- ``firmlog/vendor/v1`` must be signed by an operator key and admits a vendor
  not yet admitted, with its first key set and threshold;
- ``firmlog/keys/v1`` (rotation) must be signed by the vendor's *current* key
  set at its threshold, must carry the serial one above the current set's (the
  admission's set is serial 1), and replaces it;
- ``firmlog/release/v1`` and ``firmlog/revocation/v1`` must be signed by the
  vendor's current key set at its threshold; a revocation must name a release
  of the same vendor that is in the log, by its identity;
- every signature line of an entry is by a key the rule requires, each key at
  most once (:class:`firmlog.client.errors.SignatureLineError` otherwise).

:func:`authorize` checks one entry against the state before it and returns
the vendor's new key set when the entry changes it. Nothing here does I/O;
the caller supplies the vendor's current key set and, for a revocation, the
revoked release.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from firmlog.client.entries import (
    KEYS_V1,
    RELEASE_V1,
    VENDOR_V1,
    Entry,
    KeySet,
    Release,
    Revocation,
    VendorAdmission,
    verify_entry_signatures,
)
from firmlog.client.errors import EntryPolicyError, SignatureLineError
from firmlog.client.keys import Ed25519Verifier, KeyRing, parse_verifier_key

__all__ = [
    "OPERATOR_KEYS",
    "Applied",
    "EntryIndex",
    "LedgerState",
    "UnknownVendorError",
    "VendorKeys",
    "authorize",
    "check_signatures",
    "verify_ahead",
]


class UnknownVendorError(EntryPolicyError):
    """The entry's vendor has not been admitted to this log."""


@dataclass(frozen=True, slots=True)
class VendorKeys:
    """A vendor's key set number ``serial``, as of log index ``since_index`` (the
    entry that set it).

    ``verifiers`` are the parsed ``keys`` (parsed here unless given), ``ring``
    the same as a :class:`~firmlog.client.keys.KeyRing`, built once (ValueError
    for two keys with one name and key ID, which no valid key set has).
    """

    vendor: str
    keys: tuple[str, ...]  # vkeys
    threshold: int
    since_index: int
    serial: int = 1
    verifiers: tuple[Ed25519Verifier, ...] = field(default=(), compare=False, repr=False)
    ring: KeyRing[Ed25519Verifier] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.verifiers:
            parsed = tuple(parse_verifier_key(k) for k in self.keys)
            object.__setattr__(self, "verifiers", parsed)
        object.__setattr__(self, "ring", KeyRing(self.verifiers))


def _vendor_of(entry: Entry) -> str:
    return entry.body.vendor


def check_signatures(
    entry: Entry,
    operator_keys: KeyRing[Ed25519Verifier] | Iterable[Ed25519Verifier],
    current: VendorKeys | None,
) -> None:
    """Who must sign ``entry``: an operator key for an admission, else the vendor's
    current key set at its threshold; and nobody else, each key once.

    Raises SignatureLineError for a line by another key or a repeated key,
    SignatureError for an invalid signature by a required key,
    EntryPolicyError when too few required keys signed."""
    vendor = _vendor_of(entry)
    if isinstance(entry.body, VendorAdmission):
        if not operator_keys:
            raise EntryPolicyError(
                f"vendor admission of {vendor} cannot be checked: no operator key is trusted "
                "(a monitor gives the log operator's verifier key with --operator-key)"
            )
        verify_entry_signatures(entry, operator_keys, threshold=1, exact=True)
        return
    if current is None:
        raise UnknownVendorError(
            f"vendor {vendor} is not admitted to this log: the operator admits vendors "
            f"with {VENDOR_V1}"
        )
    try:
        verify_entry_signatures(entry, current.ring, current.threshold, exact=True)
    except (EntryPolicyError, SignatureLineError) as exc:
        raise type(exc)(
            f"{exc}; the current key set of {vendor} is serial {current.serial}, from log "
            f"index {current.since_index}"
        ) from exc


def authorize(
    entry: Entry,
    index: int,
    operator_keys: Sequence[Ed25519Verifier],
    current: VendorKeys | None,
    revoked: Entry | None = None,
    *,
    signatures_checked: bool = False,
) -> VendorKeys | None:
    """Check that ``entry`` may be appended at ``index``; return the vendor's new key set.

    ``current`` is the vendor's key set before this entry (None if the vendor
    is not admitted). For a revocation, ``revoked`` is the entry its
    ``release_id`` names, if that is in the log. ``signatures_checked``
    skips :func:`check_signatures` when the caller already ran it against the
    same ``current``. Returns the new key set for admissions and rotations,
    None for releases and revocations. Raises EntryPolicyError
    (UnknownVendorError for an unknown vendor) or SignatureError saying why
    the entry is refused.
    """
    body = entry.body
    vendor = _vendor_of(entry)
    if not signatures_checked:
        check_signatures(entry, operator_keys, current)
    if isinstance(body, VendorAdmission):
        if current is not None:
            raise EntryPolicyError(
                f"vendor {vendor} was already admitted (key set of log index "
                f"{current.since_index}); a vendor changes its keys with {KEYS_V1}, signed by "
                "its current keys"
            )
        return VendorKeys(vendor, body.keys, body.threshold, index)
    if current is None:  # only reachable with signatures_checked
        raise UnknownVendorError(f"vendor {vendor} is not admitted to this log")
    if isinstance(body, KeySet):
        if body.serial != current.serial + 1:
            raise EntryPolicyError(
                f"key set of {vendor} carries serial {body.serial}, but the current key set "
                f"(log index {current.since_index}) is serial {current.serial}: a rotation "
                f"creates serial {current.serial + 1}"
                + (
                    ", and an old rotation can never be applied again"
                    if body.serial <= current.serial
                    else ""
                )
            )
        return VendorKeys(vendor, body.keys, body.threshold, index, body.serial)
    if isinstance(body, Revocation):
        if revoked is None:
            raise EntryPolicyError(
                f"revocation names release {body.release_id}, which is not in this log"
            )
        if revoked.type != RELEASE_V1:
            raise EntryPolicyError(
                f"revocation names entry {body.release_id}, a {revoked.type} entry, "
                f"not a {RELEASE_V1}"
            )
        if _vendor_of(revoked) != vendor:
            raise EntryPolicyError(
                f"revocation by {vendor} names a release of {_vendor_of(revoked)}: a vendor "
                "revokes only its own releases"
            )
        return None
    assert isinstance(body, Release), entry.type
    return None


OPERATOR_KEYS = -1
"""``verified_with`` of :meth:`LedgerState.apply` for an admission whose operator
signature was verified already."""


def verify_ahead(
    entry: Entry,
    operator_keys: KeyRing[Ed25519Verifier],
    vendors: Mapping[str, VendorKeys],
) -> int | None:
    """Verify ``entry``'s signatures before its turn, against the key sets in ``vendors``
    (the vendors' sets at some earlier point of the replay), as :func:`check_signatures`
    does; return what to pass as ``verified_with`` to :meth:`LedgerState.apply`.

    None when they do not verify, or the vendor is unknown: ``apply`` then
    verifies them itself, against the state at the entry's turn, and says
    why it refuses the entry. ``apply`` also verifies again if the vendor's
    key set changed in between. Pure, thread-safe: replays verify ahead in
    worker threads.
    """
    body = entry.body
    current = None if isinstance(body, VendorAdmission) else vendors.get(body.vendor)
    if current is None and not isinstance(body, VendorAdmission):
        return None
    try:
        check_signatures(entry, operator_keys, current)
    except Exception:  # whatever it is, apply() meets it again and says what it is
        return None
    return OPERATOR_KEYS if current is None else current.since_index


@dataclass(frozen=True, slots=True)
class Applied:
    """What one entry did to the ledger (:meth:`LedgerState.apply`)."""

    index: int
    entry: Entry
    keys: VendorKeys | None  # the vendor's new key set: admissions and rotations
    revoked: int | None  # a revocation: the log index of the release it withdraws


class EntryIndex(Protocol):
    """Where a :class:`LedgerState` keeps the entries it accepted, by identity.

    ``get`` answers which log index holds the entry with that identity, with
    the entry (a revocation needs the release it names), or None if no
    accepted entry has it; it must see every entry recorded with
    ``__setitem__``, and answer from the whole log, not a recent part: the
    one-identity rule and the revocation rule depend on it. A plain
    ``dict`` is one, and the default; a monitor following a large log uses
    one backed by its database (:class:`firmlog.monitor.store.StoredEntryIndex`),
    so that its memory does not grow with the log.
    """

    def get(self, identity: bytes, /) -> tuple[int, Entry] | None: ...

    def __setitem__(self, identity: bytes, value: tuple[int, Entry], /) -> None: ...


def _memory_index() -> EntryIndex:
    index: dict[bytes, tuple[int, Entry]] = {}
    return index


@dataclass(slots=True)
class LedgerState:
    """The ledger as of log index ``size``: vendor key sets and the entries it knows.

    The one replay loop of the rules. A monitor or a researcher replays a whole
    log into one from the start. The log server builds one for each batch from
    what its database holds at the current tree size (the current key sets of
    the batch's vendors, the releases its revocations name) and applies the
    batch's entries in the order they get their indexes.

    ``entries`` holds the accepted entries by identity (:class:`EntryIndex`, a
    dict unless given): it is asked about one identity at a time, and told
    about an entry once the entry is accepted.
    """

    operator_keys: tuple[Ed25519Verifier, ...]
    vendors: dict[str, VendorKeys] = field(default_factory=dict)
    entries: EntryIndex = field(default_factory=_memory_index)  # by identity
    size: int = 0

    def apply(self, entry: Entry, *, verified_with: int | None = None) -> Applied:
        """Authorize ``entry`` as the next entry of the log and update the state.

        ``verified_with`` says the entry's signatures were verified already: with
        the vendor key set of that ``since_index`` (skipped only if that set is
        still current), or with the operator keys (:data:`OPERATOR_KEYS`).

        An entry whose identity (signed text) is already in the log is refused:
        a log answers a resubmission with the first copy's index, never logs it
        again. Raises what :func:`authorize` raises, and changes nothing then.
        """
        known = self.entries.get(entry.identity)
        if known is not None:
            raise EntryPolicyError(
                f"{entry.type} entry {entry.identity.hex()} is already in the log at index "
                f"{known[0]}: one signed text is one entry"
            )
        body = entry.body
        current = self.vendors.get(body.vendor)
        checked = verified_with is not None and (
            verified_with == OPERATOR_KEYS
            if isinstance(body, VendorAdmission)
            else current is not None and current.since_index == verified_with
        )
        revoked = None
        if isinstance(body, Revocation):
            revoked = self.entries.get(bytes.fromhex(body.release_id))
        new_keys = authorize(
            entry,
            self.size,
            self.operator_keys,
            current,
            revoked[1] if revoked else None,
            signatures_checked=checked,
        )
        applied = Applied(self.size, entry, new_keys, revoked[0] if revoked else None)
        if new_keys is not None:
            self.vendors[new_keys.vendor] = new_keys
        self.entries[entry.identity] = (self.size, entry)
        self.size += 1
        return applied

    def apply_all(self, entries: Iterable[Entry]) -> None:
        for e in entries:
            self.apply(e)
