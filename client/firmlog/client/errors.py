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
    │   └── EntryFormatError         not a firmlog entry (type line, canonical JSON, fields)
    ├── VerificationError            well-formed, but the cryptography says no
    │   ├── SignatureError           a note lacks a valid signature from a trusted key
    │   ├── ProofError               an inclusion or consistency proof does not verify
    │   │   ├── InclusionProofError
    │   │   └── ConsistencyProofError
    │   ├── QuorumError              too few valid witness cosignatures for the policy
    │   └── EntryPolicyError         an entry breaks a rule (threshold, product, rollback, digest)
    └── TransportError               the remote could not be reached or answered badly;
                                     retrying later may help

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
    "FirmlogError",
    "FormatError",
    "InclusionProofError",
    "KeyFormatError",
    "MerkleFormatError",
    "NoteFormatError",
    "PolicyFormatError",
    "ProofError",
    "QuorumError",
    "SignatureError",
    "TilePathError",
    "TransportError",
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


class QuorumError(VerificationError):
    """The witness cosignatures on a checkpoint do not satisfy the policy's quorum."""


class EntryPolicyError(VerificationError):
    """An entry breaks a firmlog rule: signing threshold, product, rollback, image digest."""


class TransportError(FirmlogError):
    """The remote could not be reached, or answered with something other than data.

    Nothing was learned about the data itself; retrying later may help.
    """
