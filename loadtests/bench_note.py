"""Signed-note micro-benchmarks: how close note handling gets to raw Ed25519.

Run: ``.venv/bin/python loadtests/bench_note.py`` (under a minute).

Each measurement runs 5 repetitions of about ``--seconds`` each, interleaved
with repetitions of its floor, and reports medians. Rates are per second of
this process's CPU time, so other load on the machine skews them less. The
floors are what the cryptography library does alone with a pre-loaded key
and a 150-byte message: opening a note cannot beat one raw verification per
signature, signing cannot beat one raw signature.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmlog.client.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from firmlog.client.cosignature import CosignatureSigner, cosign
from firmlog.client.keys import Ed25519Signer
from firmlog.client.note import sign_note
from firmlog.client.policy import parse_policy

REPETITIONS = 5


def _batch(fn: Callable[[], object], seconds: float) -> int:
    """How many calls of ``fn`` take about ``seconds`` (after a short warm-up)."""
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
    fn: Callable[[], object], floor: Callable[[], object], per_floor: int, seconds: float
) -> tuple[float, float, float]:
    """Median ops/s of ``fn``, of its floor, and median ratio to the floor.

    Repetitions of ``fn`` and of ``floor`` are interleaved so that a noisy
    machine slows both alike; ``per_floor`` is how many floor operations one
    call of ``fn`` must do at least.
    """
    fn_batch, floor_batch = _batch(fn, seconds), _batch(floor, seconds)
    rates, floors, ratios = [], [], []
    for _ in range(REPETITIONS):
        floor_rate = _rate(floor, floor_batch) / per_floor
        rate = _rate(fn, fn_batch)
        rates.append(rate)
        floors.append(floor_rate)
        ratios.append(rate / floor_rate)
    return statistics.median(rates), statistics.median(floors), statistics.median(ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one repetition")
    args = parser.parse_args()
    seconds: float = args.seconds

    # Floors: raw Ed25519 with a pre-loaded key over a 150-byte message.
    raw_key = Ed25519PrivateKey.generate()
    raw_public = raw_key.public_key()
    message = os.urandom(150)
    raw_sig = raw_key.sign(message)

    # A realistic checkpoint, its log key, two witnesses and a policy needing both.
    origin = "firmlog.example/log"
    log = Ed25519Signer.from_seed(origin, os.urandom(32))
    w1 = CosignatureSigner.from_seed("w1.witness.example", os.urandom(32))
    w2 = CosignatureSigner.from_seed("w2.witness.example", os.urandom(32))
    checkpoint = Checkpoint(origin, 12_345_678, hashlib.sha256(b"root").digest())
    note = sign_checkpoint(checkpoint, log)
    now = int(time.time())
    cosigned = cosign(cosign(note, w1, now), w2, now)
    policy = parse_policy(
        f"log {log.verifier.vkey}\n"
        f"witness W1 {w1.verifier.vkey}\nwitness W2 {w2.verifier.vkey}\n"
        "group both all W1 W2\nquorum both\n"
    )
    text = checkpoint.to_text()
    # Sanity: everything verifies before it is timed.
    assert open_checkpoint(note, log.verifier).checkpoint == checkpoint
    assert policy.verify_checkpoint(cosigned, now=now).witnesses == ("W1", "W2")

    print(f"signed note: {len(note)} bytes; with 2 cosignatures: {len(cosigned)} bytes")
    print(f"{REPETITIONS} repetitions of ~{seconds:g} s each, median ops per CPU second\n")

    def raw_verify() -> None:
        raw_public.verify(raw_sig, message)

    def raw_sign() -> None:
        raw_key.sign(message)

    rows = [
        ("raw Ed25519 verify (floor)", (raw_verify, raw_verify, 1), "1 verify"),
        (
            "open_checkpoint, 1 log signature",
            (lambda: open_checkpoint(note, log.verifier), raw_verify, 1),
            "1 verify",
        ),
        (
            "Policy.verify_checkpoint, 1 log + 2 cosig",
            (lambda: policy.verify_checkpoint(cosigned, now=now), raw_verify, 3),
            "3 verifies",
        ),
        ("raw Ed25519 sign (floor)", (raw_sign, raw_sign, 1), "1 sign"),
        ("sign_note, 1 signer", (lambda: sign_note(text, [log]), raw_sign, 1), "1 sign"),
    ]
    print(f"{'operation':<44}{'ops/s':>10}{'floor ops/s':>13}{'ratio':>8}  floor")
    for name, (fn, floor, per_floor), what in rows:
        rate, floor_rate, ratio = measure(fn, floor, per_floor, seconds)
        print(f"{name:<44}{rate:>10.0f}{floor_rate:>13.0f}{ratio:>8.2f}  {what}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
