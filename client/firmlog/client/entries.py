"""firmlog entries (DESIGN.md section 3): signed notes whose first line names the type.

::

    firmlog/release/v1
    {"build":{...},"changelog":"...",...}      <- one line of RFC 8785 canonical JSON
    <blank line>
    — acme.example/release <base64 signature>
    — acme.example/security <base64 signature>

The type line makes a signature over one kind of entry impossible to read as
another. The leaf hash of an entry (RFC 6962) is its identity in the log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from firmlog.client.note import Ed25519Verifier, Signature, Signer

RELEASE_V1 = "firmlog/release/v1"
REVOCATION_V1 = "firmlog/revocation/v1"
KEYS_V1 = "firmlog/keys/v1"
VENDOR_V1 = "firmlog/vendor/v1"
ENTRY_TYPES = (RELEASE_V1, REVOCATION_V1, KEYS_V1, VENDOR_V1)
DEFAULT_MAX_ENTRY_SIZE = 16 * 1024
MAX_KEYS = 16


@dataclass(frozen=True, slots=True)
class Image:
    sha256: str  # 64 lowercase hex digits
    size: int  # bytes, > 0


@dataclass(frozen=True, slots=True)
class Build:
    time: str  # RFC 3339 UTC, "YYYY-MM-DDTHH:MM:SSZ"
    source_uri: str
    source_commit: str
    builder: str
    reproducible: bool


@dataclass(frozen=True, slots=True)
class Release:
    """``firmlog/release/v1``: a firmware release manifest."""

    vendor: str
    product: str
    hardware_revisions: tuple[str, ...]
    version: str
    security_version: int  # monotonic, for anti-rollback; 0 <= n <= 2**53-1
    channel: str
    image: Image
    build: Build
    sbom_sha256: str | None = None
    fixes: tuple[str, ...] = ()  # CVE ids, "CVE-YYYY-NNNN+"
    changelog: str = ""


@dataclass(frozen=True, slots=True)
class Revocation:
    """``firmlog/revocation/v1``: withdraws a release, named by its entry's leaf hash."""

    vendor: str
    release_hash: str  # 64 lowercase hex digits: RFC 6962 leaf hash of the release entry
    reason: str
    advisory: str = ""


@dataclass(frozen=True, slots=True)
class KeySet:
    """``firmlog/keys/v1``: a vendor's new key set and threshold (rotation)."""

    vendor: str
    keys: tuple[str, ...]  # Ed25519 vkeys
    threshold: int


@dataclass(frozen=True, slots=True)
class VendorAdmission:
    """``firmlog/vendor/v1``: the operator admits a vendor and its first key set."""

    vendor: str
    keys: tuple[str, ...]
    threshold: int


EntryBody = Release | Revocation | KeySet | VendorAdmission


@dataclass(frozen=True, slots=True)
class Entry:
    """A parsed (not yet signature-checked) entry, with its exact bytes."""

    type: str
    body: EntryBody
    text: str  # the signed note text
    signatures: tuple[Signature, ...]
    raw: bytes  # the whole signed note: what the log stores and hashes

    @property
    def leaf_hash(self) -> bytes:
        raise NotImplementedError


def entry_type(body: EntryBody) -> str:
    raise NotImplementedError


def entry_text(body: EntryBody) -> str:
    """``<type>\\n<canonical JSON>\\n``; validates the body first (EntryFormatError)."""
    raise NotImplementedError


def sign_entry(body: EntryBody, signers: Iterable[Signer]) -> bytes:
    """The signed note for ``body``."""
    raise NotImplementedError


def parse_entry(raw: bytes, max_size: int = DEFAULT_MAX_ENTRY_SIZE) -> Entry:
    """Strict parse: a signed note, a known type line, canonical JSON with exactly
    the fields of that type, each valid. Signatures are not verified here.
    EntryFormatError says which field is wrong, what was expected and what was found."""
    raise NotImplementedError


def verify_entry_signatures(
    entry: Entry, keys: Sequence[Ed25519Verifier], threshold: int
) -> tuple[str, ...]:
    """Require valid signatures by at least ``threshold`` distinct keys of ``keys``.

    Returns the vkeys that signed. Raises SignatureError if a signature by a
    key of the set is invalid, EntryPolicyError if fewer than ``threshold`` signed.
    """
    raise NotImplementedError
