"""The releases the locust scenarios submit and seed (without importing locust)."""

from __future__ import annotations

from firmlog.client.entries import Build, Image, Release


def new_release(vendor: str, version: str, image_sha256: str) -> Release:
    return Release(
        vendor=vendor,
        product="router-9000",
        hardware_revisions=(),
        version=version,
        security_version=1,
        channel="stable",
        image=Image(sha256=image_sha256, size=4 << 20),
        build=Build(
            time="2026-11-29T12:00:00Z",
            source_uri="https://git.example/router.git",
            source_commit="9f1c2e7",
            builder="ci",
            reproducible=True,
        ),
        fixes=("CVE-2026-1000",),
    )
