"""firmlog entries (DESIGN.md section 3): JSON shape, validation, signing, thresholds."""

from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.hostile import colliding_vkeys
from support.mutations import mutated

from firmlog.client.canonjson import MAX_SAFE_INTEGER, canonical_json
from firmlog.client.entries import (
    DEFAULT_MAX_ENTRY_SIZE,
    ENTRY_TYPES,
    KEYS_V1,
    MAX_KEYS,
    RELEASE_V1,
    REVOCATION_V1,
    VENDOR_V1,
    Build,
    EntryBody,
    Image,
    KeySet,
    Release,
    Revocation,
    VendorAdmission,
    entry_json,
    entry_text,
    entry_type,
    parse_entry,
    parse_entry_text,
    sign_entry,
    verify_entry_signatures,
)
from firmlog.client.errors import (
    EntryFormatError,
    EntryPolicyError,
    FirmlogError,
    SignatureError,
)
from firmlog.client.keys import Ed25519Signer, Ed25519Verifier, generate_key, key_id
from firmlog.client.note import Signature, sign_note

RELEASE_KEY = generate_key("acme.example/release")
SECURITY_KEY = generate_key("acme.example/security")
SPARE_KEY = generate_key("acme.example/spare")
FOREIGN_KEY = generate_key("evil.example/release")
OPERATOR_KEY = generate_key("log.example/operator")
VENDOR_KEYS = [RELEASE_KEY.verifier, SECURITY_KEY.verifier, SPARE_KEY.verifier]
VENDOR_KEYS_VKEYS = (RELEASE_KEY.verifier.vkey, SECURITY_KEY.verifier.vkey)

SHA_A = "9f" * 32
SHA_B = "0123456789abcdef" * 4


def make_release(**changes: Any) -> Release:
    release = Release(
        vendor="acme.example",
        product="thermostat-x2",
        hardware_revisions=("rev-a", "rev-b"),
        version="4.2.0-rc.1",
        security_version=12,
        channel="stable",
        image=Image(sha256=SHA_A, size=4_194_304),
        build=Build(
            time="2025-07-16T09:30:00Z",
            source_uri="https://git.acme.example/firmware/thermostat.git",
            source_commit="1f3e9c0b7a2d4e6f8091a2b3c4d5e6f708192a3b",
            builder="acme-ci/reproducible-builder@3",
            reproducible=True,
        ),
        sbom_sha256=SHA_B,
        fixes=("CVE-2025-0001", "CVE-2024-123456"),
        changelog="Fixes the TLS certificate check.\n\tAlso: better battery life ✓",
    )
    return replace(release, **changes)


def make_revocation(**changes: Any) -> Revocation:
    body = Revocation(
        vendor="acme.example",
        release_id=SHA_B,
        reason="bricks rev-a boards on first boot",
        advisory="https://acme.example/psirt/ACME-2025-004",
    )
    return replace(body, **changes)


def make_key_set(**changes: Any) -> KeySet:
    body = KeySet(
        vendor="acme.example",
        keys=(RELEASE_KEY.verifier.vkey, SECURITY_KEY.verifier.vkey),
        threshold=2,
        serial=2,
    )
    return replace(body, **changes)


def make_admission(**changes: Any) -> VendorAdmission:
    body = VendorAdmission(vendor="acme.example", keys=(RELEASE_KEY.verifier.vkey,), threshold=1)
    return replace(body, **changes)


def text_of(type_: str, value: Any) -> str:
    """An entry text built without validation, to feed the parser anything."""
    return f"{type_}\n{canonical_json(value).decode()}\n"


# --- the JSON shape -------------------------------------------------------------

RELEASE_TEXT = (
    "firmlog/release/v1\n"
    '{"build":{"builder":"acme-ci/reproducible-builder@3","reproducible":true,'
    '"source_commit":"1f3e9c0b7a2d4e6f8091a2b3c4d5e6f708192a3b",'
    '"source_uri":"https://git.acme.example/firmware/thermostat.git",'
    '"time":"2025-07-16T09:30:00Z"},'
    '"changelog":"Fixes the TLS certificate check.\\n\\tAlso: better battery life ✓",'
    '"channel":"stable","fixes":["CVE-2025-0001","CVE-2024-123456"],'
    '"hardware_revisions":["rev-a","rev-b"],'
    f'"image":{{"sha256":"{SHA_A}","size":4194304}},'
    '"product":"thermostat-x2",'
    f'"sbom_sha256":"{SHA_B}",'
    '"security_version":12,"vendor":"acme.example","version":"4.2.0-rc.1"}\n'
)


def test_release_text_exact() -> None:
    assert entry_text(make_release()) == RELEASE_TEXT
    assert parse_entry_text(RELEASE_TEXT) == make_release()


def test_release_without_sbom_omits_the_field() -> None:
    text = entry_text(make_release(sbom_sha256=None, fixes=(), changelog=""))
    assert "sbom_sha256" not in text
    assert '"fixes":[]' in text
    assert '"changelog":""' in text
    assert parse_entry_text(text) == make_release(sbom_sha256=None, fixes=(), changelog="")


def test_release_without_published_source_omits_both_fields() -> None:
    build = replace(make_release().build, source_uri=None, source_commit=None)
    text = entry_text(make_release(build=build))
    assert "source_uri" not in text
    assert "source_commit" not in text
    assert parse_entry_text(text) == make_release(build=build)


@pytest.mark.parametrize(
    ("given", "missing"), [("source_uri", "source_commit"), ("source_commit", "source_uri")]
)
def test_source_uri_and_commit_come_together(given: str, missing: str) -> None:
    text = RELEASE_TEXT
    start = text.index(f'"{missing}":')
    end = text.index(",", start) + 1
    with pytest.raises(EntryFormatError, match=f"{given} is given without {missing}"):
        parse_entry_text(text[:start] + text[end:])


def test_other_texts_exact() -> None:
    assert entry_text(make_revocation()) == (
        "firmlog/revocation/v1\n"
        '{"advisory":"https://acme.example/psirt/ACME-2025-004",'
        '"reason":"bricks rev-a boards on first boot",'
        f'"release_id":"{SHA_B}","vendor":"acme.example"}}\n'
    )
    keys = f'["{RELEASE_KEY.verifier.vkey}","{SECURITY_KEY.verifier.vkey}"]'
    assert entry_text(make_key_set()) == (
        f'firmlog/keys/v1\n{{"keys":{keys},"serial":2,"threshold":2,"vendor":"acme.example"}}\n'
    )
    assert entry_text(make_admission()) == (
        f'firmlog/vendor/v1\n{{"keys":["{RELEASE_KEY.verifier.vkey}"],"threshold":1,'
        '"vendor":"acme.example"}\n'
    )


def test_entry_type_and_json() -> None:
    assert [entry_type(b) for b in _ALL_BODIES] == list(ENTRY_TYPES)
    assert entry_json(make_release())["image"] == {"sha256": SHA_A, "size": 4194304}
    assert "sbom_sha256" not in entry_json(make_release(sbom_sha256=None))
    with pytest.raises(TypeError):
        entry_type("release")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        entry_json(Image(SHA_A, 1))  # type: ignore[arg-type]


_ALL_BODIES: list[EntryBody] = [make_release(), make_revocation(), make_key_set(), make_admission()]


@pytest.mark.parametrize("body", _ALL_BODIES, ids=lambda b: type(b).__name__)
def test_sign_parse_round_trip(body: EntryBody) -> None:
    raw = sign_entry(body, [RELEASE_KEY, SECURITY_KEY])
    entry = parse_entry(raw)
    assert entry.body == body
    assert entry.type == entry_type(body)
    assert entry.text == entry_text(body)
    assert entry.raw == raw
    assert [s.name for s in entry.signatures] == [RELEASE_KEY.name, SECURITY_KEY.name]
    assert entry.leaf_hash == hashlib.sha256(b"\x00" + raw).digest()
    assert raw.startswith(entry.text.encode() + b"\n\xe2\x80\x94 acme.example/release ")


def test_list_fields_given_as_lists_encode_the_same() -> None:
    body = make_release(hardware_revisions=["rev-a", "rev-b"], fixes=list(make_release().fixes))
    assert entry_text(body) == RELEASE_TEXT


# --- field validation: one test per rule, through the parser -----------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        d[last] = value

    return mutate


def _delete(path: str) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        del d[last]

    return mutate


RELEASE_CASES: list[tuple[str, Mutation, str]] = [
    ("unknown", _set("signed_by", "me"), "release.signed_by: unknown field (expected only "),
    ("unknown-nested", _set("image.url", "x"), "release.image.url: unknown field"),
    (
        "unknown-odd-name",
        lambda d: d.update({"a.b\n\u202e": 1}),
        'release.["a.b\\n\\u202e"]: unknown field (expected only build, changelog, channel,',
    ),
    ("unknown-build", _set("build.os", "x"), "release.build.os: unknown field"),
    ("missing", _delete("version"), "release.version: required field is missing"),
    ("missing-fixes", _delete("fixes"), "release.fixes: required field is missing"),
    ("missing-changelog", _delete("changelog"), "release.changelog: required field is missing"),
    ("missing-nested", _delete("image.size"), "release.image.size: required field is missing"),
    ("missing-build", _delete("build.time"), "release.build.time: required field is missing"),
    ("image-type", _set("image", []), "release.image: expected a JSON object, got an array of 0"),
    ("build-type", _set("build", "x"), 'release.build: expected a JSON object, got "x"'),
    ("vendor-upper", _set("vendor", "ACME.example"), "release.vendor: expected a lowercase DNS"),
    ("vendor-dash", _set("vendor", "-acme.example"), 'got "-acme.example"'),
    ("vendor-dash-end", _set("vendor", "acme-.example"), 'got "acme-.example"'),
    ("vendor-dots", _set("vendor", "acme..example"), 'got "acme..example"'),
    ("vendor-trailing-dot", _set("vendor", "acme.example."), 'got "acme.example."'),
    ("vendor-empty", _set("vendor", ""), "release.vendor: expected a lowercase DNS-like name"),
    ("vendor-label", _set("vendor", "a" * 64 + ".example"), "release.vendor: expected"),
    ("vendor-long", _set("vendor", ".".join(["a" * 63] * 4)), "at most 253 characters"),
    ("vendor-underscore", _set("vendor", "acme_corp"), 'got "acme_corp"'),
    ("vendor-unicode", _set("vendor", "acmé.example"), 'got "acmé.example"'),
    ("vendor-type", _set("vendor", 7), "release.vendor: expected a string, got 7"),
    ("product-empty", _set("product", ""), 'release.product: expected 1..128 characters, got ""'),
    (
        "product-long",
        _set("product", "x" * 129),
        "release.product: expected 1..128 characters, got 129",
    ),
    (
        "product-control",
        _set("product", "x\x07y"),
        "release.product: expected printable characters, got U+0007 at position 1",
    ),
    (
        "product-bidi",
        _set("product", "abc\u202edef"),
        "release.product: expected printable characters, got U+202E at position 3",
    ),
    ("product-null", _set("product", None), "release.product: expected a string, got null"),
    (
        "version-space",
        _set("version", " 1.0"),
        'release.version: expected no leading or trailing whitespace, got " 1.0"',
    ),
    ("version-type", _set("version", 1), "release.version: expected a string, got 1"),
    (
        "channel-newline",
        _set("channel", "stable\nbeta"),
        "release.channel: expected printable characters, got U+000A at position 6",
    ),
    (
        "channel-nbsp",
        _set("channel", "a\u00a0b"),
        "release.channel: expected printable characters, got U+00A0",
    ),
    (
        "security-version-negative",
        _set("security_version", -1),
        "release.security_version: expected an integer 0..9007199254740991, got -1",
    ),
    (
        "security-version-bool",
        _set("security_version", True),
        "release.security_version: expected an integer 0..9007199254740991, got true",
    ),
    ("security-version-str", _set("security_version", "7"), 'got "7"'),
    (
        "image-sha-upper",
        _set("image.sha256", SHA_A.upper()),
        "release.image.sha256: expected 64 lowercase hex digits (a SHA-256 hash), got",
    ),
    ("image-sha-short", _set("image.sha256", SHA_A[:-1]), "release.image.sha256: expected 64"),
    ("image-sha-type", _set("image.sha256", 5), "release.image.sha256: expected 64"),
    (
        "image-size-zero",
        _set("image.size", 0),
        "release.image.size: expected an integer 1..9007199254740991, got 0",
    ),
    ("image-size-bool", _set("image.size", False), "release.image.size: expected an integer"),
    (
        "time-date",
        _set("build.time", "2025-02-29T00:00:00Z"),
        'release.build.time: expected a real date and time, got "2025-02-29T00:00:00Z"',
    ),
    ("time-leap-second", _set("build.time", "2016-12-31T23:59:60Z"), "a real date and time"),
    ("time-hour", _set("build.time", "2025-07-16T24:00:00Z"), "a real date and time"),
    (
        "time-offset",
        _set("build.time", "2025-07-16T09:30:00+00:00"),
        "release.build.time: expected RFC 3339 UTC time YYYY-MM-DDTHH:MM:SSZ, got",
    ),
    ("time-lower", _set("build.time", "2025-07-16t09:30:00z"), "expected RFC 3339 UTC"),
    ("time-fraction", _set("build.time", "2025-07-16T09:30:00.5Z"), "expected RFC 3339 UTC"),
    ("time-year-0", _set("build.time", "0000-01-01T00:00:00Z"), "a real date and time"),
    ("time-type", _set("build.time", 1752658200), "release.build.time: expected a string"),
    (
        "uri-relative",
        _set("build.source_uri", "git.acme.example/fw.git"),
        "release.build.source_uri: expected an absolute URI",
    ),
    ("uri-space", _set("build.source_uri", "https://a.example/x y"), "expected an absolute URI"),
    ("uri-empty-rest", _set("build.source_uri", "https:"), "expected an absolute URI"),
    ("uri-non-ascii", _set("build.source_uri", "https://é.example"), "expected an absolute URI"),
    ("uri-bad-percent", _set("build.source_uri", "https://a/%zz"), "expected an absolute URI"),
    ("uri-long", _set("build.source_uri", "https://a/" + "x" * 2039), "at most 2048"),
    (
        "commit-empty",
        _set("build.source_commit", ""),
        'release.build.source_commit: expected 1..256 characters, got ""',
    ),
    (
        "commit-space",
        _set("build.source_commit", "v1.0 final"),
        "release.build.source_commit: expected no spaces, got one at position 4",
    ),
    ("builder-empty", _set("build.builder", ""), "release.build.builder: expected 1..256"),
    (
        "reproducible-int",
        _set("build.reproducible", 1),
        "release.build.reproducible: expected true or false, got 1",
    ),
    (
        "sbom-null",
        _set("sbom_sha256", None),
        "release.sbom_sha256: expected 64 lowercase hex digits (a SHA-256 hash), got null "
        "(omit the field when there is no SBOM)",
    ),
    ("sbom-bad", _set("sbom_sha256", "sha256:" + SHA_B), "release.sbom_sha256: expected 64"),
    ("fixes-type", _set("fixes", "CVE-2025-0001"), "release.fixes: expected an array, got"),
    (
        "fixes-bad-id",
        _set("fixes", ["CVE-25-1"]),
        'release.fixes[0]: expected a CVE id CVE-YYYY-NNNN (4 to 19 digits), got "CVE-25-1"',
    ),
    ("fixes-lower", _set("fixes", ["cve-2025-0001"]), "release.fixes[0]: expected a CVE id"),
    ("fixes-short", _set("fixes", ["CVE-2025-001"]), "release.fixes[0]: expected a CVE id"),
    ("fixes-unicode-digits", _set("fixes", ["CVE-２０２５-0001"]), "expected a CVE id"),
    (
        "fixes-duplicate",
        _set("fixes", ["CVE-2025-0001", "CVE-2025-0002", "CVE-2025-0001"]),
        'release.fixes[2]: duplicate of release.fixes[0] "CVE-2025-0001"',
    ),
    (
        "fixes-many",
        _set("fixes", [f"CVE-2025-{i:05d}" for i in range(513)]),
        "release.fixes: expected 0..512 items, got 513",
    ),
    (
        "hw-duplicate",
        _set("hardware_revisions", ["rev-a", "rev-a"]),
        'release.hardware_revisions[1]: duplicate of release.hardware_revisions[0] "rev-a"',
    ),
    (
        "hw-empty-item",
        _set("hardware_revisions", [""]),
        'release.hardware_revisions[0]: expected 1..128 characters, got ""',
    ),
    (
        "hw-many",
        _set("hardware_revisions", [f"r{i}" for i in range(65)]),
        "release.hardware_revisions: expected 0..64 items, got 65",
    ),
    ("hw-type", _set("hardware_revisions", {}), "release.hardware_revisions: expected an array"),
    (
        "changelog-long",
        _set("changelog", "é" * 4097),
        "release.changelog: expected 0..8192 bytes of UTF-8 text, got 8194",
    ),
    (
        "changelog-cr",
        _set("changelog", "line one\r\nline two"),
        "release.changelog: expected text without control characters other than tab and "
        "newline, got U+000D at position 8",
    ),
    ("changelog-esc", _set("changelog", "\x1b[31mred"), "got U+001B at position 0"),
    ("changelog-c1", _set("changelog", "a\x85b"), "got U+0085 at position 1"),
    ("changelog-bidi", _set("changelog", "a\u2066b"), "got U+2066 at position 1"),
    ("changelog-type", _set("changelog", ["x"]), "release.changelog: expected a string"),
]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [pytest.param(m, msg, id=name) for name, m, msg in RELEASE_CASES],
)
def test_release_field_rules(mutate: Mutation, message: str) -> None:
    value = entry_json(make_release())
    value = copy.deepcopy(value)
    mutate(value)
    with pytest.raises(EntryFormatError) as info:
        parse_entry_text(text_of(RELEASE_V1, value))
    assert message in str(info.value)


def test_release_limits_are_inclusive() -> None:
    ok = make_release(
        product="p" * 128,
        security_version=MAX_SAFE_INTEGER,
        image=Image(SHA_A, MAX_SAFE_INTEGER),
        hardware_revisions=tuple(f"r{i}" for i in range(64)),
        changelog="x" * 8192,
        fixes=(),
        vendor=".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61]),
        build=replace(make_release().build, time="1999-12-31T23:59:59Z", source_uri="urn:x"),
    )
    assert parse_entry_text(entry_text(ok)) == ok
    any_revision = make_release(hardware_revisions=())
    assert parse_entry_text(entry_text(any_revision)) == any_revision
    many_fixes = make_release(fixes=tuple(f"CVE-2025-{i:05d}" for i in range(512)), changelog="")
    assert parse_entry_text(entry_text(many_fixes)) == many_fixes


def test_entry_text_validates_the_dataclass() -> None:
    # A client cannot produce what the log would reject.
    with pytest.raises(
        EntryFormatError,
        match=r"release.security_version: expected an integer 0..9007199254740991, "
        r"got 9007199254740992",
    ):
        entry_text(make_release(security_version=2**53))
    with pytest.raises(EntryFormatError, match=r"release\.security_version: .* got true"):
        entry_text(make_release(security_version=True))
    with pytest.raises(EntryFormatError, match=r"release\.image: expected a JSON object"):
        entry_text(make_release(image="x"))
    with pytest.raises(EntryFormatError, match=r"release.fixes\[0\]: expected a CVE id"):
        entry_text(make_release(fixes=("nope",)))
    with pytest.raises(EntryFormatError, match=r"release\.hardware_revisions: expected an array"):
        entry_text(make_release(hardware_revisions="rev-a"))
    with pytest.raises(EntryFormatError, match=r"release\.product: expected printable"):
        entry_text(make_release(product="bad\ud800"))
    with pytest.raises(EntryFormatError, match=r"release\.changelog: expected text without"):
        entry_text(make_release(changelog="bad\ud800"))
    with pytest.raises(EntryFormatError, match=r"release\.image\.size: expected an integer"):
        entry_text(make_release(image=Image(SHA_A, 1.5)))  # type: ignore[arg-type]
    with pytest.raises(EntryFormatError, match=r"key_set\.threshold"):
        sign_entry(make_key_set(threshold=3), [RELEASE_KEY])


REVOCATION_CASES: list[tuple[str, Mutation, str]] = [
    ("unknown", _set("release", "x"), "revocation.release: unknown field"),
    ("missing-advisory", _delete("advisory"), "revocation.advisory: required field is missing"),
    ("vendor", _set("vendor", "Acme"), "revocation.vendor: expected a lowercase DNS-like name"),
    ("hash", _set("release_id", "00"), "revocation.release_id: expected 64 lowercase hex"),
    (
        "reason-empty",
        _set("reason", ""),
        "revocation.reason: expected 1..1024 bytes of UTF-8 text, got 0",
    ),
    ("reason-long", _set("reason", "x" * 1025), "expected 1..1024 bytes of UTF-8 text, got 1025"),
    ("reason-control", _set("reason", "a\x00"), "revocation.reason: expected text without"),
    (
        "advisory-newline",
        _set("advisory", "see\nhere"),
        "revocation.advisory: expected printable characters, got U+000A",
    ),
    ("advisory-long", _set("advisory", "x" * 2049), "expected 1..2048 characters, got 2049"),
    ("advisory-space", _set("advisory", " x"), "revocation.advisory: expected no leading"),
]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [pytest.param(m, msg, id=name) for name, m, msg in REVOCATION_CASES],
)
def test_revocation_field_rules(mutate: Mutation, message: str) -> None:
    value = copy.deepcopy(entry_json(make_revocation()))
    mutate(value)
    with pytest.raises(EntryFormatError) as info:
        parse_entry_text(text_of(REVOCATION_V1, value))
    assert message in str(info.value)


def test_revocation_optional_text() -> None:
    body = make_revocation(advisory="", reason="multi\nline\treason")
    assert parse_entry_text(entry_text(body)) == body


def _same_public_key_other_name(key: Ed25519Verifier, name: str) -> Ed25519Verifier:
    return Ed25519Verifier(name, key_id(name, b"\x01" + key.public_key), key.public_key)


KEYS_CASES: list[tuple[str, Mutation, str]] = [
    ("unknown", _set("quorum", 1), "{p}.quorum: unknown field"),
    ("missing", _delete("threshold"), "{p}.threshold: required field is missing"),
    ("vendor", _set("vendor", "acme example"), "{p}.vendor: expected a lowercase DNS-like"),
    ("keys-type", _set("keys", RELEASE_KEY.verifier.vkey), "{p}.keys: expected an array"),
    ("keys-empty", _set("keys", []), "{p}.keys: expected 1..16 keys, got 0"),
    (
        "keys-many",
        _set("keys", [generate_key(f"k{i}").verifier.vkey for i in range(MAX_KEYS + 1)]),
        "{p}.keys: expected 1..16 keys, got 17",
    ),
    ("key-type", _set("keys", [1]), "{p}.keys[0]: expected a string, got 1"),
    (
        "key-malformed",
        _set("keys", ["acme.example+00000000+AAAA"]),
        '{p}.keys[0]: expected an Ed25519 verifier key (name+hexid+base64), got "acme.example',
    ),
    (
        "key-signer",
        _set("keys", [RELEASE_KEY.verifier.vkey, "PRIVATE+KEY+x+00000000+AAAA"]),
        "{p}.keys[1]: expected an Ed25519 verifier key",
    ),
    (
        "key-wrong-id",
        _set(
            "keys",
            [
                f"{RELEASE_KEY.name}+{RELEASE_KEY.key_id ^ 1:08x}+"
                + RELEASE_KEY.verifier.vkey.rsplit("+", 1)[1]
            ],
        ),
        "{p}.keys[0]: expected an Ed25519 verifier key (name+hexid+base64), got",
    ),
    (
        "key-same-public-key",
        _set(
            "keys",
            [
                RELEASE_KEY.verifier.vkey,
                _same_public_key_other_name(RELEASE_KEY.verifier, "acme.example/other").vkey,
            ],
        ),
        "{p}.keys[1]: the same public key as {p}.keys[0]",
    ),
    (
        "threshold-zero",
        _set("threshold", 0),
        "{p}.threshold: expected an integer 1..2 (at most the number of keys), got 0",
    ),
    (
        "threshold-high",
        _set("threshold", 3),
        "{p}.threshold: expected an integer 1..2 (at most the number of keys), got 3",
    ),
    ("threshold-bool", _set("threshold", True), "{p}.threshold: expected an integer 1..2"),
    ("threshold-str", _set("threshold", "2"), "{p}.threshold: expected an integer 1..2"),
]


@pytest.mark.parametrize(
    ("type_", "prefix"), [(KEYS_V1, "key_set"), (VENDOR_V1, "vendor_admission")]
)
@pytest.mark.parametrize(
    ("mutate", "message"),
    [pytest.param(m, msg, id=name) for name, m, msg in KEYS_CASES],
)
def test_key_set_field_rules(type_: str, prefix: str, mutate: Mutation, message: str) -> None:
    value = copy.deepcopy(entry_json(make_key_set()))
    if type_ == VENDOR_V1:
        del value["serial"]  # the admission's set is serial 1, implicitly
    mutate(value)
    with pytest.raises(EntryFormatError) as info:
        parse_entry_text(text_of(type_, value))
    assert message.format(p=prefix) in str(info.value)


@pytest.mark.parametrize(
    ("serial", "found"),
    [(0, "0"), (1, "1"), (-2, "-2"), (True, "true"), ("2", '"2"')],
)
def test_key_set_serial_rules(serial: object, found: str) -> None:
    value = entry_json(make_key_set())
    value["serial"] = serial
    with pytest.raises(EntryFormatError) as info:
        parse_entry_text(text_of(KEYS_V1, value))
    assert str(info.value) == (
        f"key_set.serial: expected an integer 2..{2**53 - 1} (the admission's set is 1), "
        f"got {found}"
    )


def test_key_set_serial_required_admission_has_none() -> None:
    value = entry_json(make_key_set())
    del value["serial"]
    with pytest.raises(EntryFormatError, match=r"key_set\.serial: required field is missing"):
        parse_entry_text(text_of(KEYS_V1, value))
    admission = entry_json(make_admission())
    admission["serial"] = 1
    with pytest.raises(EntryFormatError, match=r"vendor_admission\.serial: unknown field"):
        parse_entry_text(text_of(VENDOR_V1, admission))


@pytest.mark.parametrize(
    ("type_", "prefix"), [(KEYS_V1, "key_set"), (VENDOR_V1, "vendor_admission")]
)
def test_keys_with_one_name_and_key_id_rejected(type_: str, prefix: str) -> None:
    # Two different public keys that a signature line could not tell apart
    # (a birthday search over 4-byte key IDs finds such a pair in a second).
    first, second = colliding_vkeys("acme.example/release")
    value = entry_json(make_key_set(keys=(first, second), threshold=1))
    if type_ == VENDOR_V1:
        del value["serial"]
    with pytest.raises(EntryFormatError) as info:
        parse_entry_text(text_of(type_, value))
    kid = first.split("+")[1]
    assert str(info.value) == (
        f"{prefix}.keys[1]: the same name and key ID (acme.example/release+{kid}) as "
        f"{prefix}.keys[0]: a signature line could not say which of the two keys made it"
    )
    with pytest.raises(EntryFormatError, match="the same name and key ID"):
        entry_text(make_key_set(keys=(first, second), threshold=1))


def test_duplicate_key_strings_rejected() -> None:
    vkey = RELEASE_KEY.verifier.vkey
    with pytest.raises(
        EntryFormatError, match=r"key_set.keys\[1\]: the same public key as key_set.keys\[0\]"
    ):
        entry_text(make_key_set(keys=(vkey, vkey), threshold=1))


def test_max_keys_accepted() -> None:
    keys = tuple(generate_key(f"acme.example/k{i}").verifier.vkey for i in range(MAX_KEYS))
    body = make_admission(keys=keys, threshold=MAX_KEYS)
    assert parse_entry(sign_entry(body, [OPERATOR_KEY])).body == body


# --- entry structure ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("firmlog/release/v2\n{}\n", "entry type line: expected one of firmlog/release/v1, "),
        ("firmlog/release/v1 \n{}\n", 'got "firmlog/release/v1 "'),
        ("\n{}\n", "entry type line: expected one of firmlog/release/v1, firmlog/revocation/v1"),
        ("firmlog/release/v1\n", "firmlog/release/v1 entry: expected 2 lines"),
        ("firmlog/release/v1\n{}\nextra\n", "expected 2 lines (the type and one line of canon"),
        ("firmlog/release/v1\n{}", "entry text: expected a final newline"),
        ("firmlog/release/v1\n[]\n", "release: expected a JSON object, got an array of 0"),
        ("firmlog/release/v1\n\n", "release: invalid JSON at byte 0: expected a JSON value"),
        ('firmlog/revocation/v1\n{"a": 1}\n', "revocation: not canonical JSON (RFC 8785): at"),
        ('firmlog/keys/v1\n{"threshold":1.0}\n', "key_set: invalid JSON at byte 14: fractions"),
        (
            'firmlog/vendor/v1\n{"vendor":"a","vendor":"a"}\n',
            'vendor_admission: invalid JSON at byte 14: duplicate member name "vendor"',
        ),
    ],
)
def test_entry_text_structure(text: str, message: str) -> None:
    with pytest.raises(EntryFormatError) as info:
        parse_entry_text(text)
    assert message in str(info.value)


def test_parse_entry_requires_a_signed_note() -> None:
    text = entry_text(make_release()).encode()
    with pytest.raises(EntryFormatError, match="entry is not a signed note: note has no blank"):
        parse_entry(text)
    with pytest.raises(EntryFormatError, match="entry is not a signed note: "):
        parse_entry(text + b"\n")
    with pytest.raises(EntryFormatError, match="entry is not a signed note: "):
        parse_entry(b"\xff" + sign_entry(make_release(), [RELEASE_KEY]))
    with pytest.raises(TypeError):
        parse_entry(text.decode())  # type: ignore[arg-type]


def test_parse_entry_rejects_bad_json_inside_a_valid_note() -> None:
    raw = sign_note(f"{RELEASE_V1}\n{{ }}\n", [RELEASE_KEY])
    with pytest.raises(EntryFormatError, match=r"release: not canonical JSON \(RFC 8785\)"):
        parse_entry(raw)


def test_size_limit() -> None:
    with pytest.raises(EntryFormatError) as info:
        parse_entry(b"x" * 17000)
    assert str(info.value) == "entry is 17000 bytes: the limit is 16384"
    raw = sign_entry(make_release(), [RELEASE_KEY])
    with pytest.raises(EntryFormatError, match=f"entry is {len(raw)} bytes: the limit is 100"):
        parse_entry(raw, max_size=100)
    assert parse_entry(raw, max_size=len(raw)).raw == raw
    # A big entry is refused before it is signed ...
    big = make_release(changelog="x" * 8192, fixes=tuple(f"CVE-2025-{i:05d}" for i in range(512)))
    with pytest.raises(EntryFormatError, match=r"entry is 1\d{4} bytes: the limit is 16384"):
        entry_text(big)

    # ... and so is one whose signatures push it over the limit.
    def unchecked_size(body: Release) -> int:
        return len(text_of(RELEASE_V1, entry_json(body)).encode())

    fixes: tuple[str, ...] = ()
    while unchecked_size(make_release(changelog="x" * 8192, fixes=fixes)) <= 16384:
        fixes = tuple(f"CVE-2025-{i:05d}" for i in range(len(fixes) + 1))
    over = unchecked_size(make_release(changelog="x" * 8192, fixes=fixes)) - 16384
    fits = make_release(changelog="x" * (8192 - over), fixes=fixes)
    assert len(entry_text(fits).encode()) == DEFAULT_MAX_ENTRY_SIZE  # the text alone fits
    with pytest.raises(EntryFormatError, match=r"entry is 16\d{3} bytes: the limit is 16384"):
        sign_entry(fits, [RELEASE_KEY])


def test_sign_entry_needs_a_signer() -> None:
    with pytest.raises(ValueError, match="at least one signer"):
        sign_entry(make_release(), [])


# --- signatures and thresholds -------------------------------------------------------


def _with_lines(raw: bytes, *lines: str) -> bytes:
    return raw + "".join(lines).encode()


def test_one_of_one() -> None:
    entry = parse_entry(sign_entry(make_release(), [RELEASE_KEY]))
    assert verify_entry_signatures(entry, [RELEASE_KEY.verifier], 1) == (RELEASE_KEY.verifier.vkey,)


def test_two_of_three() -> None:
    entry = parse_entry(sign_entry(make_release(), [SPARE_KEY, RELEASE_KEY]))
    assert verify_entry_signatures(entry, VENDOR_KEYS, 2) == (
        RELEASE_KEY.verifier.vkey,
        SPARE_KEY.verifier.vkey,
    )
    entry = parse_entry(sign_entry(make_release(), [RELEASE_KEY, SECURITY_KEY, SPARE_KEY]))
    assert len(verify_entry_signatures(entry, VENDOR_KEYS, 3)) == 3


def test_below_threshold() -> None:
    entry = parse_entry(sign_entry(make_release(), [RELEASE_KEY]))
    with pytest.raises(EntryPolicyError) as info:
        verify_entry_signatures(entry, VENDOR_KEYS, 2)
    assert str(info.value) == (
        "release is signed by 1 of the vendor's keys: threshold is 2 (signed: acme.example/release)"
    )


def test_no_key_of_the_set_signed() -> None:
    entry = parse_entry(sign_entry(make_revocation(), [FOREIGN_KEY]))
    with pytest.raises(EntryPolicyError) as info:
        verify_entry_signatures(entry, VENDOR_KEYS, 1)
    assert str(info.value) == (
        "revocation is signed by 0 of the vendor's keys: threshold is 1 (signed: none)"
    )
    admission = parse_entry(sign_entry(make_admission(), [RELEASE_KEY]))
    with pytest.raises(EntryPolicyError, match="vendor admission is signed by 0 of the operator's"):
        verify_entry_signatures(admission, [OPERATOR_KEY.verifier], 1)


def test_duplicated_signature_counts_once() -> None:
    raw = sign_entry(make_release(), [RELEASE_KEY])
    entry = parse_entry(raw)
    doubled = parse_entry(_with_lines(raw, entry.signatures[0].line()))
    assert len(doubled.signatures) == 2
    with pytest.raises(EntryPolicyError, match="signed by 1 of the vendor's keys: threshold is 2"):
        verify_entry_signatures(doubled, VENDOR_KEYS, 2)
    assert verify_entry_signatures(doubled, VENDOR_KEYS, 1) == (RELEASE_KEY.verifier.vkey,)


def test_one_key_under_two_names_counts_once() -> None:
    alias_name = "acme.example/alias"
    alias = Ed25519Signer(
        alias_name, key_id(alias_name, b"\x01" + RELEASE_KEY.verifier.public_key), RELEASE_KEY.seed
    )
    entry = parse_entry(sign_entry(make_release(), [RELEASE_KEY, alias]))
    keys = [RELEASE_KEY.verifier, alias.verifier, SECURITY_KEY.verifier]
    with pytest.raises(EntryPolicyError, match="signed by 1 of the vendor's keys: threshold is 2"):
        verify_entry_signatures(entry, keys, 2)
    by_alias = parse_entry(sign_entry(make_release(), [alias]))
    assert verify_entry_signatures(by_alias, keys, 1) == (alias.verifier.vkey,)


def test_forged_signature_by_a_set_key() -> None:
    raw = sign_entry(make_release(), [RELEASE_KEY])
    other = parse_entry(sign_entry(make_release(version="9.9.9"), [SECURITY_KEY]))
    forged = parse_entry(_with_lines(raw, other.signatures[0].line()))  # valid over another text
    with pytest.raises(
        SignatureError, match=r"release: invalid signature by known key acme\.example/security"
    ):
        verify_entry_signatures(forged, VENDOR_KEYS, 1)
    # A key outside the set is not consulted, so its bad signature does not matter.
    assert verify_entry_signatures(forged, [RELEASE_KEY.verifier], 1) == (
        RELEASE_KEY.verifier.vkey,
    )
    garbage = Signature(SECURITY_KEY.name, SECURITY_KEY.key_id, b"\x00" * 64)
    with pytest.raises(SignatureError):
        verify_entry_signatures(parse_entry(_with_lines(raw, garbage.line())), VENDOR_KEYS, 1)


def test_foreign_signatures_are_ignored() -> None:
    raw = sign_entry(make_release(), [FOREIGN_KEY, RELEASE_KEY])
    bogus = Signature(FOREIGN_KEY.name, FOREIGN_KEY.key_id ^ 1, b"\x01" * 64)  # unknown key ID
    impostor = Signature(RELEASE_KEY.name, RELEASE_KEY.key_id ^ 1, b"\x02" * 64)  # same name
    entry = parse_entry(_with_lines(raw, bogus.line(), impostor.line()))
    assert verify_entry_signatures(entry, VENDOR_KEYS, 1) == (RELEASE_KEY.verifier.vkey,)
    with pytest.raises(EntryPolicyError, match=r"signed by 1 .* threshold is 2"):
        verify_entry_signatures(entry, VENDOR_KEYS, 2)


def test_threshold_misuse() -> None:
    entry = parse_entry(sign_entry(make_release(), [RELEASE_KEY]))
    with pytest.raises(ValueError, match=r"threshold 0 is not 1\.\.3"):
        verify_entry_signatures(entry, VENDOR_KEYS, 0)
    with pytest.raises(ValueError, match=r"threshold 2 is not 1\.\.1"):
        verify_entry_signatures(entry, [RELEASE_KEY.verifier, RELEASE_KEY.verifier], 2)
    with pytest.raises(ValueError, match=r"threshold 1 is not 1\.\.0"):
        verify_entry_signatures(entry, [], 1)


def test_signature_over_one_type_cannot_be_read_as_another() -> None:
    # keys/v1 and vendor/v1 bodies differ only by the serial; the type line is
    # signed, so a relabelled entry is malformed or badly signed.
    raw = sign_entry(make_key_set(), [RELEASE_KEY, SECURITY_KEY])
    with pytest.raises(EntryFormatError, match=r"vendor_admission\.serial: unknown field"):
        parse_entry(raw.replace(KEYS_V1.encode(), VENDOR_V1.encode(), 1))
    admission = sign_entry(make_admission(keys=VENDOR_KEYS_VKEYS, threshold=2), [RELEASE_KEY])
    relabelled = admission.replace(VENDOR_V1.encode(), KEYS_V1.encode(), 1)
    relabelled = relabelled.replace(b'"threshold":2', b'"serial":2,"threshold":2', 1)
    entry = parse_entry(relabelled)
    assert isinstance(entry.body, KeySet)
    with pytest.raises(SignatureError, match="key set: invalid signature by known key"):
        verify_entry_signatures(entry, VENDOR_KEYS, 1)
    # A release relabelled as a revocation is not even well-formed.
    release = sign_entry(make_release(), [RELEASE_KEY])
    with pytest.raises(EntryFormatError, match=r"revocation\.build: unknown field"):
        parse_entry(release.replace(RELEASE_V1.encode(), REVOCATION_V1.encode(), 1))


# --- properties -------------------------------------------------------------------

_LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_VENDOR = st.lists(_LABEL, min_size=1, max_size=3).map(".".join)
_PRINTABLE = st.characters(categories=["L", "M", "N", "P", "S"], include_characters=" ")
_NAME = st.text(_PRINTABLE, min_size=1, max_size=20).filter(
    lambda s: s == s.strip() and s.isprintable()
)
_NO_SPACE_NAME = st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=20)
_TEXT = st.text(
    st.characters(categories=["L", "M", "N", "P", "S", "Zs"], include_characters="\n\t"),
    max_size=40,
).filter(lambda s: not any(c in s for c in "\u061c\u2028\u2029"))
_HEX64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
_TIME = st.datetimes(
    min_value=datetime.datetime(1970, 1, 1), max_value=datetime.datetime(2199, 12, 31)
).map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"))
_URI = st.builds(
    lambda scheme, path: f"{scheme}:{path}",
    st.sampled_from(["https", "git+ssh", "urn", "s3", "HTTP"]),
    st.from_regex(r"(//[a-z0-9.-]{1,12})?/[A-Za-z0-9._~/%-]{0,20}", fullmatch=True).filter(
        lambda p: "%" not in p
    ),
)
_CVES = st.lists(
    st.from_regex(r"CVE-[0-9]{4}-[0-9]{4,7}", fullmatch=True), unique=True, max_size=4
).map(tuple)
_POOL = [generate_key(f"acme.example/k{i}") for i in range(6)]
_RELEASES = st.builds(
    Release,
    vendor=_VENDOR,
    product=_NAME,
    hardware_revisions=st.lists(_NAME, unique=True, max_size=3).map(tuple),
    version=_NAME,
    security_version=st.integers(0, MAX_SAFE_INTEGER),
    channel=_NAME,
    image=st.builds(Image, sha256=_HEX64, size=st.integers(1, MAX_SAFE_INTEGER)),
    build=st.builds(
        Build,
        time=_TIME,
        source_uri=_URI,
        source_commit=_NO_SPACE_NAME,
        builder=_NAME,
        reproducible=st.booleans(),
    ),
    sbom_sha256=st.none() | _HEX64,
    fixes=_CVES,
    changelog=_TEXT,
)
_REVOCATIONS = st.builds(
    Revocation,
    vendor=_VENDOR,
    release_id=_HEX64,
    reason=_TEXT.filter(bool),
    advisory=st.just("") | _NAME,
)


@st.composite
def _key_sets(draw: st.DrawFn, cls: type[KeySet] | type[VendorAdmission]) -> EntryBody:
    keys = draw(st.lists(st.sampled_from(_POOL), min_size=1, max_size=4, unique=True))
    vendor = draw(_VENDOR)
    vkeys = tuple(k.verifier.vkey for k in keys)
    threshold = draw(st.integers(1, len(keys)))
    if cls is KeySet:
        serial = draw(st.integers(2, MAX_SAFE_INTEGER))
        return KeySet(vendor=vendor, keys=vkeys, threshold=threshold, serial=serial)
    return VendorAdmission(vendor=vendor, keys=vkeys, threshold=threshold)


_BODIES = _RELEASES | _REVOCATIONS | _key_sets(KeySet) | _key_sets(VendorAdmission)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_BODIES, st.lists(st.sampled_from(_POOL), min_size=1, max_size=3, unique=True))
def test_generated_bodies_round_trip(body: EntryBody, signers: list[Ed25519Signer]) -> None:
    raw = sign_entry(body, signers)
    entry = parse_entry(raw)
    assert entry.body == body
    assert entry_text(entry.body) == entry.text
    verifiers = [s.verifier for s in _POOL]
    signed = verify_entry_signatures(entry, verifiers, len(signers))
    assert sorted(signed) == sorted(s.verifier.vkey for s in signers)


_SAMPLES = [sign_entry(b, [RELEASE_KEY]) for b in _ALL_BODIES]


@settings(max_examples=200, deadline=None)
@given(mutated(*_SAMPLES))
def test_fuzz_mutated_lines(data: bytes) -> None:
    try:
        entry = parse_entry(data)
    except FirmlogError:
        return
    # Whatever parses is its canonical text and its signature lines, exactly.
    assert entry_text(entry.body) == entry.text
    assert data == f"{entry.text}\n{''.join(s.line() for s in entry.signatures)}".encode()


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_SAMPLES), st.data())
def test_fuzz_mutated_entries(raw: bytes, data: st.DataObject) -> None:
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(mutated) - 1))
        op = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = data.draw(st.integers(0, 255) | st.sampled_from(b'\n "\\,:{}[]0-.aA\xe2'))
        if op == "insert":
            mutated[at:at] = bytes([byte])
        elif op == "delete":
            del mutated[at]
        else:
            mutated[at] = byte
    try:
        entry = parse_entry(bytes(mutated))
    except FirmlogError:
        return
    # Whatever parses is exactly the canonical text of its body.
    assert entry_text(entry.body) == entry.text
    with contextlib.suppress(FirmlogError):
        verify_entry_signatures(entry, [RELEASE_KEY.verifier], 1)
