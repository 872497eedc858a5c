"""Merkle micro-benchmarks for firmlog.client.merkle and firmlog.client.tiles.

Run:  .venv/bin/python loadtests/bench_merkle.py

Measures, in one run (about a minute on 2 cores):

- the physical floor: raw hashlib SHA-256 of 33-byte inputs per second (a leaf
  hash of a 32-byte entry, or half a node hash, costs about this much);
- leaf_hash, CompactRange.append (the sequencer's hot path);
- inclusion and consistency proof generation over a TileHashReader at tree
  size 10**6 with every tile in an in-memory dict (no I/O: this is the CPU
  cost of a proof), with a warm shared TileCache and a new reader per proof
  (what the server does per request), with one reader reused, and cold
  (every tile fetched and expanded again);
- verify_inclusion, verify_consistency;
- pymerkle 7 (InmemoryTree) on the same 10**5 entries: append, prove and
  verify inclusion and consistency, against ours on a 10**5 tree.

Every figure is the median of 5 repetitions (time.perf_counter). The
"sha256 eq." column is the cost of one operation in raw 33-byte SHA-256 calls
(floor rate / rate); "vs pymerkle" is our rate over pymerkle's.

pymerkle compatibility: pymerkle's default hashing (security=True, i.e. NOT
disable_security) prefixes leaves with 0x00 and nodes with 0x01 and folds the
tree as RFC 6962 does, and its empty root is SHA-256(""); this script checks
that its roots equal ours at several sizes and that its inclusion path, minus
the leaf hash it carries first, equals our proof. With disable_security=True
the prefixes are dropped and the roots differ (also checked). Its indexes
count from 1.
"""

from __future__ import annotations

import hashlib
import os
import platform
import random
import ssl
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from firmlog.client.merkle import (
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from firmlog.client.tiles import Tile, TileCache, TileHashReader

REPEATS = 5
BIG = 10**6  # tree size for the tile-backed proof benchmarks
SMALL = 10**5  # tree size for the comparison with pymerkle
SEED = 6962


def median_rate(run: Callable[[], int]) -> float:
    """Median over REPEATS of ops/s, where run() does some ops and returns how many."""
    rates = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        ops = run()
        rates.append(ops / (time.perf_counter() - t0))
    return statistics.median(rates)


def build_tiles(leaves: Sequence[bytes]) -> tuple[dict[tuple[int, int], bytes], CompactRange]:
    """Hash tiles from CompactRange.append output, as the sequencer writes them."""
    store: dict[tuple[int, int], bytearray] = {}
    cr = CompactRange()
    for h in leaves:
        for level, index, sub in cr.append(h):
            if not level & 7:
                key = (level >> 3, index >> 8)
                if key not in store:
                    store[key] = bytearray()
                store[key] += sub
    return {k: bytes(v) for k, v in store.items()}, cr


def dict_fetch(store: dict[tuple[int, int], bytes]) -> Callable[[Sequence[Tile]], list[bytes]]:
    def fetch(tiles: Sequence[Tile]) -> list[bytes]:
        return [store[(t.level, t.index)] for t in tiles]

    return fetch


class Table:
    def __init__(self, floor: float) -> None:
        self.floor = floor
        self.rows: list[tuple[str, float, float | None]] = []

    def add(self, name: str, rate: float, pymerkle_rate: float | None = None) -> None:
        self.rows.append((name, rate, pymerkle_rate))
        print(f"  measured {name}: {rate:,.0f}/s", file=sys.stderr, flush=True)

    def print(self) -> None:
        head = (
            f"{'operation':<62} {'ops/s':>12} {'us/op':>9} {'sha256 eq.':>10} {'vs pymerkle':>12}"
        )
        print(head)
        print("-" * len(head))
        for name, rate, pm in self.rows:
            vs = f"{rate / pm:>11.1f}x" if pm else f"{'':>12}"
            print(f"{name:<62} {rate:>12,.0f} {1e6 / rate:>9.2f} {self.floor / rate:>10.1f} {vs}")


def main() -> None:
    rng = random.Random(SEED)
    t_start = time.perf_counter()
    print(
        f"python {platform.python_version()} | {platform.machine()} | {os.cpu_count()} CPUs | "
        f"{ssl.OPENSSL_VERSION} | medians of {REPEATS} runs | "
        f"load average {os.getloadavg()[0]:.1f} (other processes skew the figures)",
        flush=True,
    )

    # -- hashing -------------------------------------------------------------------
    inputs33 = [os.urandom(33) for _ in range(200_000)]
    sha256 = hashlib.sha256

    def raw() -> int:
        for x in inputs33:
            sha256(x).digest()
        return len(inputs33)

    floor = median_rate(raw)
    table = Table(floor)
    table.add("raw hashlib.sha256(33 bytes).digest() [floor]", floor)

    entries32 = [x[:32] for x in inputs33]

    def leaves() -> int:
        for e in entries32:
            leaf_hash(e)
        return len(entries32)

    table.add("leaf_hash(32-byte entry)", median_rate(leaves))

    # -- CompactRange.append ---------------------------------------------------------
    small_entries = [i.to_bytes(32, "big") for i in range(SMALL)]
    small_leaves = [leaf_hash(e) for e in small_entries]

    def append() -> int:
        cr = CompactRange()
        for h in small_leaves:
            cr.append(h)
        return len(small_leaves)

    table.add(f"CompactRange.append (leaf hash given; {SMALL:,} leaves)", median_rate(append))

    def append_entries() -> int:
        cr = CompactRange()
        for e in small_entries:
            cr.append(leaf_hash(e))
        return len(small_entries)

    ours_append_entries = median_rate(append_entries)

    # -- proofs over tiles at 10**6 ---------------------------------------------------
    print(f"  building tiles for {BIG:,} leaves ...", file=sys.stderr, flush=True)
    big_leaves = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(BIG)]
    big_store, big_cr = build_tiles(big_leaves)
    big_root = big_cr.root()
    fetch = dict_fetch(big_store)
    cache = TileCache(4096)
    indexes = [rng.randrange(BIG) for _ in range(2000)]
    for i in indexes:  # warm the shared cache with every full tile these proofs use
        inclusion_proof(i, BIG, TileHashReader(BIG, fetch, cache))

    def prove_new_reader() -> int:
        for i in indexes:
            inclusion_proof(i, BIG, TileHashReader(BIG, fetch, cache))
        return len(indexes)

    table.add(
        f"inclusion_proof @{BIG:,}, warm TileCache, new reader per proof",
        median_rate(prove_new_reader),
    )

    def prove_one_reader() -> int:
        reader = TileHashReader(BIG, fetch, cache)
        for i in indexes:
            inclusion_proof(i, BIG, reader)
        return len(indexes)

    table.add(
        f"inclusion_proof @{BIG:,}, warm TileCache, one reader", median_rate(prove_one_reader)
    )

    cold_indexes = indexes[:300]

    def prove_cold() -> int:
        for i in cold_indexes:
            inclusion_proof(i, BIG, TileHashReader(BIG, fetch, TileCache(1)))
        return len(cold_indexes)

    table.add(f"inclusion_proof @{BIG:,}, cold (every tile expanded)", median_rate(prove_cold))

    proofs = [
        (big_leaves[i], i, inclusion_proof(i, BIG, TileHashReader(BIG, fetch, cache)))
        for i in indexes
    ]
    for lh, i, p in proofs[:50]:
        verify_inclusion(lh, i, BIG, p, big_root)

    def verify_incl() -> int:
        for lh, i, p in proofs:
            verify_inclusion(lh, i, BIG, p, big_root)
        return len(proofs)

    table.add(f"verify_inclusion @{BIG:,}", median_rate(verify_incl))

    old_sizes = [rng.randrange(1, BIG) for _ in range(1000)]
    for m in old_sizes:
        consistency_proof(m, BIG, TileHashReader(BIG, fetch, cache))

    def prove_cons() -> int:
        for m in old_sizes:
            consistency_proof(m, BIG, TileHashReader(BIG, fetch, cache))
        return len(old_sizes)

    table.add(
        f"consistency_proof (random m) -> {BIG:,}, warm cache, new reader",
        median_rate(prove_cons),
    )

    cons = [
        (
            m,
            tree_hash(m, TileHashReader(m, fetch, cache)),
            consistency_proof(m, BIG, TileHashReader(BIG, fetch, cache)),
        )
        for m in old_sizes
    ]
    for m, r, p in cons[:50]:
        verify_consistency(m, BIG, r, big_root, p)

    def verify_cons() -> int:
        for m, r, p in cons:
            verify_consistency(m, BIG, r, big_root, p)
        return len(cons)

    table.add(f"verify_consistency (random m) -> {BIG:,}", median_rate(verify_cons))

    # -- pymerkle 7 on the same 10**5 entries ------------------------------------------
    try:
        import pymerkle
    except ImportError:
        print("pymerkle is not installed: skipping the comparison", file=sys.stderr)
        table.print()
        return
    print(f"  pymerkle {pymerkle.__version__}: {SMALL:,} entries ...", file=sys.stderr, flush=True)

    def pm_build() -> int:
        tree = pymerkle.InmemoryTree()  # default: sha256, security on (RFC 6962 prefixes)
        for e in small_entries:
            tree.append_entry(e)
        return len(small_entries)

    pm_append = median_rate(pm_build)
    table.add(
        f"append {SMALL:,} entries: leaf_hash + CompactRange.append", ours_append_entries, pm_append
    )
    table.add(f"append {SMALL:,} entries: pymerkle InmemoryTree.append_entry", pm_append)

    pm_tree = pymerkle.InmemoryTree()
    for e in small_entries:
        pm_tree.append_entry(e)
    small_store, small_cr = build_tiles(small_leaves)
    small_fetch = dict_fetch(small_store)
    small_cache = TileCache(4096)
    small_root = small_cr.root()

    # Compatibility checks (see the module docstring).
    assert pm_tree.get_root() == small_root == root_hash(small_leaves)
    for size in (1, 2, 3, 255, 256, 12345, SMALL - 1):
        assert pm_tree.get_root(size) == root_hash(small_leaves[:size]), size
    assert pymerkle.InmemoryTree().get_root() == root_hash([])
    insecure = pymerkle.InmemoryTree(disable_security=True)
    for e in small_entries[:10]:
        insecure.append_entry(e)
    assert insecure.get_root() != root_hash(small_leaves[:10])
    for i in (0, 1, 777, SMALL - 1):
        pm_path = pm_tree.prove_inclusion(i + 1).path
        ours = inclusion_proof(i, SMALL, TileHashReader(SMALL, small_fetch, small_cache))
        assert pm_path[0] == small_leaves[i], i  # pymerkle's path starts with the leaf
        assert pm_path[1:] == ours, i
    print("  pymerkle (default config) roots and inclusion paths equal ours", file=sys.stderr)

    small_idx = [rng.randrange(SMALL) for _ in range(1000)]
    for i in small_idx:
        inclusion_proof(i, SMALL, TileHashReader(SMALL, small_fetch, small_cache))

    def pm_prove_incl() -> int:
        for i in small_idx:
            pm_tree.prove_inclusion(i + 1)
        return len(small_idx)

    def our_prove_incl() -> int:
        for i in small_idx:
            inclusion_proof(i, SMALL, TileHashReader(SMALL, small_fetch, small_cache))
        return len(small_idx)

    pm_rate = median_rate(pm_prove_incl)
    table.add(
        f"inclusion_proof @{SMALL:,} (tiles, warm cache, new reader)",
        median_rate(our_prove_incl),
        pm_rate,
    )
    table.add(f"pymerkle prove_inclusion @{SMALL:,}", pm_rate)

    pm_proofs = [(small_leaves[i], pm_tree.prove_inclusion(i + 1)) for i in small_idx]
    our_proofs = [
        (
            small_leaves[i],
            i,
            inclusion_proof(i, SMALL, TileHashReader(SMALL, small_fetch, small_cache)),
        )
        for i in small_idx
    ]

    def pm_verify_incl() -> int:
        for lh, p in pm_proofs:
            pymerkle.verify_inclusion(lh, small_root, p)
        return len(pm_proofs)

    def our_verify_incl() -> int:
        for lh, i, p in our_proofs:
            verify_inclusion(lh, i, SMALL, p, small_root)
        return len(our_proofs)

    pm_rate = median_rate(pm_verify_incl)
    table.add(f"verify_inclusion @{SMALL:,}", median_rate(our_verify_incl), pm_rate)
    table.add(f"pymerkle verify_inclusion @{SMALL:,}", pm_rate)

    small_old = [rng.randrange(1, SMALL) for _ in range(500)]

    def pm_prove_cons() -> int:
        for m in small_old:
            pm_tree.prove_consistency(m)
        return len(small_old)

    def our_prove_cons() -> int:
        for m in small_old:
            consistency_proof(m, SMALL, TileHashReader(SMALL, small_fetch, small_cache))
        return len(small_old)

    pm_rate = median_rate(pm_prove_cons)
    table.add(f"consistency_proof (random m) -> {SMALL:,}", median_rate(our_prove_cons), pm_rate)
    table.add(f"pymerkle prove_consistency (random m) -> {SMALL:,}", pm_rate)

    pm_cons = [(pm_tree.get_root(m), pm_tree.prove_consistency(m)) for m in small_old]
    our_cons = [
        (
            m,
            tree_hash(m, TileHashReader(m, small_fetch, small_cache)),
            consistency_proof(m, SMALL, TileHashReader(SMALL, small_fetch, small_cache)),
        )
        for m in small_old
    ]
    assert all(pm_r == r for (pm_r, _), (_, r, _) in zip(pm_cons, our_cons, strict=True))

    def pm_verify_cons() -> int:
        for prior, p in pm_cons:
            pymerkle.verify_consistency(prior, small_root, p)
        return len(pm_cons)

    def our_verify_cons() -> int:
        for m, r, p in our_cons:
            verify_consistency(m, SMALL, r, small_root, p)
        return len(our_cons)

    pm_rate = median_rate(pm_verify_cons)
    table.add(f"verify_consistency (random m) -> {SMALL:,}", median_rate(our_verify_cons), pm_rate)
    table.add(f"pymerkle verify_consistency (random m) -> {SMALL:,}", pm_rate)

    print()
    table.print()
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
