"""c2sp.org/tlog-proof@v1 bundles (``.tlog-proof`` files).

::

    c2sp.org/tlog-proof@v1
    extra <base64>            (optional; in firmlog: the entry itself)
    index <decimal>
    <base64 proof hash>       (zero or more, leaf's sibling first)
    <empty line>
    <signed checkpoint note, verbatim>

``extra`` is unauthenticated until its leaf hash is proven included.
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 63
DEFAULT_MAX_BUNDLE_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class ProofBundle:
    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes  # the signed checkpoint note, byte for byte
    extra: bytes | None = None

    def format(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def parse(cls, data: bytes, max_size: int = DEFAULT_MAX_BUNDLE_SIZE) -> ProofBundle:
        """Strict parse; BundleFormatError names the line that is wrong.

        The checkpoint part is checked to be a well-formed signed note
        (split_note), not verified: that needs the policy.
        """
        raise NotImplementedError
