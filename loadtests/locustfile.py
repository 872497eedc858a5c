"""firmlog under the load of its three kinds of users, for locust.

- :class:`Manufacturer` submits releases, each a new signed ``firmlog/release/v1``
  entry of one of the admitted vendors, and waits for its proof bundle (a
  durable submission: the log answers once the entry is integrated);
- :class:`Device` does what an update agent does: reads the checkpoint, fetches
  the bundle of a release it is offered, and now and then a full hash tile;
- :class:`Researcher` searches releases by vendor, product, CVE and image
  digest, pages through the results and opens the page and a vendor's keys.

The log and what it already holds are described by the JSON file named by
``FIRMLOG_LOCUST_FIXTURE``, which ``loadtests/run_locust.py`` writes after it
has started a log, admitted the vendors and logged the first releases: the
vendors with their signing seeds, and the releases with their ids, image
digests and CVEs. Run it through ``./scripts/locust`` (see run_locust.py).
"""

from __future__ import annotations

import itertools
import json
import os
import random
from dataclasses import replace
from typing import Any

from load_entries import new_release
from locust import HttpUser, between, events, task

from firmlog.client.entries import Image, sign_entry
from firmlog.client.keys import Ed25519Signer

_FIXTURE: dict[str, Any] = {}
_SERIAL = itertools.count()


@events.init.add_listener
def _load_fixture(environment: Any, **_: Any) -> None:
    path = os.environ.get("FIRMLOG_LOCUST_FIXTURE")
    if not path:
        raise RuntimeError("set FIRMLOG_LOCUST_FIXTURE (loadtests/run_locust.py does)")
    with open(path, encoding="utf-8") as f:
        _FIXTURE.update(json.load(f))


class Manufacturer(HttpUser):
    """Submits a new release now and then and waits for its proof bundle."""

    weight = 1
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        vendor = random.choice(_FIXTURE["vendors"])
        self.vendor = vendor["name"]
        self.key = Ed25519Signer.from_seed(vendor["key_name"], bytes.fromhex(vendor["seed"]))
        self.template = new_release(self.vendor, "0", "00" * 32)

    @task
    def submit_release(self) -> None:
        n = next(_SERIAL)
        version = f"9.{os.getpid()}.{n}"
        digest = f"{os.getpid():08x}{n:056x}"
        entry = sign_entry(
            replace(self.template, version=version, image=Image(sha256=digest, size=4 << 20)),
            [self.key],
        )
        with self.client.post(
            "/v1/entries", data=entry, name="POST /v1/entries", catch_response=True
        ) as resp:
            if resp.status_code != 200 or b"tlog-proof" not in resp.content[:64]:
                resp.failure(f"{resp.status_code}: {resp.text[:200]}")


class Device(HttpUser):
    """An update agent: the checkpoint, the bundle of an offered release, a tile."""

    weight = 6
    wait_time = between(0.05, 0.2)

    @task(4)
    def bundle_of_an_offered_release(self) -> None:
        entry = random.choice(_FIXTURE["releases"])
        self.client.get(f"/v1/bundle/{entry['id']}", name="GET /v1/bundle/[id]")

    @task(2)
    def checkpoint(self) -> None:
        self.client.get("/checkpoint", name="GET /checkpoint")

    @task(1)
    def full_tile(self) -> None:
        tiles = _FIXTURE["full_tiles"]
        if tiles:
            self.client.get(f"/tile/0/{random.choice(tiles)}", name="GET /tile/0/[n]")


class Researcher(HttpUser):
    """Searches the releases, pages through them, looks at the page and the keys."""

    weight = 2
    wait_time = between(0.2, 1.0)

    @task(3)
    def search_by_vendor_and_page(self) -> None:
        vendor = random.choice(_FIXTURE["vendors"])["name"]
        url = f"/v1/releases?vendor={vendor}&limit=50"
        for _ in range(3):  # the first pages, following the cursor
            with self.client.get(url, name="GET /v1/releases?vendor", catch_response=True) as r:
                if r.status_code != 200:
                    r.failure(f"{r.status_code}: {r.text[:200]}")
                    return
                cursor = r.json().get("next_cursor")
            if not cursor:
                return
            url = f"/v1/releases?vendor={vendor}&limit=50&cursor={cursor}"

    @task(2)
    def search_by_digest(self) -> None:
        digest = random.choice(_FIXTURE["releases"])["sha256"]
        self.client.get(f"/v1/releases?image_sha256={digest}", name="GET /v1/releases?digest")

    @task(1)
    def search_by_cve(self) -> None:
        self.client.get("/v1/releases?cve=CVE-2026-1000&limit=20", name="GET /v1/releases?cve")

    @task(1)
    def vendor_keys(self) -> None:
        vendor = random.choice(_FIXTURE["vendors"])["name"]
        self.client.get(f"/v1/vendors/{vendor}", name="GET /v1/vendors/[vendor]")

    @task(1)
    def page(self) -> None:
        self.client.get("/", name="GET /")
