"""firmlog entries (DESIGN.md section 3): signed notes whose first line names the type.

::

    firmlog/release/v1
    {"build":{...},"changelog":"...",...}      <- one line of RFC 8785 canonical JSON
    <blank line>
    — acme.example/release <base64 signature>
    — acme.example/security <base64 signature>

The type line makes a signature over one kind of entry impossible to read as
another. An entry's identity is its signed text: :attr:`Entry.identity` is the
SHA-256 of the text before the signature lines. The Merkle leaf is the whole
note, signatures included, but two notes with one text are one entry: the log
answers the second with the first's index, and revocations name a release by
its identity, so adding, dropping or repeating signature lines never makes a
logged entry new.

The JSON member names are the dataclass field names; nested objects are
``image`` and ``build``. Every field is required except ``sbom_sha256`` and
the pair ``build.source_uri``/``build.source_commit``, which are omitted
(never ``null``) when there is no SBOM or no published source, so each body
has exactly one encoding. Validation is the same for what a client writes
(:func:`entry_text`) and what the log reads (:func:`parse_entry`): a client
can never produce an entry the log rejects as malformed.

Field rules (limits are the module constants):

- ``vendor``: a lowercase DNS-like name (``acme.example``): labels of
  ``a-z 0-9`` with ``-`` inside, 1..63 characters each, joined by dots, at
  most 253 characters;
- ``product``, ``version``, ``channel``, each hardware revision: 1..128
  printable characters (``str.isprintable``: no control, format, line
  separator or private-use characters), no leading or trailing whitespace;
- ``hardware_revisions``: 0..64 distinct names in the vendor's order (empty:
  not restricted to particular revisions);
- ``security_version``: an integer 0..2**53-1 (JSON booleans are not integers);
- ``image.sha256``, ``sbom_sha256``, ``release_id``: 64 lowercase hex digits;
  ``image.size``: 1..2**53-1 bytes;
- ``build.time``: RFC 3339 UTC, ``YYYY-MM-DDTHH:MM:SSZ``, a real date and
  time (no leap second); ``build.source_uri``: an absolute RFC 3986 URI (a
  scheme, ASCII only) of at most 2048 characters; ``build.source_commit``:
  1..256 printable characters without spaces; ``build.builder``: 1..256
  printable characters; ``build.reproducible``: a boolean;
- ``fixes``: 0..512 distinct CVE ids ``CVE-YYYY-NNNN...``, in the vendor's order;
- ``changelog``: at most 8192 bytes of UTF-8 text (tab and newline allowed; no
  other control characters, no bidirectional overrides);
- ``reason``: 1..1024 bytes of such text; ``advisory``: 0..2048 printable
  characters (typically a URL or an advisory id);
- ``keys``: 1..16 Ed25519 verifier keys in canonical form, no public key
  twice and no two keys with one name and key ID (signature lines name keys
  so); ``threshold``: 1..len(keys);
- ``serial`` (key sets): the serial of the key set the rotation creates,
  2..2**53-1; the admission's set is serial 1 and each rotation must carry
  exactly one more than the current set's (:mod:`firmlog.client.ledger`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from firmlog.client import merkle
from firmlog.client.canonjson import MAX_SAFE_INTEGER, canonical_json, parse_canonical_json
from firmlog.client.errors import (
    EntryFormatError,
    EntryPolicyError,
    KeyFormatError,
    NoteFormatError,
    SignatureError,
    SignatureLineError,
)
from firmlog.client.keys import Ed25519Verifier, KeyRing, Signer, parse_verifier_key
from firmlog.client.note import Signature, sign_note, split_note, verify_note_signatures

__all__ = [
    "DEFAULT_MAX_ENTRY_SIZE",
    "ENTRY_TYPES",
    "KEYS_V1",
    "MAX_KEYS",
    "RELEASE_V1",
    "REVOCATION_V1",
    "VENDOR_V1",
    "Build",
    "Entry",
    "EntryBody",
    "Image",
    "KeySet",
    "Release",
    "Revocation",
    "VendorAdmission",
    "check_signature_lines",
    "entry_identity",
    "entry_json",
    "entry_text",
    "entry_type",
    "parse_entry",
    "parse_entry_text",
    "sign_entry",
    "verify_entry_signatures",
]

RELEASE_V1 = "firmlog/release/v1"
REVOCATION_V1 = "firmlog/revocation/v1"
KEYS_V1 = "firmlog/keys/v1"
VENDOR_V1 = "firmlog/vendor/v1"
ENTRY_TYPES = (RELEASE_V1, REVOCATION_V1, KEYS_V1, VENDOR_V1)
DEFAULT_MAX_ENTRY_SIZE = 16 * 1024
MAX_KEYS = 16

MAX_VENDOR_LENGTH = 253
MAX_NAME_LENGTH = 128  # product, version, channel, hardware revision
MAX_HARDWARE_REVISIONS = 64
MAX_URI_LENGTH = 2048
MAX_COMMIT_LENGTH = 256
MAX_BUILDER_LENGTH = 256
MAX_FIXES = 512
MAX_CHANGELOG_BYTES = 8192
MAX_REASON_BYTES = 1024
MAX_ADVISORY_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class Image:
    sha256: str  # 64 lowercase hex digits
    size: int  # bytes, > 0


@dataclass(frozen=True, slots=True)
class Build:
    time: str  # RFC 3339 UTC, "YYYY-MM-DDTHH:MM:SSZ"
    source_uri: str | None  # None together with source_commit: no published source
    source_commit: str | None
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
    """``firmlog/revocation/v1``: withdraws a release, named by its entry identity."""

    vendor: str
    release_id: str  # 64 lowercase hex digits: the release's Entry.identity
    reason: str
    advisory: str = ""


@dataclass(frozen=True, slots=True)
class KeySet:
    """``firmlog/keys/v1``: a vendor's new key set and threshold (rotation).

    ``serial`` numbers the vendor's key sets: the admission's is 1, and a
    rotation creates the next one, so an old rotation can never apply again.
    """

    vendor: str
    keys: tuple[str, ...]  # Ed25519 vkeys
    threshold: int
    serial: int  # 2..2**53-1: exactly one more than the current set's


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
    # SHA-256 of the signed text (entry_identity): what makes two notes the
    # same entry. Computed once by parse_entry; the log, the gate and the
    # ledger replay each key on it.
    identity: bytes

    @property
    def leaf_hash(self) -> bytes:
        """RFC 6962 leaf hash of :attr:`raw`, signature lines included."""
        return merkle.leaf_hash(self.raw)


def entry_identity(text: str) -> bytes:
    """The identity of the entry whose signed text is ``text``: SHA-256 of its UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).digest()


# What each type is called in messages, and whose keys sign it.
_NOUN = {
    RELEASE_V1: "release",
    REVOCATION_V1: "revocation",
    KEYS_V1: "key_set",
    VENDOR_V1: "vendor_admission",
}
_SIGNERS = {
    RELEASE_V1: "vendor's",
    REVOCATION_V1: "vendor's",
    KEYS_V1: "vendor's",
    VENDOR_V1: "operator's",
}


def entry_type(body: EntryBody) -> str:
    """The type line for ``body``. TypeError for anything that is not an entry body."""
    if isinstance(body, Release):
        return RELEASE_V1
    if isinstance(body, Revocation):
        return REVOCATION_V1
    if isinstance(body, KeySet):
        return KEYS_V1
    if isinstance(body, VendorAdmission):
        return VENDOR_V1
    raise TypeError(f"not a firmlog entry body: {type(body).__name__}")


# --- body <-> JSON -------------------------------------------------------------


def _array(value: object) -> object:
    return list(value) if isinstance(value, tuple | list) else value


def entry_json(body: EntryBody) -> dict[str, Any]:
    """The JSON object of ``body`` (not validated; :func:`entry_text` validates).

    Member names are the dataclass field names; ``sbom_sha256`` is left out
    when it is None.
    """
    if isinstance(body, Release):
        image: object = body.image
        if isinstance(image, Image):
            image = {"sha256": image.sha256, "size": image.size}
        build: object = body.build
        if isinstance(build, Build):
            fields: dict[str, object] = {
                "time": build.time,
                "builder": build.builder,
                "reproducible": build.reproducible,
            }
            if build.source_uri is not None or build.source_commit is not None:
                fields["source_uri"] = build.source_uri
                fields["source_commit"] = build.source_commit
            build = fields
        release: dict[str, Any] = {
            "vendor": body.vendor,
            "product": body.product,
            "hardware_revisions": _array(body.hardware_revisions),
            "version": body.version,
            "security_version": body.security_version,
            "channel": body.channel,
            "image": image,
            "build": build,
            "fixes": _array(body.fixes),
            "changelog": body.changelog,
        }
        if body.sbom_sha256 is not None:
            release["sbom_sha256"] = body.sbom_sha256
        return release
    if isinstance(body, Revocation):
        return {
            "vendor": body.vendor,
            "release_id": body.release_id,
            "reason": body.reason,
            "advisory": body.advisory,
        }
    if isinstance(body, KeySet):
        return {
            "vendor": body.vendor,
            "keys": _array(body.keys),
            "threshold": body.threshold,
            "serial": body.serial,
        }
    if isinstance(body, VendorAdmission):
        return {"vendor": body.vendor, "keys": _array(body.keys), "threshold": body.threshold}
    raise TypeError(f"not a firmlog entry body: {type(body).__name__}")


# --- field validation ------------------------------------------------------------


def _describe(value: object) -> str:
    """A found value for an error message, in JSON terms."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        shown = "".join(
            "\\" + c if c in '"\\' else c if c.isprintable() else ascii(c)[1:-1] for c in value[:48]
        )
        return f'"{shown}..." ({len(value)} characters)' if len(value) > 48 else f'"{shown}"'
    if isinstance(value, list | tuple):
        return f"an array of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


def _fields(
    path: str, value: object, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EntryFormatError(f"{path}: expected a JSON object, got {_describe(value)}")
    allowed = set(required) | set(optional)
    for name in sorted(value):
        if name not in allowed:
            expected = ", ".join(sorted(allowed))
            shown = name if _PLAIN_NAME.fullmatch(name) else f"[{_describe(name)}]"
            raise EntryFormatError(f"{path}.{shown}: unknown field (expected only {expected})")
    for name in required:
        if name not in value:
            raise EntryFormatError(f"{path}.{name}: required field is missing")
    return value


def _int(path: str, value: object, low: int, high: int, what: str = "") -> int:
    # bool is a subclass of int in Python; JSON true is not an integer.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise EntryFormatError(
            f"{path}: expected an integer {low}..{high}{what}, got {_describe(value)}"
        )
    return value


def _bool(path: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise EntryFormatError(f"{path}: expected true or false, got {_describe(value)}")
    return value


def _str(path: str, value: object) -> str:
    if not isinstance(value, str):
        raise EntryFormatError(f"{path}: expected a string, got {_describe(value)}")
    return value


def _name(path: str, value: object, max_length: int = MAX_NAME_LENGTH, spaces: bool = True) -> str:
    """A one-line human-readable name: printable, trimmed, 1..max_length characters."""
    s = value if type(value) is str else _str(path, value)
    if not s:
        raise EntryFormatError(f'{path}: expected 1..{max_length} characters, got ""')
    if len(s) > max_length:
        raise EntryFormatError(f"{path}: expected 1..{max_length} characters, got {len(s)}")
    if not s.isprintable() or (not spaces and " " in s):  # find the culprit
        for i, c in enumerate(s):
            if not c.isprintable():
                raise EntryFormatError(
                    f"{path}: expected printable characters, got U+{ord(c):04X} at position {i}"
                )
        raise EntryFormatError(f"{path}: expected no spaces, got one at position {s.index(' ')}")
    if s != s.strip():
        raise EntryFormatError(
            f"{path}: expected no leading or trailing whitespace, got {_describe(s)}"
        )
    return s


# C0 controls but tab and newline, DEL, C1 controls, bidirectional embeddings,
# overrides, isolates and marks, line and paragraph separators, surrogates.
_NOT_TEXT = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\u2028\u2029\ud800-\udfff]"
)


def _text(path: str, value: object, min_bytes: int, max_bytes: int) -> str:
    """Free text: tab and newline allowed; no other controls, no bidi overrides."""
    s = value if type(value) is str else _str(path, value)
    size = len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))
    if not min_bytes <= size <= max_bytes:
        raise EntryFormatError(
            f"{path}: expected {min_bytes}..{max_bytes} bytes of UTF-8 text, got {size}"
        )
    bad = _NOT_TEXT.search(s)
    if bad is not None:
        raise EntryFormatError(
            f"{path}: expected text without control characters other than tab and "
            f"newline, got U+{ord(bad.group()):04X} at position {bad.start()}"
        )
    return s


_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_VENDOR = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def _vendor(path: str, value: object) -> str:
    s = value if type(value) is str else _str(path, value)
    if len(s) > MAX_VENDOR_LENGTH or not _VENDOR.fullmatch(s):
        raise EntryFormatError(
            f'{path}: expected a lowercase DNS-like name such as "acme.example" (labels of '
            f'a-z, 0-9 and inner "-", 1..63 characters each, joined by "."; at most '
            f"{MAX_VENDOR_LENGTH} characters), got {_describe(s)}"
        )
    return s


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _hex64(path: str, value: object, hint: str = "") -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise EntryFormatError(
            f"{path}: expected 64 lowercase hex digits (a SHA-256 hash), got "
            f"{_describe(value)}{hint}"
        )
    return value


_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")


def _time(path: str, value: object) -> str:
    s = value if type(value) is str else _str(path, value)
    m = _TIME.fullmatch(s)
    if m is None:
        raise EntryFormatError(
            f"{path}: expected RFC 3339 UTC time YYYY-MM-DDTHH:MM:SSZ, got {_describe(s)}"
        )
    try:
        # Only checks the calendar (not datetime.fromisoformat: newer Pythons
        # take hour 24 there).
        year, month, day, hour, minute, second = map(int, m.groups())
        datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise EntryFormatError(
            f"{path}: expected a real date and time, got {_describe(s)} ({exc})"
        ) from None
    return s


# Possessive repeats (the alternatives cannot overlap): the same URIs, faster.
_URI = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]*+:(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]++|%[0-9A-Fa-f]{2})++"
)


def _uri(path: str, value: object) -> str:
    s = value if type(value) is str else _str(path, value)
    if len(s) > MAX_URI_LENGTH or not _URI.fullmatch(s):
        raise EntryFormatError(
            f"{path}: expected an absolute URI (scheme:..., RFC 3986 characters only, at most "
            f"{MAX_URI_LENGTH}), got {_describe(s)}"
        )
    return s


_CVE = re.compile(r"CVE-[0-9]{4}-[0-9]{4,19}")


def _cve(path: str, value: object) -> str:
    if not isinstance(value, str) or not _CVE.fullmatch(value):
        raise EntryFormatError(
            f"{path}: expected a CVE id CVE-YYYY-NNNN (4 to 19 digits), got {_describe(value)}"
        )
    return value


def _unique_list(
    path: str,
    value: object,
    min_items: int,
    max_items: int,
    item: Callable[[str, object], str],
) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise EntryFormatError(f"{path}: expected an array, got {_describe(value)}")
    if not min_items <= len(value) <= max_items:
        raise EntryFormatError(f"{path}: expected {min_items}..{max_items} items, got {len(value)}")
    try:  # the common case: every item valid (items are then str), none twice
        for v in value:
            item(path, v)
        if len(set(value)) == len(value):
            return tuple(value)
    except EntryFormatError:
        pass
    # The same checks again, in order, to name the first item that fails.
    seen: dict[str, int] = {}
    for i, v in enumerate(value):
        s = item(f"{path}[{i}]", v)
        if s in seen:
            raise EntryFormatError(f"{path}[{i}]: duplicate of {path}[{seen[s]}] {_describe(s)}")
        seen[s] = i
    raise AssertionError(f"{path}: an item failed once and not again")  # pragma: no cover


def _keys(path: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise EntryFormatError(
            f"{path}: expected an array of verifier keys, got {_describe(value)}"
        )
    if not 1 <= len(value) <= MAX_KEYS:
        raise EntryFormatError(f"{path}: expected 1..{MAX_KEYS} keys, got {len(value)}")
    seen: dict[bytes, int] = {}
    named: dict[tuple[str, int], int] = {}
    for i, v in enumerate(value):
        s = _str(f"{path}[{i}]", v)
        try:
            verifier = parse_verifier_key(s)
        except KeyFormatError as exc:
            raise EntryFormatError(
                f"{path}[{i}]: expected an Ed25519 verifier key (name+hexid+base64), "
                f"got {_describe(s)}: {exc}"
            ) from exc
        if verifier.vkey != s:
            raise EntryFormatError(
                f"{path}[{i}]: expected the key in canonical form {_describe(verifier.vkey)}, "
                f"got {_describe(s)}"
            )
        if verifier.public_key in seen:
            raise EntryFormatError(
                f"{path}[{i}]: the same public key as {path}[{seen[verifier.public_key]}]"
            )
        seen[verifier.public_key] = i
        ident = (verifier.name, verifier.key_id)
        if ident in named:
            raise EntryFormatError(
                f"{path}[{i}]: the same name and key ID ({verifier.name}+"
                f"{verifier.key_id:08x}) as {path}[{named[ident]}]: a signature line could "
                "not say which of the two keys made it"
            )
        named[ident] = i
    return tuple(value)


_RELEASE_FIELDS = (
    "vendor",
    "product",
    "hardware_revisions",
    "version",
    "security_version",
    "channel",
    "image",
    "build",
    "fixes",
    "changelog",
)
_ABSENT: Any = object()  # an optional member left out (not null)


def _release(value: object) -> Release:
    """The release in a parsed JSON value: its shape here, its values in
    :func:`_release_of`. (A release is the whole body: its path is "release",
    written out, as formatting it would cost more than the rest.)"""
    d = _fields("release", value, _RELEASE_FIELDS, ("sbom_sha256",))
    i = _fields("release.image", d["image"], ("sha256", "size"))
    b = _fields(
        "release.build",
        d["build"],
        ("time", "builder", "reproducible"),
        ("source_uri", "source_commit"),
    )
    if ("source_uri" in b) != ("source_commit" in b):
        given, missing = (
            ("source_uri", "source_commit")
            if "source_uri" in b
            else ("source_commit", "source_uri")
        )
        raise EntryFormatError(
            f"release.build: {given} is given without {missing}: give both or neither"
        )
    return _release_of(
        d["vendor"],
        d["product"],
        d["hardware_revisions"],
        d["version"],
        d["security_version"],
        d["channel"],
        i["sha256"],
        i["size"],
        b["time"],
        b.get("source_uri", _ABSENT),
        b.get("source_commit", _ABSENT),
        b["builder"],
        b["reproducible"],
        d.get("sbom_sha256", _ABSENT),
        d["fixes"],
        d["changelog"],
    )


def _release_of(
    vendor: object,
    product: object,
    hardware_revisions: object,
    version: object,
    security_version: object,
    channel: object,
    sha256: object,
    size: object,
    time: object,
    source_uri: object,  # _ABSENT (with source_commit): left out
    source_commit: object,
    builder: object,
    reproducible: object,
    sbom_sha256: object,  # _ABSENT: left out
    fixes: object,
    changelog: object,
) -> Release:
    """Every field rule of a release, on its values: the one place they are checked."""
    return Release(  # positionally, in the order of the fields: a little cheaper
        _vendor("release.vendor", vendor),
        _name("release.product", product, MAX_NAME_LENGTH),
        _unique_list(
            "release.hardware_revisions",
            hardware_revisions,
            0,
            MAX_HARDWARE_REVISIONS,
            _name,
        ),
        _name("release.version", version, MAX_NAME_LENGTH),
        _int("release.security_version", security_version, 0, MAX_SAFE_INTEGER),
        _name("release.channel", channel, MAX_NAME_LENGTH),
        Image(
            _hex64("release.image.sha256", sha256),
            _int("release.image.size", size, 1, MAX_SAFE_INTEGER),
        ),
        Build(
            _time("release.build.time", time),
            None if source_uri is _ABSENT else _uri("release.build.source_uri", source_uri),
            (
                None
                if source_commit is _ABSENT
                else _name(
                    "release.build.source_commit", source_commit, MAX_COMMIT_LENGTH, spaces=False
                )
            ),
            _name("release.build.builder", builder, MAX_BUILDER_LENGTH),
            _bool("release.build.reproducible", reproducible),
        ),
        (
            None
            if sbom_sha256 is _ABSENT
            else _hex64(
                "release.sbom_sha256",
                sbom_sha256,
                " (omit the field when there is no SBOM)" if sbom_sha256 is None else "",
            )
        ),
        _unique_list("release.fixes", fixes, 0, MAX_FIXES, _cve),
        _text("release.changelog", changelog, 0, MAX_CHANGELOG_BYTES),
    )


# --- a release in its canonical layout ------------------------------------------------
#
# A release is parsed on every device verification. Its canonical JSON has
# one layout: members in a fixed order, no whitespace, integers in plain
# decimal, and strings quoted as they are when they hold no '"', '\', control
# character or lone surrogate (canonjson.py). One pattern recognises that
# layout and nothing else, so a text it matches is canonical JSON and its
# captures are the values parse_canonical_json would give (the changelog may
# also hold tab, newline, '"' and '\', escaped canonically as \t, \n, \" and
# \\). The pattern knows no field rule: the captures go to _release_of, as
# the general path's values do. A text the pattern does not match, or whose
# values _release_of refuses, takes the general path (parse_canonical_json,
# then _release), which decides and explains. tests/client/test_fast_paths.py
# checks that both agree.

_J_CHAR = r'[^"\\\x00-\x1f\ud800-\udfff]'
_J_STR = f'"({_J_CHAR}*+)"'
_J_STRS = rf'\[((?:"{_J_CHAR}*+")(?:,"{_J_CHAR}*+")*+|)\]'
_J_INT = "(0|[1-9][0-9]*+)"
_RELEASE_LAYOUT = re.compile(
    "".join(
        (
            r'\{"build":\{"builder":',
            _J_STR,
            ',"reproducible":(true|false)',
            '(?:,"source_commit":',
            _J_STR,
            ',"source_uri":',
            _J_STR,
            ')?,"time":',
            _J_STR,
            rf'\}},"changelog":"((?:{_J_CHAR}++|\\[nt"\\])*+)"',
            ',"channel":',
            _J_STR,
            ',"fixes":',
            _J_STRS,
            ',"hardware_revisions":',
            _J_STRS,
            r',"image":\{"sha256":',
            _J_STR,
            ',"size":',
            _J_INT,
            r'\},"product":',
            _J_STR,
            '(?:,"sbom_sha256":',
            _J_STR,
            ')?,"security_version":',
            _J_INT,
            ',"vendor":',
            _J_STR,
            ',"version":',
            _J_STR,
            r"\}",
        )
    )
)
_UNESCAPE = re.compile(r"\\(.)")
_ESCAPED = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _release_from_json(line: str) -> Release | None:
    """The release whose canonical JSON is ``line``, if it has the canonical
    layout (see above) and valid values; None for the general path to decide."""
    m = _RELEASE_LAYOUT.fullmatch(line)
    if m is None:
        return None
    (
        builder,
        reproducible,
        source_commit,
        source_uri,
        time,
        changelog,
        channel,
        fixes,
        revisions,
        sha256,
        size,
        product,
        sbom_sha256,
        security_version,
        vendor,
        version,
    ) = m.groups()
    if "\\" in changelog:
        changelog = _UNESCAPE.sub(lambda e: _ESCAPED[e.group(1)], changelog)
    try:
        return _release_of(
            vendor,
            product,
            revisions[1:-1].split('","') if revisions else [],  # strings without '"'
            version,
            int(security_version),
            channel,
            sha256,
            int(size),
            time,
            _ABSENT if source_uri is None else source_uri,
            _ABSENT if source_commit is None else source_commit,
            builder,
            reproducible == "true",
            _ABSENT if sbom_sha256 is None else sbom_sha256,
            fixes[1:-1].split('","') if fixes else [],
            changelog,
        )
    except (EntryFormatError, ValueError):  # ValueError: int() of more than 4300 digits
        return None


# Key sets (admissions and rotations) likewise: every admission a log receives
# is one, and so is each key set a monitor replays. Members sorted: keys,
# serial (rotations only), threshold, vendor.
_KEY_SET_LAYOUT = re.compile(
    "".join(
        (
            r'\{"keys":',
            _J_STRS,
            '(?:,"serial":',
            _J_INT,
            ')?,"threshold":',
            _J_INT,
            ',"vendor":',
            _J_STR,
            r"\}",
        )
    )
)


def _key_set_from_json(type_: str, line: str) -> KeySet | VendorAdmission | None:
    """The key set (``type_`` KEYS_V1) or admission (VENDOR_V1) whose canonical
    JSON is ``line``, if it has the canonical layout and valid values; None
    for the general path to decide."""
    m = _KEY_SET_LAYOUT.fullmatch(line)
    if m is None:
        return None
    keys, serial, threshold, vendor = m.groups()
    rotation = type_ == KEYS_V1
    if (serial is not None) != rotation:  # the general path names the field
        return None
    value: dict[str, object] = {
        "keys": keys[1:-1].split('","') if keys else [],  # strings without '"'
        "threshold": int(threshold) if len(threshold) <= _MAX_INT_DIGITS else None,
        "vendor": vendor,
    }
    if rotation:
        value["serial"] = int(serial) if len(serial) <= _MAX_INT_DIGITS else None
    try:
        vendor, keys_, threshold_, number = _key_set(_NOUN[type_], value, serial=rotation)
    except EntryFormatError:
        return None
    if rotation:
        return KeySet(vendor, keys_, threshold_, number)
    return VendorAdmission(vendor, keys_, threshold_)


_MAX_INT_DIGITS = 16  # 2**53 - 1 has 16 digits: longer is out of range (and None is refused)


def _revocation(path: str, value: object) -> Revocation:
    d = _fields(path, value, ("vendor", "release_id", "reason", "advisory"))
    return Revocation(
        vendor=_vendor(f"{path}.vendor", d["vendor"]),
        release_id=_hex64(f"{path}.release_id", d["release_id"]),
        reason=_text(f"{path}.reason", d["reason"], 1, MAX_REASON_BYTES),
        advisory=_advisory(f"{path}.advisory", d["advisory"]),
    )


def _advisory(path: str, value: object) -> str:
    if value == "":
        return ""
    return _name(path, value, MAX_ADVISORY_LENGTH)


def _key_set(path: str, value: object, serial: bool) -> tuple[str, tuple[str, ...], int, int]:
    d = _fields(path, value, ("vendor", "keys", "threshold", *(("serial",) if serial else ())))
    vendor = _vendor(f"{path}.vendor", d["vendor"])
    keys = _keys(f"{path}.keys", d["keys"])
    threshold = _int(
        f"{path}.threshold", d["threshold"], 1, len(keys), " (at most the number of keys)"
    )
    number = (
        _int(f"{path}.serial", d["serial"], 2, MAX_SAFE_INTEGER, " (the admission's set is 1)")
        if serial
        else 1
    )
    return vendor, keys, threshold, number


def _body(type_: str, value: object) -> EntryBody:
    path = _NOUN[type_]
    if type_ == RELEASE_V1:
        return _release(value)
    if type_ == REVOCATION_V1:
        return _revocation(path, value)
    vendor, keys, threshold, serial = _key_set(path, value, serial=type_ == KEYS_V1)
    if type_ == KEYS_V1:
        return KeySet(vendor=vendor, keys=keys, threshold=threshold, serial=serial)
    return VendorAdmission(vendor=vendor, keys=keys, threshold=threshold)


def _check_size(size: int, max_size: int) -> None:
    if size > max_size:
        raise EntryFormatError(f"entry is {size} bytes: the limit is {max_size}")


# --- text, signing, parsing ----------------------------------------------------------


def entry_text(body: EntryBody) -> str:
    """``<type>\\n<canonical JSON>\\n``; validates the body first (EntryFormatError)."""
    type_ = entry_type(body)
    value = entry_json(body)
    _body(type_, value)
    text = f"{type_}\n{canonical_json(value).decode('utf-8')}\n"
    _check_size(len(text.encode("utf-8")), DEFAULT_MAX_ENTRY_SIZE)
    return text


def parse_entry_text(text: str) -> EntryBody:
    """Parse and validate the signed text of an entry, ``<type>\\n<canonical JSON>\\n``.

    The inverse of :func:`entry_text`. EntryFormatError when anything is off.
    """
    if not text.endswith("\n"):
        raise EntryFormatError("entry text: expected a final newline")
    lines = text[:-1].split("\n")
    type_ = lines[0]
    if type_ not in ENTRY_TYPES:
        raise EntryFormatError(
            f"entry type line: expected one of {', '.join(ENTRY_TYPES)}, got {_describe(type_)}"
        )
    if len(lines) != 2:
        raise EntryFormatError(
            f"{type_} entry: expected 2 lines (the type and one line of canonical JSON), "
            f"got {len(lines)}"
        )
    if type_ == RELEASE_V1:
        release = _release_from_json(lines[1])
        if release is not None:
            return release
    elif type_ in (KEYS_V1, VENDOR_V1):
        key_set = _key_set_from_json(type_, lines[1])
        if key_set is not None:
            return key_set
    try:
        value = parse_canonical_json(lines[1])
    except EntryFormatError as exc:
        raise EntryFormatError(f"{_NOUN[type_]}: {exc}") from exc
    return _body(type_, value)


def sign_entry(body: EntryBody, signers: Iterable[Signer]) -> bytes:
    """The signed note for ``body``.

    EntryFormatError if the body is invalid or the signed note would exceed
    :data:`DEFAULT_MAX_ENTRY_SIZE`; ValueError without signers.
    """
    signers = list(signers)
    if not signers:
        raise ValueError("sign_entry needs at least one signer")
    note = sign_note(entry_text(body), signers)
    _check_size(len(note), DEFAULT_MAX_ENTRY_SIZE)
    return note


def parse_entry(raw: bytes, max_size: int = DEFAULT_MAX_ENTRY_SIZE) -> Entry:
    """Strict parse: a signed note, a known type line, canonical JSON with exactly
    the fields of that type, each valid. Signatures are not verified here.
    EntryFormatError says which field is wrong, what was expected and what was found."""
    if not isinstance(raw, bytes):
        raise TypeError(f"parse_entry takes bytes, not {type(raw).__name__}")
    _check_size(len(raw), max_size)
    try:
        text, signatures = split_note(raw, max_size=max_size)
    except NoteFormatError as exc:
        raise EntryFormatError(f"entry is not a signed note: {exc}") from exc
    body = parse_entry_text(text)
    return Entry(entry_type(body), body, text, tuple(signatures), raw, entry_identity(text))


def verify_entry_signatures(
    entry: Entry,
    keys: KeyRing[Ed25519Verifier] | Iterable[Ed25519Verifier],
    threshold: int,
    *,
    exact: bool = False,
) -> tuple[str, ...]:
    """Require valid signatures by at least ``threshold`` distinct keys of ``keys``.

    Returns the vkeys that signed. Raises SignatureError if a signature by a
    key of the set is invalid, EntryPolicyError if fewer than ``threshold`` signed.

    A key is matched by name and key ID, as in signed-note. By default, as a
    verifier of signed notes does, signatures by other keys are ignored and a
    key that signed twice counts once. With ``exact`` (the log's rule for
    what it accepts, DESIGN.md section 3) every signature line must be by a
    key of ``keys``, each key at most once: SignatureLineError otherwise.
    ``keys`` is a :class:`~firmlog.client.keys.KeyRing` (callers that verify
    often build one once) or the keys to index into one (ValueError for two
    different keys with one name and key ID). ValueError if ``threshold`` is
    not 1..(number of distinct keys).
    """
    ring = KeyRing.of(keys)
    by_id = ring.by_id
    distinct = len(ring.distinct())
    if not 1 <= threshold <= distinct:
        raise ValueError(f"threshold {threshold} is not 1..{distinct} (the distinct keys)")
    verified: set[tuple[str, int]] = set()
    if exact:
        # Every line is by a key of the ring, each key once; signed-note's rules
        # (verify_note_signatures) then come down to: every signature verifies.
        message = entry.text.encode("utf-8")
        for sig, key in zip(entry.signatures, _line_keys(entry, ring), strict=True):
            if not key.verify(message, sig.signature):
                raise SignatureError(f"{_noun(entry)}: invalid signature by known key {sig.key}")
        verified = {(s.name, s.key_id) for s in entry.signatures}
    elif any((sig.name, sig.key_id) in by_id for sig in entry.signatures):
        # signed-note's rules: a bad signature by a known key rejects the note.
        try:
            note = verify_note_signatures(entry.text, entry.signatures, ring)
        except SignatureError as exc:
            raise SignatureError(f"{_noun(entry)}: {exc}") from exc
        verified = {(s.name, s.key_id) for s in note.verified}
    signed: dict[bytes, Ed25519Verifier] = {}  # one per public key, in the order of keys
    for ident, key in by_id.items():
        if ident in verified:
            signed.setdefault(key.public_key, key)
    if len(signed) < threshold:
        names = ", ".join(k.name for k in signed.values()) or "none"
        raise EntryPolicyError(
            f"{_noun(entry)} is signed by {len(signed)} of the "
            f"{_SIGNERS.get(entry.type, 'signing')} keys: threshold is {threshold} "
            f"(signed: {names})"
        )
    return tuple(k.vkey for k in signed.values())


def check_signature_lines(
    entry: Entry, keys: KeyRing[Ed25519Verifier] | Iterable[Ed25519Verifier]
) -> None:
    """Every signature line of ``entry`` is by one of the keys, each key at most
    once; SignatureLineError naming the first line that is not. The
    signatures themselves are not verified here."""
    _line_keys(entry, KeyRing.of(keys))


def _line_keys(entry: Entry, ring: KeyRing[Ed25519Verifier]) -> list[Ed25519Verifier]:
    """:func:`check_signature_lines`, returning the key of each line."""
    found: list[Ed25519Verifier] = []
    seen: dict[bytes, int] = {}
    for n, sig in enumerate(entry.signatures, 1):
        key = ring.by_id.get((sig.name, sig.key_id))
        if key is None:
            known = ", ".join(ring.key_names())
            raise SignatureLineError(
                f"{_noun(entry)}: signature line {n} is by {sig.key}, which is not one of the "
                f"{_SIGNERS.get(entry.type, 'signing')} keys ({known}): sign with the "
                "required keys only"
            )
        if key.public_key in seen:
            raise SignatureLineError(
                f"{_noun(entry)}: signature line {n} is a second signature by {sig.key} "
                f"(line {seen[key.public_key]} is the first): each key signs once"
            )
        seen[key.public_key] = n
        found.append(key)
    return found


def _noun(entry: Entry) -> str:
    """What an entry is called in messages: release, key set, ..."""
    return _NOUN.get(entry.type, entry.type).replace("_", " ")
