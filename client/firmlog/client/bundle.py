"""c2sp.org/tlog-proof@v1 bundles (``.tlog-proof`` files).

::

    c2sp.org/tlog-proof@v1
    extra <base64>            (optional; in firmlog: the entry itself)
    index <decimal>
    <base64 proof hash>       (zero or more, leaf's sibling first)
    <empty line>
    <signed checkpoint note, verbatim>

``extra`` is unauthenticated until its leaf hash is proven included.

Parsing is strict, so that one bundle has one encoding and :meth:`ProofBundle.format`
gives back the parsed bytes exactly: UTF-8 text, lines ending in ``\\n`` (no
CR anywhere), standard base64 with padding and zero pad bits, ``extra`` not
empty, ``index`` in decimal without leading zeros below 2**64, at most 63
proof hashes of 32 bytes each, and a well-formed signed note after the empty
line (not starting with another empty line). Whether the checkpoint is
signed by the right log, and whether the proof leads to its root, is for the
verifier.
"""

from __future__ import annotations

import binascii
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from firmlog.client.encoding import b64decode_canonical
from firmlog.client.errors import BundleFormatError, NoteFormatError
from firmlog.client.merkle import HASH_SIZE
from firmlog.client.note import Signature, split_note

__all__ = ["DEFAULT_MAX_BUNDLE_SIZE", "HEADER", "MAX_PROOF_HASHES", "ProofBundle", "format_bundles"]

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 63
DEFAULT_MAX_BUNDLE_SIZE = 1 << 20

_MAX_INDEX = 2**64 - 1
_INDEX = re.compile(rb"index (0|[1-9][0-9]{0,19})")
# The lines before the proof hashes, in the one form the strict parser accepts
# (the fast path of ProofBundle.parse; the extra line's base64 is checked apart).
_HEAD = re.compile(rb"c2sp\.org/tlog-proof@v1\n(?:extra ([^\n]+)\n)?index (0|[1-9][0-9]{0,19})\n")
_HEADER_LINE = HEADER.encode()
_HASH_LINE = 45  # 43 base64 characters, "=" and a newline
_UNPACKERS: dict[int, struct.Struct] = {}  # number of hashes -> "32sx" repeated


def _b64(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False)


def _proof_hashes(block: bytes) -> tuple[bytes, ...] | None:
    """The hashes of a block of proof lines, each the canonical base64 of 32
    bytes and a newline; None if any line is not.

    Canonical base64 of 32 bytes is 43 characters and "=", the last character
    carrying 2 zero pad bits. With every "=\n" replaced by "A" (6 zero bits),
    the block decodes in one call to 33 bytes per line: the hash and a zero
    byte exactly when the pad bits were zero. Strict decoding refuses any other
    newline (not base64) or "=" (padding followed by more data).
    """
    n, rest = divmod(len(block), _HASH_LINE)
    if rest or block[_HASH_LINE - 1 :: _HASH_LINE] != b"\n" * n:
        return None
    if block[_HASH_LINE - 2 :: _HASH_LINE] != b"=" * n:
        return None
    try:
        raw = binascii.a2b_base64(block.replace(b"=\n", b"A"), strict_mode=True)
    except binascii.Error:
        return None
    if raw[32::33] != bytes(n):
        return None
    unpack = _UNPACKERS.get(n)
    if unpack is None:
        unpack = _UNPACKERS[n] = struct.Struct("32sx" * n)
    return unpack.unpack(raw)


def _show(line: bytes) -> str:
    """A line for an error message."""
    text = line[:60].decode("utf-8", "backslashreplace")
    return repr(text) + ("..." if len(line) > 60 else "")


@dataclass(frozen=True, slots=True)
class ProofBundle:
    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes  # the signed checkpoint note, byte for byte
    extra: bytes | None = None

    def format(self) -> bytes:
        """The ``.tlog-proof`` bytes. ValueError if a field could not be parsed back."""
        return format_bundles(self.checkpoint, [(self.index, self.proof, self.extra)])[0]

    @classmethod
    def parse(cls, data: bytes, max_size: int = DEFAULT_MAX_BUNDLE_SIZE) -> ProofBundle:
        """Strict parse; BundleFormatError names the line that is wrong.

        The checkpoint part is checked to be a well-formed signed note
        (split_note), not verified: that needs the policy.
        """
        return cls.parse_split(data, max_size)[0]

    @classmethod
    def parse_split(
        cls, data: bytes, max_size: int = DEFAULT_MAX_BUNDLE_SIZE
    ) -> tuple[ProofBundle, str, list[Signature]]:
        """:meth:`parse`, also returning the checkpoint note as
        :func:`~firmlog.client.note.split_note` splits it (its text and
        signature lines), so that a verifier need not split it again."""
        if not isinstance(data, bytes):
            raise TypeError(f"ProofBundle.parse takes bytes, not {type(data).__name__}")
        if len(data) > max_size:
            raise BundleFormatError(f"bundle is {len(data)} bytes: the limit is {max_size}")
        parsed = _parse_fast(data)
        return cls._parse_strict(data) if parsed is None else parsed

    @classmethod
    def _parse_strict(cls, data: bytes) -> tuple[ProofBundle, str, list[Signature]]:
        """The reference parser of :meth:`parse`: line by line, every error named."""
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line_no = data.count(b"\n", 0, exc.start) + 1
            raise BundleFormatError(
                f"line {line_no}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
            ) from None
        cr = data.find(b"\r")
        if cr >= 0:
            line_no = data.count(b"\n", 0, cr) + 1
            raise BundleFormatError(f"line {line_no}: carriage return (lines end in \\n alone)")

        pos = 0
        number = 0

        def next_line(expected: str) -> bytes:
            nonlocal pos, number
            number += 1
            end = data.find(b"\n", pos)
            if end < 0:
                if pos == len(data):
                    raise BundleFormatError(f"line {number}: expected {expected}, got end of file")
                raise BundleFormatError(
                    f"line {number}: expected {expected} ending in a newline, got "
                    f"{_show(data[pos:])} at the end of the file"
                )
            line = data[pos:end]
            pos = end + 1
            return line

        line = next_line(f"the header {HEADER!r}")
        if line != HEADER.encode():
            raise BundleFormatError(f"line 1: expected the header {HEADER!r}, got {_show(line)}")

        extra = None
        line = next_line("'extra <base64>' or 'index <decimal>'")
        if line.startswith(b"extra"):
            if not line.startswith(b"extra "):
                raise BundleFormatError(
                    f"line {number}: expected 'extra <base64>', got {_show(line)}"
                )
            extra = b64decode_canonical(line[6:])
            if extra is None:
                raise BundleFormatError(
                    f"line {number}: extra: expected standard padded base64, got {_show(line[6:])}"
                )
            if not extra:
                raise BundleFormatError(f"line {number}: extra: expected the entry, got nothing")
            line = next_line("'index <decimal>'")

        m = _INDEX.fullmatch(line)
        if m is None or int(m.group(1)) > _MAX_INDEX:
            raise BundleFormatError(
                f"line {number}: expected 'index <decimal>' (no leading zeros, at most "
                f"{_MAX_INDEX}), got {_show(line)}"
            )
        index = int(m.group(1))

        proof: list[bytes] = []
        while True:
            line = next_line("a base64 proof hash or the empty line before the checkpoint")
            if not line:
                break
            if len(proof) == MAX_PROOF_HASHES:
                raise BundleFormatError(
                    f"line {number}: expected the empty line before the checkpoint (at most "
                    f"{MAX_PROOF_HASHES} proof hashes), got {_show(line)}"
                )
            h = b64decode_canonical(line)
            if h is None or len(h) != HASH_SIZE:
                found = f"{len(h)} bytes" if h is not None else "not canonical base64"
                raise BundleFormatError(
                    f"line {number}: expected a proof hash ({HASH_SIZE} bytes in standard "
                    f"padded base64, or the empty line before the checkpoint), got "
                    f"{_show(line)} ({found})"
                )
            proof.append(h)

        checkpoint = data[pos:]
        number += 1
        if not checkpoint:
            raise BundleFormatError(f"line {number}: expected the checkpoint, got end of file")
        if checkpoint.startswith(b"\n"):
            raise BundleFormatError(
                f"line {number}: expected the checkpoint's first line, got an empty line"
            )
        try:
            text, signatures = split_note(checkpoint, max_size=len(checkpoint))
        except NoteFormatError as exc:
            raise BundleFormatError(
                f"line {number}: the checkpoint from here on is not a signed note: {exc}"
            ) from exc
        bundle = cls(index=index, proof=tuple(proof), checkpoint=checkpoint, extra=extra)
        return bundle, text, signatures


def _check_fields(index: int, proof: Sequence[bytes], extra: bytes | None) -> None:
    if isinstance(index, bool) or not 0 <= index <= _MAX_INDEX:
        raise ValueError(f"index: expected an integer 0..2**64-1, got {index!r}")
    if len(proof) > MAX_PROOF_HASHES:
        raise ValueError(f"proof: expected at most {MAX_PROOF_HASHES} hashes, got {len(proof)}")
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise ValueError(f"proof[{i}]: expected {HASH_SIZE} bytes, got {len(h)}")
    if extra is not None and not extra:
        raise ValueError("extra: expected None or non-empty bytes, got b''")


def _check_checkpoint(checkpoint: bytes) -> None:
    if not checkpoint:
        raise ValueError("checkpoint: expected a signed note, got b''")
    if checkpoint.startswith(b"\n"):
        raise ValueError("checkpoint: expected a signed note, got an empty first line")
    if b"\r" in checkpoint:
        raise ValueError("checkpoint: expected no carriage returns")
    try:
        split_note(checkpoint, max_size=len(checkpoint))
    except NoteFormatError as exc:
        raise ValueError(f"checkpoint: not a signed note: {exc}") from exc


def format_bundles(
    checkpoint: bytes, items: Iterable[tuple[int, Sequence[bytes], bytes | None]]
) -> list[bytes]:
    """``ProofBundle(index, tuple(proof), checkpoint, extra).format()`` of each
    ``(index, proof, extra)``, byte for byte and with the same errors, for many
    bundles against one checkpoint: the checkpoint is checked once, and each
    proof hash that several bundles share (the upper levels of a batch's
    proofs) is encoded once.

    ValueError if a field could not be parsed back, as :meth:`ProofBundle.format`
    says; the fields of the first item are checked before the checkpoint.
    """
    tail = b"\n\n" + checkpoint
    lines: dict[bytes, bytes] = {}  # proof hash -> its base64 line with the newline before it
    out: list[bytes] = []
    for index, proof, extra in items:
        _check_fields(index, proof, extra)
        if not out:
            _check_checkpoint(checkpoint)
        parts = [_HEADER_LINE]
        if extra is not None:
            parts.append(b"\nextra " + _b64(extra))
        parts.append(b"\nindex %d" % index)
        for h in proof:
            line = lines.get(h) if type(h) is bytes else None
            if line is None:
                line = b"\n" + _b64(h)
                if type(h) is bytes:  # (a bytearray is not hashable)
                    lines[h] = line
            parts.append(line)
        parts.append(tail)
        out.append(b"".join(parts))
    return out


def _parse_fast(data: bytes) -> tuple[ProofBundle, str, list[Signature]] | None:
    """The common well-formed case in a few C calls; None for anything the
    strict parser should look at (it then accepts nothing more and explains).

    Everything before the checkpoint is ASCII by construction, so the UTF-8
    and carriage-return checks come down to split_note's of the checkpoint.
    """
    head = _HEAD.match(data)
    if head is None:
        return None
    extra_text, index_text = head.groups()
    extra = None
    if extra_text is not None:
        extra = b64decode_canonical(extra_text)
        if not extra:
            return None
    index = int(index_text)
    if index > _MAX_INDEX:
        return None
    start = head.end()
    end = data.find(b"\n\n", start - 1) + 1  # the empty line ends the proof
    if end <= 0 or (end - start) // _HASH_LINE > MAX_PROOF_HASHES:
        return None
    proof = _proof_hashes(data[start:end])
    checkpoint = data[end + 1 :]
    if proof is None or not checkpoint or checkpoint.startswith(b"\n"):
        return None
    try:
        text, signatures = split_note(checkpoint, max_size=len(checkpoint))
    except NoteFormatError:
        return None
    return ProofBundle(index, proof, checkpoint, extra), text, signatures
