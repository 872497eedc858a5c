"""Device verification before install (DESIGN.md section 6): one offline check.

:func:`verify_update` decides whether a device may install an image, given
the image, its ``.tlog-proof`` bundle (c2sp.org/tlog-proof@v1, with the signed
``firmlog/release/v1`` entry in ``extra``), the device's trust policy
(c2sp.org/tlog-policy), the vendor keys it pins and what it knows about itself.
It returns a :class:`VerifiedUpdate` or raises :class:`UpdateRefused`, whose
``step`` names the first check that failed; it never returns a boolean. The
checks run in this order (:data:`STEPS`):

=======================  ======================================================
``bundle``               the bundle is a strict tlog-proof and its checkpoint a
                         strict tlog-checkpoint note
``log-signature``        the checkpoint carries a valid signature by a policy log
``origin``               its origin is the name of the log key that signed it
``cosignatures``         witness cosignatures meet the policy quorum, none dated
                         in the future (beyond the policy's skew) or, with
                         ``max_cosignature_age``, too old
``entry``                ``extra`` holds a well-formed ``firmlog/release/v1``
``vendor-signatures``    the release is the pinned vendor's, validly signed by
                         at least ``threshold`` of its pinned keys
``product``              the release is for this device's product
``hardware-revision``    the release lists this device's hardware revision
                         (when both name revisions)
``security-version``     its security_version is not below the installed one
``image-size``           the image has the size the release states
``image-digest``         the image has the SHA-256 the release states
``inclusion``            the entry's leaf hash is in the checkpoint's tree
``stored-checkpoint``    the checkpoint is not older than the one the device
                         stored, nor another tree of the same size (split view)
=======================  ======================================================

Nothing here does I/O except reading the image, in chunks. The
``stored-checkpoint`` step is the offline half of the trusted-checkpoint rule
(:func:`firmlog.client.trust.check_no_fork`); proving a larger checkpoint
consistent with the stored one needs tiles from the log:
:mod:`firmlog.client.online` does that (with a
:class:`~firmlog.client.trust.CheckpointTracker`) before calling this.

One more step needs the log: ``revocation``. :func:`check_revocations`
decides it from the revocation entries a log returned for the release
(:func:`firmlog.client.online.check_not_revoked` asks for them).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import BinaryIO, NoReturn

from firmlog.client.bundle import ProofBundle
from firmlog.client.checkpoint import Checkpoint
from firmlog.client.entries import (
    RELEASE_V1,
    Entry,
    Release,
    Revocation,
    parse_entry,
    verify_entry_signatures,
)
from firmlog.client.errors import (
    EntryFormatError,
    EntryPolicyError,
    FirmlogError,
    FormatError,
    MerkleFormatError,
    ProofError,
    SignatureError,
    SplitViewError,
    StateFormatError,
    UpdateRefused,
)
from firmlog.client.keys import Ed25519Verifier, KeyRing, parse_verifier_key
from firmlog.client.merkle import verify_inclusion
from firmlog.client.note import split_note, verify_note_signatures
from firmlog.client.policy import Policy, VerifiedCheckpoint
from firmlog.client.trust import CheckpointNote, check_no_fork

__all__ = [
    "STEPS",
    "STEP_DESCRIPTIONS",
    "DeviceState",
    "PinnedVendorKeys",
    "UpdateRefused",
    "VerifiedUpdate",
    "check_revocations",
    "verify_update",
]

STEP_DESCRIPTIONS: dict[str, str] = {
    "bundle": "the bundle is a strict tlog-proof with a well-formed checkpoint note",
    "log-signature": "the checkpoint is signed by a log key of the policy",
    "origin": "the checkpoint's origin is the name of the log key that signed it",
    "cosignatures": "witness cosignatures meet the policy quorum and are fresh",
    "entry": "the bundle carries a well-formed firmlog/release/v1 entry",
    "vendor-signatures": "the release is signed by the pinned vendor keys, at threshold",
    "product": "the release is for this device's product",
    "hardware-revision": "the release lists this device's hardware revision",
    "security-version": "the release's security_version is not below the installed one",
    "image-size": "the image has the size the release states",
    "image-digest": "the image has the SHA-256 the release states",
    "inclusion": "the entry is included in the checkpoint's tree",
    "stored-checkpoint": "the checkpoint is not older than, nor a fork of, the stored one",
}
STEPS: tuple[str, ...] = tuple(STEP_DESCRIPTIONS)

_CHUNK_SIZE = 1 << 20

ImageSource = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True, slots=True)
class PinnedVendorKeys:
    """The vendor keys a device pins, and how many of them must sign a release.

    ``vendor`` (optional) is the vendor name releases must carry. The
    constructor checks 1 <= threshold <= number of distinct keys (ValueError)
    and builds :attr:`ring`, the keys as a :class:`~firmlog.client.keys.KeyRing`
    (None if two keys share a name and key ID, which verification refuses).
    """

    keys: tuple[Ed25519Verifier, ...]
    threshold: int = 1
    vendor: str | None = None
    # The keys as a ring, built once; None if they cannot be one (two keys
    # with one name and key ID: verify_entry_signatures says so).
    ring: KeyRing[Ed25519Verifier] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.keys, tuple) or not all(
            isinstance(k, Ed25519Verifier) for k in self.keys
        ):
            raise TypeError("keys must be a tuple of Ed25519Verifier")
        distinct = len({k.public_key for k in self.keys})
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int):
            raise TypeError(f"threshold must be an int, got {type(self.threshold).__name__}")
        if not 1 <= self.threshold <= distinct:
            raise ValueError(
                f"threshold must be 1..{distinct} (the number of distinct vendor keys), "
                f"got {self.threshold}"
            )
        try:
            ring: KeyRing[Ed25519Verifier] | None = KeyRing(self.keys)
        except ValueError:
            ring = None
        object.__setattr__(self, "ring", ring)

    @classmethod
    def parse(
        cls, vkeys: Iterable[str], threshold: int = 1, vendor: str | None = None
    ) -> PinnedVendorKeys:
        """From verifier key strings; KeyFormatError for a malformed one."""
        return cls(tuple(parse_verifier_key(v) for v in vkeys), threshold, vendor)


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What a device knows about itself between updates.

    ``checkpoint`` is the last signed checkpoint note the device verified and
    stored (byte for byte), or None. ``hardware_revision``, when set, must be
    listed by releases that restrict their hardware revisions. The
    constructor checks the fields; a stored checkpoint that is not a
    well-formed checkpoint note is a StateFormatError.
    """

    product: str
    installed_security_version: int = 0
    checkpoint: bytes | None = None
    hardware_revision: str | None = None
    _stored: Checkpoint | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.product, str) or not self.product:
            raise ValueError(f"product must be a non-empty str, got {self.product!r}")
        isv = self.installed_security_version
        if isinstance(isv, bool) or not isinstance(isv, int) or isv < 0:
            raise ValueError(f"installed_security_version must be an int >= 0, got {isv!r}")
        if self.hardware_revision is not None and not isinstance(self.hardware_revision, str):
            raise TypeError("hardware_revision must be a str or None")
        stored = None
        if self.checkpoint is not None:
            if not isinstance(self.checkpoint, bytes):
                raise TypeError(f"checkpoint must be bytes, got {type(self.checkpoint).__name__}")
            try:
                text, _ = split_note(self.checkpoint)
                stored = Checkpoint.parse(text)
            except FormatError as exc:
                raise StateFormatError(
                    f"stored checkpoint is not a checkpoint note: {exc}"
                ) from exc
        object.__setattr__(self, "_stored", stored)

    @property
    def stored_checkpoint(self) -> Checkpoint | None:
        """The parsed stored checkpoint (its signature was checked when it was stored)."""
        return self._stored

    def after_install(self, update: VerifiedUpdate) -> DeviceState:
        """The state once ``update`` is installed: its security version, the newer checkpoint."""
        checkpoint = self.checkpoint
        new = update.checkpoint.signed.checkpoint
        stored = self._stored
        if stored is None or stored.origin != new.origin or new.tree_size >= stored.tree_size:
            checkpoint = update.checkpoint_note
        return DeviceState(
            product=self.product,
            installed_security_version=max(
                self.installed_security_version, update.release.security_version
            ),
            checkpoint=checkpoint,
            hardware_revision=self.hardware_revision,
        )

    def with_checkpoint(self, note: bytes) -> DeviceState:
        """The same state with another stored checkpoint note (verified by the caller)."""
        return DeviceState(
            self.product, self.installed_security_version, note, self.hardware_revision
        )

    def to_json(self) -> bytes:
        """A small JSON document (the checkpoint note as text, byte for byte)."""
        doc: dict[str, object] = {
            "product": self.product,
            "installed_security_version": self.installed_security_version,
        }
        if self.hardware_revision is not None:
            doc["hardware_revision"] = self.hardware_revision
        if self.checkpoint is not None:
            doc["checkpoint"] = self.checkpoint.decode("utf-8")
        return json.dumps(doc, indent=2, sort_keys=True).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> DeviceState:
        """Inverse of :meth:`to_json`; StateFormatError says what is wrong."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise StateFormatError(f"device state is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise StateFormatError(
                f"device state: expected a JSON object, got {type(doc).__name__}"
            )
        known = {"product", "installed_security_version", "hardware_revision", "checkpoint"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise StateFormatError(
                f"device state: unknown fields {unknown} (expected only {sorted(known)})"
            )
        if "product" not in doc:
            raise StateFormatError("device state: required field 'product' is missing")
        product = doc["product"]
        isv = doc.get("installed_security_version", 0)
        revision = doc.get("hardware_revision")
        checkpoint = doc.get("checkpoint")
        if not isinstance(product, str) or not product:
            raise StateFormatError(
                f"device state: product must be a non-empty string, got {product!r}"
            )
        if isinstance(isv, bool) or not isinstance(isv, int) or isv < 0:
            raise StateFormatError(
                f"device state: installed_security_version must be an integer >= 0, got {isv!r}"
            )
        if revision is not None and not isinstance(revision, str):
            raise StateFormatError(
                f"device state: hardware_revision must be a string, got {revision!r}"
            )
        if checkpoint is not None and not isinstance(checkpoint, str):
            raise StateFormatError("device state: checkpoint must be the signed note as a string")
        return cls(
            product=product,
            installed_security_version=isv,
            checkpoint=None if checkpoint is None else checkpoint.encode("utf-8"),
            hardware_revision=revision,
        )


@dataclass(frozen=True, slots=True)
class VerifiedUpdate:
    """What :func:`verify_update` established: install ``release``."""

    release: Release
    entry: Entry  # the signed release entry, as logged
    leaf_index: int
    checkpoint: VerifiedCheckpoint  # signed by the log, cosigned to quorum
    witnesses: tuple[str, ...]  # policy names of the witnesses whose cosignatures counted
    vendor_keys: tuple[str, ...]  # vkeys of the pinned vendor keys that signed

    @property
    def leaf_hash(self) -> bytes:
        return self.entry.leaf_hash

    @property
    def tree_size(self) -> int:
        return self.checkpoint.signed.checkpoint.tree_size

    @property
    def checkpoint_note(self) -> bytes:
        """The signed checkpoint note, byte for byte: what a device stores."""
        return self.checkpoint.signed.raw


def _refuse(step: str, detail: str, cause: BaseException | None = None) -> NoReturn:
    raise UpdateRefused(step, detail) from cause


def verify_update(
    image: ImageSource,
    bundle: bytes,
    policy: Policy,
    vendor_keys: PinnedVendorKeys,
    device: DeviceState,
    *,
    now: int | None = None,
    max_cosignature_age: int | None = None,
) -> VerifiedUpdate:
    """Decide offline whether ``device`` may install ``image``; see the module docstring.

    ``image`` is the image itself (bytes), a path, or a binary file object
    read from its current position; it is hashed in chunks. ``now`` (Unix
    seconds, default: the clock) dates cosignatures; with
    ``max_cosignature_age`` older ones do not count.

    Raises :class:`UpdateRefused` (``.step`` is one of :data:`STEPS`,
    ``__cause__`` the underlying error) when the image must not be installed.
    OSError if the image cannot be read; TypeError for arguments of the wrong type.
    """
    if not isinstance(bundle, bytes):
        raise TypeError(f"bundle must be bytes, got {type(bundle).__name__}")
    if now is None:
        now = int(time.time())

    # bundle: a strict tlog-proof (the checkpoint note inside, split while
    # parsing the bundle, is parsed by the policy first thing, and diagnosed
    # below if it fails).
    try:
        parsed, text, signatures = ProofBundle.parse_split(bundle)
    except FormatError as exc:
        _refuse("bundle", f"not a strict c2sp.org/tlog-proof@v1 bundle: {exc}", exc)

    # log-signature, origin, cosignatures: one pass over the signatures when
    # all is well; on failure, find which step failed first.
    try:
        verified = policy.verify_checkpoint(
            parsed.checkpoint, now=now, max_age=max_cosignature_age, split=(text, signatures)
        )
    except FirmlogError as exc:
        _diagnose_checkpoint(policy, parsed.checkpoint, exc)
    checkpoint = verified.signed.checkpoint

    # entry
    if parsed.extra is None:
        _refuse(
            "entry",
            "the bundle carries no entry: expected the signed firmlog/release/v1 note in 'extra'",
        )
    try:
        entry = parse_entry(parsed.extra)
    except EntryFormatError as exc:
        _refuse("entry", f"the bundle's entry is not a well-formed firmlog entry: {exc}", exc)
    release = entry.body
    if not isinstance(release, Release):
        _refuse("entry", f"expected a {RELEASE_V1} entry, got {entry.type}")

    # vendor-signatures
    if vendor_keys.vendor is not None and release.vendor != vendor_keys.vendor:
        _refuse(
            "vendor-signatures",
            f"release is by vendor {release.vendor!r}, expected {vendor_keys.vendor!r} "
            "(the vendor whose keys are pinned)",
        )
    try:
        keys = vendor_keys.keys if vendor_keys.ring is None else vendor_keys.ring
        signed_by = verify_entry_signatures(entry, keys, vendor_keys.threshold)
    except (SignatureError, EntryPolicyError) as exc:
        pinned = ", ".join(k.vkey for k in vendor_keys.keys)
        _refuse("vendor-signatures", f"{exc} (pinned: {pinned})", exc)

    # product, hardware-revision, security-version
    if release.product != device.product:
        _refuse(
            "product",
            f"release is for product {release.product!r}, expected {device.product!r} "
            "(this device)",
        )
    revision = device.hardware_revision
    revisions = release.hardware_revisions
    if revision is not None and revisions and revision not in revisions:
        _refuse(
            "hardware-revision",
            f"release is for hardware revisions {list(revisions)}, "
            f"expected one of them to be {revision!r} (this device)",
        )
    if release.security_version < device.installed_security_version:
        _refuse(
            "security-version",
            f"release has security_version {release.security_version}, expected at least "
            f"{device.installed_security_version} (the installed one): a rollback",
        )

    # image-size, image-digest
    want_size = release.image.size
    digest, read, total = _measure_image(image, want_size)
    if read != want_size:
        found = f"more than {want_size}" if total is None else str(total)
        _refuse(
            "image-size",
            f"image is {found} bytes, expected {want_size} (the release's image.size)",
        )
    if digest != release.image.sha256:
        _refuse(
            "image-digest",
            f"image has SHA-256 {digest}, expected {release.image.sha256} "
            "(the release's image.sha256)",
        )

    # inclusion
    try:
        verify_inclusion(
            entry.leaf_hash, parsed.index, checkpoint.tree_size, parsed.proof, checkpoint.root_hash
        )
    except (ProofError, MerkleFormatError) as exc:
        _refuse(
            "inclusion",
            f"the entry (leaf hash {entry.leaf_hash.hex()}) is not proven included at index "
            f"{parsed.index} of {checkpoint.origin!r} at tree size {checkpoint.tree_size}: {exc}",
            exc,
        )

    # stored-checkpoint
    stored = device.stored_checkpoint
    if device.checkpoint is not None and stored is not None and stored.origin == checkpoint.origin:
        if checkpoint.tree_size < stored.tree_size:
            _refuse(
                "stored-checkpoint",
                f"checkpoint of {checkpoint.origin!r} has tree size {checkpoint.tree_size}, "
                f"expected at least {stored.tree_size} (the checkpoint this device stored)",
            )
        try:
            check_no_fork(
                CheckpointNote(device.checkpoint, stored),
                CheckpointNote(parsed.checkpoint, checkpoint),
            )
        except SplitViewError as exc:
            _refuse(
                "stored-checkpoint",
                f"{exc} (the first stored by this device, the second the bundle's)",
                exc,
            )

    return VerifiedUpdate(
        release=release,
        entry=entry,
        leaf_index=parsed.index,
        checkpoint=verified,
        witnesses=verified.witnesses,
        vendor_keys=signed_by,
    )


def check_revocations(
    identity: bytes,
    vendor_keys: PinnedVendorKeys,
    revocations: Iterable[tuple[int, bytes]],
    *,
    on_ignored: Callable[[int, FirmlogError], None] | None = None,
) -> None:
    """Refuse the release whose identity is ``identity`` if its vendor revoked it.

    ``revocations`` are the entries a log returned for the release, as
    ``(log index, signed entry)``. One counts when it is a well-formed
    ``firmlog/revocation/v1`` that names this release by its identity
    (:attr:`~firmlog.client.entries.Entry.identity`, the SHA-256 of the
    release's signed text), is by the pinned vendor (when
    ``vendor_keys.vendor`` is set) and is signed by the pinned keys at their
    threshold: a log cannot revoke a release on its own. The first that counts
    raises UpdateRefused (step ``revocation``) naming its log index, reason
    and advisory. Each one before it that does not count is skipped and
    passed to ``on_ignored(index, why)``, for the caller to log.

    ValueError if ``identity`` is not 32 bytes.
    """
    if len(identity) != 32:
        raise ValueError(f"a release identity is 32 bytes (SHA-256), got {len(identity)}")
    release = identity.hex()
    for index, raw in revocations:
        try:
            entry = parse_entry(raw)
            body = entry.body
            if not isinstance(body, Revocation) or body.release_id != release:
                raise EntryFormatError(f"entry {index} is not a revocation of release {release}")
            if vendor_keys.vendor is not None and body.vendor != vendor_keys.vendor:
                raise EntryPolicyError(f"revocation by {body.vendor}, not {vendor_keys.vendor}")
            verify_entry_signatures(entry, vendor_keys.keys, vendor_keys.threshold)
        except FirmlogError as exc:
            if on_ignored is not None:
                on_ignored(index, exc)
            continue
        advisory = f"; advisory: {body.advisory}" if body.advisory else ""
        _refuse(
            "revocation",
            f"the vendor revoked this release at log index {index}: {body.reason}{advisory}",
        )


def _diagnose_checkpoint(policy: Policy, note: bytes, error: FirmlogError) -> NoReturn:
    """Policy.verify_checkpoint failed: name the first step that fails."""
    try:
        text, signatures = split_note(note)
        checkpoint = Checkpoint.parse(text)
    except FormatError as exc:
        _refuse("bundle", f"the bundle's checkpoint is not a tlog-checkpoint note: {exc}", exc)
    logs = [log.verifier for log in policy.logs]
    try:
        opened = verify_note_signatures(text, signatures, logs)
    except SignatureError as exc:
        _refuse("log-signature", f"checkpoint is not signed by a policy log: {exc}", exc)
    names = sorted({sig.name for sig in opened.verified})
    if checkpoint.origin not in names:
        _refuse(
            "origin",
            f"checkpoint origin is {checkpoint.origin!r}, expected {' or '.join(map(repr, names))} "
            "(the name of the log key that signed it)",
            error,
        )
    _refuse("cosignatures", str(error), error)


def _measure_image(image: ImageSource, limit: int) -> tuple[str, int, int | None]:
    """SHA-256 (hex) of the first ``limit + 1`` bytes of the image, how many those
    were, and the image's whole size if known (None: larger than ``limit``,
    size unknown)."""
    if type(image) is bytes and len(image) <= limit:  # all of it, as below
        return hashlib.sha256(image).hexdigest(), len(image), len(image)
    hasher = hashlib.sha256()
    if isinstance(image, bytes | bytearray | memoryview):
        view = memoryview(image)
        hasher.update(view[: limit + 1])
        return hasher.hexdigest(), min(len(view), limit + 1), len(view)
    if isinstance(image, str | os.PathLike):
        with open(image, "rb") as f:
            digest, read, total = _measure_stream(f, hasher, limit)
            return digest, read, os.fstat(f.fileno()).st_size if total is None else total
    if hasattr(image, "read"):
        return _measure_stream(image, hasher, limit)
    raise TypeError(f"image must be bytes, a path or a binary file, got {type(image).__name__}")


def _measure_stream(f: BinaryIO, hasher: hashlib._Hash, limit: int) -> tuple[str, int, int | None]:
    total = 0
    while total <= limit:
        chunk = f.read(min(_CHUNK_SIZE, limit + 1 - total))
        if not chunk:
            return hasher.hexdigest(), total, total
        if not isinstance(chunk, bytes):
            raise TypeError(
                f"image file must be opened in binary mode, read {type(chunk).__name__}"
            )
        hasher.update(chunk)
        total += len(chunk)
    return hasher.hexdigest(), total, None
