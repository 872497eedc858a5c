"""Device verification benchmark: ``verify_update`` against the cost of its signatures.

Run: ``.venv/bin/python loadtests/bench_verify.py`` (about 20 s; ``--profile`` adds
a cProfile of verify_update).

The bundle carries 1 log signature and 2 witness cosignatures (a policy
requiring both), the release 1 vendor signature: 4 Ed25519 verifications
are unavoidable. The floor is 4 raw verifications with the cryptography
library and pre-loaded keys (150-byte message). The image is 64 bytes, so
hashing it is negligible: this measures everything around the signatures
(parsing the bundle, the checkpoint and the canonical-JSON entry, the
inclusion proof of a tree of about a million leaves). Goal: ratio >= 0.8.

Each figure is the median of 15 repetitions of about ``--seconds`` each,
interleaved with the floor's (which of the two runs first alternates), in ops
per second of this process's CPU time; the ratio is the median of the 15
ratios of a repetition to the floor's next to it. On a shared machine, short
repetitions close together see the same load, so their ratios vary less.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmlog.client.bundle import ProofBundle
from firmlog.client.checkpoint import Checkpoint, sign_checkpoint
from firmlog.client.cosignature import CosignatureSigner, cosign
from firmlog.client.entries import (
    Build,
    Image,
    Release,
    parse_entry,
    sign_entry,
    verify_entry_signatures,
)
from firmlog.client.keys import Ed25519Signer
from firmlog.client.merkle import leaf_hash, verify_inclusion
from firmlog.client.policy import parse_policy
from firmlog.client.verify import DeviceState, PinnedVendorKeys, verify_update

REPETITIONS = 15
TREE_SIZE = 1_048_583  # index 1_000_000: a 20-hash inclusion proof


def _batch(fn: Callable[[], object], seconds: float) -> int:
    n, start = 0, time.process_time()
    while time.process_time() - start < 0.05:
        fn()
        n += 1
    return max(1, int(seconds * n / (time.process_time() - start)))


def _rate(fn: Callable[[], object], batch: int) -> float:
    start = time.process_time()
    for _ in range(batch):
        fn()
    return batch / (time.process_time() - start)


def measure(
    fn: Callable[[], object], floor: Callable[[], object], seconds: float
) -> tuple[float, float, float]:
    """Median ops/s of ``fn``, of ``floor``, and the median of their ratios."""
    fn_batch, floor_batch = _batch(fn, seconds), _batch(floor, seconds)
    rates, floors, ratios = [], [], []
    for repetition in range(REPETITIONS):
        if repetition % 2:
            rate = _rate(fn, fn_batch)
            floor_rate = _rate(floor, floor_batch)
        else:
            floor_rate = _rate(floor, floor_batch)
            rate = _rate(fn, fn_batch)
        rates.append(rate)
        floors.append(floor_rate)
        ratios.append(rate / floor_rate)
    return statistics.median(rates), statistics.median(floors), statistics.median(ratios)


def _siblings(index: int, size: int) -> list[bytes]:
    """Arbitrary sibling hashes, as many as an inclusion proof of ``index`` in ``size`` has."""
    inner = (index ^ (size - 1)).bit_length()
    count = inner + (index >> inner).bit_count()
    return [hashlib.sha256(b"%d" % i).digest() for i in range(count)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.2, help="length of one repetition")
    parser.add_argument("--profile", action="store_true", help="cProfile verify_update")
    args = parser.parse_args(argv)

    origin = "log.firmlog.example/main"
    log = Ed25519Signer.from_seed(origin, os.urandom(32))
    w1 = CosignatureSigner.from_seed("w1.witness.example", os.urandom(32))
    w2 = CosignatureSigner.from_seed("w2.witness.example", os.urandom(32))
    vendor = Ed25519Signer.from_seed("acme.example/release", os.urandom(32))
    image = os.urandom(64)
    release = Release(
        vendor="acme.example",
        product="router-9000",
        hardware_revisions=("A", "B"),
        version="2.4.1",
        security_version=7,
        channel="stable",
        image=Image(sha256=hashlib.sha256(image).hexdigest(), size=len(image)),
        build=Build(
            time="2024-06-01T08:00:00Z",
            source_uri="https://git.acme.example/router.git",
            source_commit="4f2a9c1e",
            builder="ci.acme.example",
            reproducible=True,
        ),
        fixes=("CVE-2024-3094",),
        changelog="Fixes a backdoor in the update service.",
    )
    entry = sign_entry(release, [vendor])

    # A proof for index 1_000_000 in a tree of TREE_SIZE leaves, and the root
    # it leads to (computed with the verifier: any sibling values will do).
    index = 1_000_000
    proof = _siblings(index, TREE_SIZE)
    root = _root_for(leaf_hash(entry), index, TREE_SIZE, proof)
    now = int(time.time())
    note = sign_checkpoint(Checkpoint(origin, TREE_SIZE, root), log)
    note = cosign(cosign(note, w1, now - 10), w2, now - 5)
    bundle = ProofBundle(index, tuple(proof), note, entry).format()
    policy = parse_policy(
        f"log {log.verifier.vkey}\n"
        f"witness W1 {w1.verifier.vkey}\nwitness W2 {w2.verifier.vkey}\n"
        "group both all W1 W2\nquorum both\n"
    )
    keys = PinnedVendorKeys((vendor.verifier,), 1, "acme.example")
    device = DeviceState("router-9000", 6, hardware_revision="B")

    def verify() -> object:
        return verify_update(image, bundle, policy, keys, device, now=now)

    update = verify_update(image, bundle, policy, keys, device, now=now)
    assert update.witnesses == ("W1", "W2")
    assert update.leaf_index == index

    raw_key = Ed25519PrivateKey.generate()
    raw_public = raw_key.public_key()
    message = os.urandom(150)
    raw_sig = raw_key.sign(message)

    def four_raw() -> None:
        raw_public.verify(raw_sig, message)
        raw_public.verify(raw_sig, message)
        raw_public.verify(raw_sig, message)
        raw_public.verify(raw_sig, message)

    print(
        f"bundle {len(bundle)} bytes (1 log signature, 2 cosignatures, entry of {len(entry)} "
        f"bytes with 1 vendor signature, {len(proof)}-hash inclusion proof); image 64 bytes"
    )
    print(f"{REPETITIONS} repetitions of ~{args.seconds:g} s, medians, ops per CPU second\n")
    rate, floor, ratio = measure(verify, four_raw, args.seconds)
    print(f"{'verify_update':<40}{rate:>10.0f} /s")
    print(f"{'4 raw Ed25519 verifications (floor)':<40}{floor:>10.0f} /s")
    print(f"{'ratio (goal >= 0.80)':<40}{ratio:>10.2f}\n", flush=True)

    # Where the time goes outside the signatures, each part against the floor.
    parsed = ProofBundle.parse(bundle)
    parsed_entry = parse_entry(entry)
    parts: list[tuple[str, Callable[[], object]]] = [
        ("ProofBundle.parse", lambda: ProofBundle.parse(bundle)),
        ("Policy.verify_checkpoint (3 sigs)", lambda: policy.verify_checkpoint(note, now=now)),
        ("parse_entry", lambda: parse_entry(entry)),
        (
            "verify_entry_signatures (1 sig)",
            lambda: verify_entry_signatures(parsed_entry, keys.keys, 1),
        ),
        (
            "verify_inclusion",
            lambda: verify_inclusion(leaf_hash(entry), parsed.index, TREE_SIZE, parsed.proof, root),
        ),
    ]
    floor_us = 1e6 / floor
    print(f"{'part':<40}{'us/op':>10}{'share of floor':>16}")
    for name, fn in parts:
        part_rate, _, part_ratio = measure(fn, four_raw, args.seconds / 2)
        print(f"{name:<40}{1e6 / part_rate:>10.1f}{1 / part_ratio:>15.0%}")
    print(f"{'4 raw Ed25519 verifications':<40}{floor_us:>10.1f}{1:>15.0%}")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(2000):
            verify()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return 0


def _root_for(leaf: bytes, index: int, size: int, proof: list[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 2.1.3.2, as verify_inclusion)."""
    inner = (index ^ (size - 1)).bit_length()
    h = leaf
    for level, sibling in enumerate(proof):
        if level < inner and not (index >> level) & 1:
            h = hashlib.sha256(b"\x01" + h + sibling).digest()
        else:
            h = hashlib.sha256(b"\x01" + sibling + h).digest()
    return h


if __name__ == "__main__":
    sys.exit(main())
