"""Releases and entries to log: the one release factory of the tests.

A test that cares about a field says so by passing it; every other field has
a valid default here.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from firmlog.client.entries import Build, Image, Release, VendorAdmission, sign_entry
from firmlog.client.keys import Ed25519Signer

VENDOR = "acme.example"
VENDOR_KEY = Ed25519Signer.from_seed("acme.example/release", b"\x31" * 32)
IMAGE = b"\x7fELF firmware image " * 1000


def image_of(image: bytes) -> Image:
    """The ``image`` field naming these bytes."""
    return Image(sha256=hashlib.sha256(image).hexdigest(), size=len(image))


def release(
    version: str = "1.0", vendor: str = VENDOR, *, image: bytes = IMAGE, **changes: Any
) -> Release:
    """A valid release of ``vendor``'s router-9000 for any hardware revision, naming
    ``image``; its security version is its major version. ``changes`` replace fields."""
    body = Release(
        vendor=vendor,
        product="router-9000",
        hardware_revisions=(),
        version=version,
        security_version=int(version.split(".", maxsplit=1)[0]),
        channel="stable",
        image=image_of(image),
        build=Build(
            time="2026-11-01T12:00:00Z",
            source_uri="https://git.acme.example/router.git",
            source_commit="9f1c2e7",
            builder="acme-ci",
            reproducible=True,
        ),
    )
    return replace(body, **changes)


def admission(
    operator: Ed25519Signer, vendor: str = VENDOR, *keys: Ed25519Signer, threshold: int = 1
) -> bytes:
    """The operator's admission of ``vendor`` with ``keys`` (VENDOR_KEY if none)."""
    vkeys = tuple(k.verifier.vkey for k in keys or (VENDOR_KEY,))
    return sign_entry(VendorAdmission(vendor, vkeys, threshold), [operator])
