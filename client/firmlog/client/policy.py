"""c2sp.org/tlog-policy: which logs and witnesses to trust, and the quorum.

::

    log <vkey> [url]
    witness <name> <vkey> [url]
    group <name> all|any|<k> <member>...
    quorum <name>|none
"""

from __future__ import annotations

from dataclasses import dataclass

from firmlog.client.checkpoint import SignedCheckpoint
from firmlog.client.cosignature import CosignatureVerifier
from firmlog.client.note import Ed25519Verifier

DEFAULT_MAX_FUTURE_SKEW = 300  # seconds a cosignature may be dated ahead of the verifier's clock


@dataclass(frozen=True, slots=True)
class PolicyLog:
    verifier: Ed25519Verifier
    url: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyWitness:
    name: str
    verifier: CosignatureVerifier
    url: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyGroup:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VerifiedCheckpoint:
    """A checkpoint signed by a policy log and cosigned to quorum."""

    signed: SignedCheckpoint
    witnesses: tuple[str, ...]  # names of witnesses with valid cosignatures
    timestamps: dict[str, int]  # witness name -> cosignature time


@dataclass(frozen=True, slots=True)
class Policy:
    logs: tuple[PolicyLog, ...]
    witnesses: tuple[PolicyWitness, ...]
    groups: tuple[PolicyGroup, ...]
    quorum: str  # a witness name, a group name, or "none"

    def to_text(self) -> str:
        raise NotImplementedError

    def satisfied_by(self, witnesses: set[str]) -> bool:
        """Whether a set of witness names that cosigned meets the quorum."""
        raise NotImplementedError

    def verify_checkpoint(
        self,
        data: bytes,
        *,
        now: int | None = None,
        max_age: int | None = None,
        max_future_skew: int = DEFAULT_MAX_FUTURE_SKEW,
    ) -> VerifiedCheckpoint:
        """Open a checkpoint note signed by one of the policy's logs, then check the quorum.

        Cosignatures dated more than ``max_future_skew`` seconds after ``now``
        or (if ``max_age`` is set) older than ``now - max_age`` do not count.
        Raises SignatureError (no policy log signed it), QuorumError (which
        witnesses signed, which were required), Note/CheckpointFormatError.
        """
        raise NotImplementedError


def parse_policy(text: str | bytes) -> Policy:
    """Strict parse per the spec. PolicyFormatError names the line and the problem."""
    raise NotImplementedError
