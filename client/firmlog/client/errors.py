"""The one error hierarchy of firmlog.

Every error says what was expected and what was found. Two roots for remote
data, as in python-tuf: data that is malformed or fails verification
(:class:`FormatError`, :class:`VerificationError`) versus failing to get the
data at all (:class:`TransportError`). Caller misuse (a negative tree size
passed to a prover, a key of the wrong type) raises the builtin ``ValueError``
or ``TypeError`` instead.

::

    FirmlogError
    ├── FormatError                  input is not well-formed; reject it, keep nothing
    │   ├── MerkleFormatError        a hash or proof element of the wrong shape
    │   ├── TilePathError            not a tlog-tiles path, or a non-canonical one
    │   ├── KeyFormatError           not a signer or verifier key (c2sp.org/signed-note)
    │   ├── NoteFormatError          not a signed note
    │   ├── CheckpointFormatError    not a strict c2sp.org/tlog-checkpoint
    │   ├── BundleFormatError        not a strict c2sp.org/tlog-proof@v1
    │   ├── PolicyFormatError        not a valid c2sp.org/tlog-policy
    │   ├── EntryFormatError         not a firmlog entry (type line, canonical JSON, fields)
    │   │   └── SignatureLineError   a signature line the rule does not call for (unknown
    │   │                            key, or a key that signed twice)
    │   ├── StateFormatError         not a device state file (firmlog.client.verify.DeviceState)
    │   └── EvidenceFormatError      not split-view evidence (firmlog.client.evidence)
    ├── VerificationError            well-formed, but the cryptography says no
    │   ├── SignatureError           a note lacks a valid signature from a trusted key
    │   ├── ProofError               an inclusion or consistency proof does not verify
    │   │   ├── InclusionProofError
    │   │   ├── ConsistencyProofError
    │   │   └── TileMismatchError    a log's tiles do not hash up to the level above or the root
    │   ├── QuorumError              too few valid witness cosignatures for the policy
    │   ├── EntryPolicyError         an entry breaks a rule (threshold, product, rollback, digest)
    │   ├── SplitViewError           two signed checkpoints of one log that no consistency
    │   │                            proof connects; carries both notes as evidence
    │   └── UpdateRefused            a device refuses an update; ``.step`` names the check
    └── TransportError               the remote could not be reached or answered badly;
        │                            retrying later may help
        └── HTTPStatusError          the remote answered with an HTTP error status and message

:class:`FormatError` subclasses ``ValueError`` so that generic code that
catches bad input keeps working.
"""

from __future__ import annotations

__all__ = [
    "BundleFormatError",
    "CheckpointFormatError",
    "ConsistencyProofError",
    "EntryFormatError",
    "EntryPolicyError",
    "EvidenceFormatError",
    "FirmlogError",
    "FormatError",
    "HTTPStatusError",
    "InclusionProofError",
    "KeyFormatError",
    "MerkleFormatError",
    "NoteFormatError",
    "PolicyFormatError",
    "ProofError",
    "QuorumError",
    "SignatureError",
    "SignatureLineError",
    "SplitViewError",
    "StateFormatError",
    "TileMismatchError",
    "TilePathError",
    "TransportError",
    "UpdateRefused",
    "VerificationError",
]


class FirmlogError(Exception):
    """Root of every error firmlog raises on purpose."""


class FormatError(FirmlogError, ValueError):
    """The input is not well-formed. The caller should reject it and store nothing."""


class MerkleFormatError(FormatError):
    """A hash or proof element has the wrong length or shape."""


class TilePathError(FormatError):
    """A path is not a canonical tlog-tiles path."""


class KeyFormatError(FormatError):
    """A signer or verifier key string is malformed."""


class NoteFormatError(FormatError):
    """Bytes are not a well-formed signed note."""


class CheckpointFormatError(FormatError):
    """A note text is not a strict tlog-checkpoint body."""


class BundleFormatError(FormatError):
    """Text is not a strict c2sp.org/tlog-proof@v1 bundle."""


class PolicyFormatError(FormatError):
    """Text is not a valid tlog-policy."""


class EntryFormatError(FormatError):
    """A firmlog entry has the wrong type line, non-canonical JSON or invalid fields."""


class SignatureLineError(EntryFormatError):
    """An entry carries a signature line that its signing rule does not call for:
    by a key that is not one of the required keys, or by one of them twice.

    The log refuses such a submission (400): an entry's signature lines are
    exactly the required keys' signatures, so nobody can make a logged entry
    look new by adding or repeating lines. Re-sign it with the required keys only.
    """


class EvidenceFormatError(FormatError):
    """Not split-view evidence as a monitor serves it (firmlog.client.evidence)."""


class StateFormatError(FormatError):
    """A device state file is not well-formed. Repair or recreate it; never guess."""


class VerificationError(FirmlogError):
    """Well-formed data failed a cryptographic or policy check. Refuse it."""


class SignatureError(VerificationError):
    """A note has no valid signature by a trusted key, or a known key's signature is bad."""


class ProofError(VerificationError):
    """A Merkle proof does not verify."""


class InclusionProofError(ProofError):
    """An inclusion proof does not lead to the expected root."""


class ConsistencyProofError(ProofError):
    """A consistency proof does not connect the two roots."""


class TileMismatchError(ProofError):
    """A log's tiles are not one Merkle tree: a tile does not match its entries or
    the tiles below it, or the tiles do not produce the signed checkpoint's root.

    Keep nothing of them; the log (or a cache in front of it) serves bad data.
    """


class QuorumError(VerificationError):
    """The witness cosignatures on a checkpoint do not satisfy the policy's quorum."""


class EntryPolicyError(VerificationError):
    """An entry breaks a firmlog rule: signing threshold, product, rollback, image digest."""


class SplitViewError(VerificationError):
    """Two checkpoints signed by one log that cannot both be true: a split view.

    Same tree size with different roots, or no consistency proof (built from
    the log's own tiles) connects them. ``old_note`` and ``new_note`` are the
    two signed notes byte for byte and ``proof`` the consistency proof tried
    (empty when the sizes are equal). Keep them as evidence, report them (a
    monitor's gossip, the vendor), and stop trusting the log. Raised by the
    trusted-checkpoint rule in :mod:`firmlog.client.trust`.
    """

    def __init__(
        self, message: str, old_note: bytes, new_note: bytes, proof: tuple[bytes, ...] = ()
    ) -> None:
        super().__init__(message)
        self.old_note = old_note
        self.new_note = new_note
        self.proof = proof

    def __reduce__(
        self,
    ) -> tuple[type[SplitViewError], tuple[str, bytes, bytes, tuple[bytes, ...]]]:
        return (type(self), (str(self), self.old_note, self.new_note, self.proof))


class UpdateRefused(VerificationError):
    """A device must not install this image. ``step`` names the check that failed.

    The steps are listed, in the order they run, in
    :data:`firmlog.client.verify.STEPS`. The underlying error, if any, is
    chained as ``__cause__`` (a :class:`SplitViewError` there carries evidence).
    """

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"update refused at step {step!r}: {detail}")
        self.step = step
        self.detail = detail

    def __reduce__(self) -> tuple[type[UpdateRefused], tuple[str, str]]:
        return (type(self), (self.step, self.detail))


class TransportError(FirmlogError):
    """The remote could not be reached, or answered with something other than data.

    Nothing was learned about the data itself; retrying later may help.
    """


class HTTPStatusError(TransportError):
    """The remote answered with an HTTP error status.

    ``status`` is the HTTP status, ``message`` what the server said was wrong
    (the ``error`` member of a firmlog JSON error body, else the start of the
    body). A 4xx means the request itself was refused: retrying the same
    request will not help; a 503 may carry ``retry_after`` seconds.
    """

    def __init__(
        self, url: str, status: int, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{url}: HTTP {status}: {message}")
        self.url = url
        self.status = status
        self.message = message
        self.retry_after = retry_after

    def __reduce__(
        self,
    ) -> tuple[type[HTTPStatusError], tuple[str, int, str, float | None]]:
        return (type(self), (self.url, self.status, self.message, self.retry_after))
