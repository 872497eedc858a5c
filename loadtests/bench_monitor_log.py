"""A realistic firmlog log built fast, for the monitor benchmarks (bench_monitor_catchup.py,
bench_witness_latency.py), and the monitor as a child process.

The log holds what a real one does: ``--vendors`` vendor admissions signed by
the operator key, then releases signed by their vendor's key (products,
versions, rising security versions, CVE fixes), and a revocation by the same
vendor every 1,000 entries. Entries are signed in worker processes (one per
core) and appended through firmlog.server's own storage contract, one
integration per batch (the entries, the ledger rows the gate would write,
the hash tiles, a signed checkpoint), as bench_server_read.py does; then a
real ``firmlog-server serve`` serves it.

Built logs are cached under ``$TMPDIR/firmlog-bench-monitor-log-<N>/``
(keys, SQLite database, ``complete`` marker), so a rerun with the same N
starts at once; ``--rebuild`` builds afresh. Nothing here talks to anything
but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from load_harness import LOOPBACK, VENV_BIN, ServerProcess, free_port, write_data_dir

from firmlog.client.checkpoint import Checkpoint, sign_checkpoint
from firmlog.client.entries import (
    Build,
    EntryBody,
    Image,
    Release,
    Revocation,
    VendorAdmission,
    entry_identity,
    entry_text,
    sign_entry,
)
from firmlog.client.integrate import edge_tiles, integrate
from firmlog.client.keys import Ed25519Signer
from firmlog.client.merkle import EMPTY_ROOT, leaf_hash
from firmlog.server.storage import (
    EntryRow,
    KeySetRow,
    LedgerRows,
    LogState,
    ReleaseRow,
    RevocationRow,
    open_storage,
)

ORIGIN = "bench.firmlog.example/log"
REVOKE_EVERY = 1000
SIGN_CHUNK = 4096


def log_key() -> Ed25519Signer:
    return Ed25519Signer.from_seed(ORIGIN, hashlib.sha256(b"bench log key").digest())


def operator_key() -> Ed25519Signer:
    return Ed25519Signer.from_seed(f"{ORIGIN}/operator", hashlib.sha256(b"bench operator").digest())


def vendor_name(v: int) -> str:
    return f"vendor{v:03d}.example"


def vendor_key(v: int) -> Ed25519Signer:
    seed = hashlib.sha256(b"bench vendor %d" % v).digest()
    return Ed25519Signer.from_seed(f"{vendor_name(v)}/release", seed)


def _release(i: int, vendors: int) -> Release:
    v = i % vendors
    n = i // vendors
    image = hashlib.sha256(b"firmware image %d" % i).hexdigest()
    return Release(
        vendor=vendor_name(v),
        product=f"router-{n % 7}",
        hardware_revisions=("rev-a", "rev-b"),
        version=f"{n // 1000}.{n % 1000}.{i}",
        security_version=n // 1000,
        channel="stable",
        image=Image(sha256=image, size=4_000_000 + i % 100_000),
        build=Build(
            time="2026-11-01T12:00:00Z",
            source_uri=f"https://git.{vendor_name(v)}/router.git",
            source_commit=hashlib.sha1(b"%d" % i).hexdigest(),
            builder="vendor-ci",
            reproducible=True,
        ),
        fixes=(f"CVE-2026-{10000 + i % 50000}",) if i % 3 == 0 else (),
        changelog="Fixes and improvements.",
    )


def body_at(i: int, vendors: int) -> EntryBody:
    """The entry at log index ``i`` (i >= vendors: admissions come first)."""
    if i % REVOKE_EVERY == REVOKE_EVERY - 1:
        revoked = i - vendors  # the same vendor's, a release
        text = entry_text(_release(revoked, vendors))
        return Revocation(vendor_name(i % vendors), entry_identity(text).hex(), "bricks devices")
    return _release(i, vendors)


@dataclass(frozen=True, slots=True)
class Signed:
    raw: bytes
    identity: bytes
    leaf_hash: bytes


def _sign_range(start: int, end: int, vendors: int) -> list[Signed]:
    keys = [vendor_key(v) for v in range(vendors)]
    out = []
    for i in range(start, end):
        body = body_at(i, vendors)
        raw = sign_entry(body, [keys[i % vendors]])
        out.append(Signed(raw, entry_identity(entry_text(body)), leaf_hash(raw)))
    return out


def _ledger_rows(start: int, signed: Sequence[Signed], vendors: int) -> LedgerRows:
    key_sets, releases, revocations = [], [], []
    for i in range(start, start + len(signed)):
        if i < vendors:
            key_sets.append(KeySetRow(vendor_name(i), i, (vendor_key(i).verifier.vkey,), 1, 1))
            continue
        body = body_at(i, vendors)
        if isinstance(body, Revocation):
            revocations.append(RevocationRow(i, body.vendor, i - vendors))
        else:
            assert isinstance(body, Release)
            releases.append(
                ReleaseRow(
                    index=i,
                    vendor=body.vendor,
                    product=body.product,
                    version=body.version,
                    security_version=body.security_version,
                    image_sha256=body.image.sha256,
                    image_size=body.image.size,
                    fixes=body.fixes,
                )
            )
    return LedgerRows(key_sets=key_sets, releases=releases, revocations=revocations)


def _signed_chunks(start: int, end: int, vendors: int, workers: int) -> Iterator[list[Signed]]:
    """Entries start..end-1, signed in ``workers`` processes, in log order."""
    op = operator_key()
    admissions = []
    for i in range(start, min(end, vendors)):
        body = VendorAdmission(vendor_name(i), (vendor_key(i).verifier.vkey,), 1)
        raw = sign_entry(body, [op])
        admissions.append(Signed(raw, entry_identity(entry_text(body)), leaf_hash(raw)))
    if admissions:
        yield admissions
    first = max(start, vendors)
    if first >= end:
        return
    bounds = [(lo, min(end, lo + SIGN_CHUNK)) for lo in range(first, end, SIGN_CHUNK)]
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(_sign_range, lo, hi, vendors) for lo, hi in bounds]
        for f in futures:
            yield f.result()


async def append(
    url: str, start: int, end: int, vendors: int, batch: int, workers: int, *, steps: int = 0
) -> list[bytes]:
    """Append entries start..end-1 through the storage contract, ``batch`` a transaction;
    the last ``steps`` entries one transaction each (a checkpoint per entry). Returns
    the signed checkpoint notes from size ``end - steps`` on (``steps + 1`` of them)."""
    key = log_key()
    storage = open_storage(url)
    await storage.open()
    notes: list[bytes] = []
    try:
        async with storage.integration() as tx:
            if not (await tx.state()).checkpoint:
                note = sign_checkpoint(Checkpoint(key.name, 0, EMPTY_ROOT), key)
                await tx.write_state(LogState(0, b"", note))
        pending: list[Signed] = []
        at = start
        step_from = end - steps

        async def flush(entries: list[Signed]) -> None:
            nonlocal at
            async with storage.integration() as tx:
                state = await tx.state()
                if state.tree_size != at:
                    raise RuntimeError(f"expected a log of {at} entries, found {state.tree_size}")
                edge = edge_tiles(at, at + len(entries))
                stored = await tx.read_tiles([(t.level, t.index) for t in edge])
                tree = integrate(at, state.right_edge, stored, [e.leaf_hash for e in entries])
                note = sign_checkpoint(Checkpoint(key.name, tree.tree_size, tree.root_hash), key)
                await tx.append_entries(
                    at, [EntryRow(e.identity, e.leaf_hash, e.raw) for e in entries]
                )
                await tx.write_ledger(_ledger_rows(at, entries, vendors))
                await tx.write_tiles(tree.tiles)
                await tx.write_state(LogState(tree.tree_size, tree.right_edge, note))
            at += len(entries)
            if at >= step_from:
                notes.append(note)

        def take() -> int:
            return 1 if at >= step_from else min(batch, step_from - at)

        for chunk in _signed_chunks(start, end, vendors, workers):
            pending += chunk
            while pending and len(pending) >= take():
                n = take()
                await flush(pending[:n])
                del pending[:n]
        while pending:
            n = min(take(), len(pending))
            await flush(pending[:n])
            del pending[:n]
        return notes
    finally:
        await storage.close()


@dataclass(frozen=True, slots=True)
class BuiltLog:
    dir: Path
    size: int
    vendors: int

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def url(self) -> str:
        return f"sqlite:///{self.dir / 'data' / 'firmlog.db'}"


def cache_dir(entries: int, vendors: int) -> Path:
    return Path(tempfile.gettempdir()) / f"firmlog-bench-monitor-log-{entries}-v{vendors}"


def build_log(
    entries: int, vendors: int, *, rebuild: bool = False, batch: int = 16384
) -> tuple[BuiltLog, float | None]:
    """The cached log of ``entries`` entries, built now if missing; and the build time."""
    where = cache_dir(entries, vendors)
    built = BuiltLog(where, entries, vendors)
    if (where / "complete").exists() and not rebuild:
        return built, None
    shutil.rmtree(where, ignore_errors=True)
    write_data_dir(built.data_dir, log_key().skey, operator_key().verifier.vkey, ORIGIN)
    workers = max(1, len(os.sched_getaffinity(0)))
    t0 = time.perf_counter()
    asyncio.run(append(built.url, 0, entries, vendors, batch, workers))
    seconds = time.perf_counter() - t0
    (where / "complete").write_text(f"{entries} entries built in {seconds:.1f} s\n")
    return built, seconds


def start_monitor(
    data_dir: Path, log_url: str, log_path: Path, *, poll_interval: float = 1.0
) -> ServerProcess:
    """``firmlog-monitor run`` on a free loopback port, trusting the bench operator key."""
    port = free_port()
    argv = [
        str(VENV_BIN / "firmlog-monitor"),
        "run",
        "--data-dir",
        str(data_dir),
        "--log-url",
        log_url,
        "--log-key",
        log_key().verifier.vkey,
        "--operator-key",
        operator_key().verifier.vkey,
        "--listen",
        f"{LOOPBACK}:{port}",
        "--poll-interval",
        str(poll_interval),
        "--log-level",
        "warning",
        "--log-json",
    ]
    monitor = ServerProcess(argv, port, log_path, "/healthz")
    monitor.wait_ready()
    return monitor
