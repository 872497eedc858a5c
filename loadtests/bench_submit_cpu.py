"""CPU per submission on the write path, in process: no HTTP, deterministic.

Run: ``.venv/bin/python loadtests/bench_submit_cpu.py`` (SQLite in a temporary
directory; ``--backend postgres`` uses a throwaway database on 127.0.0.1:5432,
or FIRMLOG_BENCH_PG as the admin URL).

It drives what ``POST /v1/entries`` runs, minus aiohttp: for every batch,
:meth:`firmlog.server.acceptance.Acceptance.check` of each submission (parse,
authorize), then :meth:`firmlog.server.sequencer.Sequencer.submit` of all of
them, which integrates the batch in one transaction (ledger gate, tree,
checkpoint signature, storage) and answers each with its ``.tlog-proof``
bundle. Every answer is checked: a new entry, at the expected index.

The traffic is a fixed mix, the same on every run (keys come from fixed
seeds): per batch of ``--batch-size`` entries, ``--admissions`` operator-signed
vendor admissions (``firmlog/vendor/v1``), ``--rotations`` vendor key rotations
(``firmlog/keys/v1``), ``--revocations`` revocations of earlier releases and
releases for the rest, signed by the vendors' current keys (one vendor in
four requires two signatures, 2 of 2). ``--warmup`` batches run untimed first.

What it reports, per entry: the process's CPU time (every thread: the SQLite
storage thread's too; with PostgreSQL, not the database server's), split into
stages by timing the functions of the path (each stage's own time, without the
stages it calls):

- parse: ``parse_entry`` (note, type line, canonical JSON, field rules);
- authorize: the rest of ``Acceptance.check`` (signature checks, key sets);
- gate: ``LedgerGate.admit`` (the ledger rules in log order);
- tree: ``integrate`` and ``edge_tiles`` (the Merkle work);
- checkpoint: ``TreeSigner.sign`` and ``published`` (signature, data-dir record);
- bundles: ``Sequencer._bundles`` (inclusion proofs and ``.tlog-proof`` bundles);
- storage: every storage call (the transaction, reads, writes, the commit);
- sequencer: the rest of the batch's integration (answers, futures, metrics);
- other: the rest (``Sequencer.submit``, the event loop).

Instructions per entry, repeatable whatever else the machine does:
``--callgrind`` runs this script under ``valgrind --tool=callgrind`` twice, for
``--callgrind-batches`` A and B timed batches, and reports
``(Ir(B) - Ir(A)) / ((B - A) * batch size)``: the start-up, imports, key
generation and warm-up cancel out. The entries are signed beforehand, outside
valgrind. ``--stop-after parse`` (also under ``--callgrind``) runs
only ``parse_entry`` of every entry, which isolates its instructions. The same
thing by hand::

    python loadtests/bench_submit_cpu.py --write-entries /tmp/e.json --batches 8
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python loadtests/bench_submit_cpu.py --entries /tmp/e.json --batches 2 --no-stages --quiet
    (the same with --batches 8; the difference of the "Collected" totals / (6 * 256))
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from firmlog.client.entries import (
    Build,
    Image,
    KeySet,
    Release,
    Revocation,
    VendorAdmission,
    entry_identity,
    sign_entry,
)
from firmlog.client.keys import Ed25519Signer
from firmlog.client.note import split_note
from firmlog.server import acceptance as acceptance_module
from firmlog.server import sequencer as sequencer_module
from firmlog.server.acceptance import Acceptance
from firmlog.server.config import SequencerConfig
from firmlog.server.gate import LedgerGate, VendorKeyCache
from firmlog.server.reader import LogReader
from firmlog.server.sequencer import Integrated, Sequencer
from firmlog.server.signing import TreeSigner
from firmlog.server.storage import open_storage
from firmlog.server.storage._backend import GuardedIntegration, SQLStorage

ORIGIN = "bench.firmlog.example/log"
OPERATOR = Ed25519Signer.from_seed("bench.firmlog.example/operator", b"\x01" * 32)
LOG_KEY = Ed25519Signer.from_seed(ORIGIN, b"\x02" * 32)
STAGES = ("parse", "authorize", "gate", "tree", "checkpoint", "bundles", "storage", "sequencer")


# -- the traffic ----------------------------------------------------------------------


def _seed(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


@dataclass
class _Vendor:
    name: str
    width: int  # keys in each set, all required
    serial: int = 1
    keys: list[Ed25519Signer] = field(default_factory=list)
    releases: list[bytes] = field(default_factory=list)  # identities of logged releases

    def key_set(self, serial: int) -> list[Ed25519Signer]:
        return [
            Ed25519Signer.from_seed(f"{self.name}/k{j}", _seed(self.name, serial, j))
            for j in range(self.width)
        ]


def _release(vendor: str, n: int) -> Release:
    fixes = tuple(f"CVE-2026-{10000 + (n * 7 + j) % 90000}" for j in range(n % 4))
    return Release(
        vendor=vendor,
        product=("router-9000", "switch-48p", "camera-x2")[n % 3],
        hardware_revisions=("rev-a", "rev-b")[: n % 3],
        version=f"{n // 100}.{n % 100}.{n % 7}",
        security_version=n // 10,
        channel=("stable", "beta")[n % 5 == 0],
        image=Image(sha256=hashlib.sha256(b"image %d" % n).hexdigest(), size=4 << 20 | n),
        build=Build(
            time=f"2026-11-{1 + n % 28:02d}T12:{n % 60:02d}:00Z",
            source_uri=f"https://git.{vendor}/firmware.git",
            source_commit=hashlib.sha1(b"%d" % n).hexdigest(),  # a commit id
            builder="ci.example/runner-3",
            reproducible=n % 2 == 0,
        ),
        sbom_sha256=hashlib.sha256(b"sbom %d" % n).hexdigest() if n % 3 == 0 else None,
        fixes=fixes,
        changelog=f'Fixes {len(fixes)} issues.\n- Faster boot.\n- "Wi-Fi" roaming fix #{n}.',
    )


def make_batches(
    batches: int, batch_size: int, admissions: int, rotations: int, revocations: int
) -> list[list[bytes]]:
    """Signed submissions, batch by batch, each accepted in its turn.

    Batch 0 admits the first vendors only. In later batches the releases and
    revocations of a vendor come before its rotation (signed by the keys
    current until the rotation), and every entry is new."""
    vendors: list[_Vendor] = []
    out: list[list[bytes]] = []
    counter = 0

    def admit() -> bytes:
        v = _Vendor(f"v{len(vendors)}.bench.example", 2 if len(vendors) % 4 == 3 else 1)
        v.keys = v.key_set(1)
        vendors.append(v)
        body = VendorAdmission(v.name, tuple(k.verifier.vkey for k in v.keys), v.width)
        return sign_entry(body, [OPERATOR])

    out.append([admit() for _ in range(max(admissions, 4))])
    for _ in range(batches):
        admitted = list(vendors)  # releases only by vendors admitted in earlier batches
        batch: list[bytes] = []
        n_releases = batch_size - admissions - rotations - revocations
        for i in range(n_releases):
            v = admitted[(counter + i) % len(admitted)]
            raw = sign_entry(_release(v.name, counter + i), v.keys)
            v.releases.append(entry_identity(split_note(raw)[0]))
            batch.append(raw)
        counter += n_releases
        for i in range(revocations):
            v = admitted[(counter + i) % len(admitted)]
            revoked = v.releases.pop(0).hex()
            body = Revocation(v.name, revoked, f"bad build {counter + i}", "ADV-2026-0001")
            batch.append(sign_entry(body, v.keys))
        counter += revocations
        for i in range(rotations):
            v = admitted[(counter + i) % len(admitted)]
            new = v.key_set(v.serial + 1)
            body = KeySet(v.name, tuple(k.verifier.vkey for k in new), v.width, v.serial + 1)
            batch.append(sign_entry(body, v.keys))
            v.serial, v.keys = v.serial + 1, new
        counter += rotations
        batch.extend(admit() for _ in range(admissions))
        assert len(batch) == batch_size
        out.append(batch)
    return out


def write_entries(path: Path, batches: list[list[bytes]]) -> None:
    path.write_text(json.dumps([[base64.b64encode(e).decode() for e in b] for b in batches]))


def read_entries(path: Path) -> list[list[bytes]]:
    return [[base64.b64decode(e) for e in b] for b in json.loads(path.read_text())]


# -- stage timers -----------------------------------------------------------------------


class Stages:
    """Process CPU time per stage, each stage without the stages it calls.

    The benchmark runs one thing at a time (one submission, then one batch),
    so the timed calls nest properly even across tasks and threads."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self._stack: list[list[Any]] = []

    def _enter(self, name: str) -> None:
        self._stack.append([name, time.process_time(), 0.0])

    def _exit(self) -> None:
        name, start, inner = self._stack.pop()
        spent = time.process_time() - start
        self.cpu[name] += spent - inner
        if self._stack:
            self._stack[-1][2] += spent

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        fn = getattr(owner, attr)
        if asyncio.iscoroutinefunction(fn):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                self._enter(name)
                try:
                    return await fn(*args, **kwargs)
                finally:
                    self._exit()

            setattr(owner, attr, timed_async)
        else:

            def timed(*args: Any, **kwargs: Any) -> Any:
                self._enter(name)
                try:
                    return fn(*args, **kwargs)
                finally:
                    self._exit()

            setattr(owner, attr, timed)

    def wrap_context(self, owner: Any, attr: str, name: str) -> None:
        """A method returning an async context manager: its entering and leaving."""
        fn = getattr(owner, attr)
        stages = self

        @asynccontextmanager
        async def timed(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            cm = fn(*args, **kwargs)
            stages._enter(name)
            try:
                value = await cm.__aenter__()
            finally:
                stages._exit()
            try:
                yield value
            except BaseException as exc:
                stages._enter(name)
                try:
                    if not await cm.__aexit__(type(exc), exc, exc.__traceback__):
                        raise
                finally:
                    stages._exit()
            else:
                stages._enter(name)
                try:
                    await cm.__aexit__(None, None, None)
                finally:
                    stages._exit()

        setattr(owner, attr, timed)

    def install(self) -> None:
        self.wrap(acceptance_module, "parse_entry", "parse")
        self.wrap(Acceptance, "check", "authorize")
        self.wrap(LedgerGate, "admit", "gate")
        self.wrap(sequencer_module, "integrate", "tree")
        self.wrap(sequencer_module, "edge_tiles", "tree")
        self.wrap(TreeSigner, "sign", "checkpoint")
        self.wrap(TreeSigner, "published", "checkpoint")
        self.wrap(Sequencer, "_bundles", "bundles")
        self.wrap(Sequencer, "_integrate_and_answer", "sequencer")
        for method in (
            "state",
            "read_tiles",
            "entries_by_identity",
            "append_entries",
            "write_tiles",
            "write_state",
            "key_sets",
            "write_ledger",
        ):
            self.wrap(GuardedIntegration, method, "storage")
        for method in ("read_tiles", "find_identity", "key_sets"):
            self.wrap(SQLStorage, method, "storage")
        self.wrap_context(SQLStorage, "integration", "storage")


# -- the run ------------------------------------------------------------------------------


@dataclass
class Result:
    entries: int = 0
    cpu: float = 0.0  # process CPU seconds of the timed batches
    wall: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)


async def run(
    database: str, data_dir: Path, batches: list[list[bytes]], warmup: int, timer: Stages | None
) -> Result:
    storage = open_storage(database)
    await storage.open()
    reader = LogReader(storage)
    cache = VendorKeyCache()
    operators = [OPERATOR.verifier]
    batch_size = max(len(b) for b in batches)
    sequencer = Sequencer(
        storage,
        reader,
        LOG_KEY,
        # Each timed batch is queued whole before the run loop looks (it is full):
        # one integration per batch. The interval only ends the smaller first batch.
        SequencerConfig(batch_interval=0.005, batch_size=batch_size, pool_size=batch_size),
        ledger=LedgerGate(operators, cache),
        checkpoint_file=data_dir / "checkpoint",
    )
    acceptance = Acceptance(storage, operators, cache, 16 * 1024)
    result = Result()
    try:
        await sequencer.initialize()
        task = asyncio.create_task(sequencer.run())
        size = 0
        try:
            for n, batch in enumerate(batches):
                timed = n > warmup  # batch 0 admits the first vendors
                if n == warmup + 1 and timer is not None:
                    timer.cpu.clear()
                cpu, wall = time.process_time(), time.perf_counter()
                candidates = [await acceptance.check(raw) for raw in batch]
                answers = await asyncio.gather(
                    *(sequencer.submit(c.entry.raw, c.entry.leaf_hash, c) for c in candidates)
                )
                if timed:
                    result.cpu += time.process_time() - cpu
                    result.wall += time.perf_counter() - wall
                    result.entries += len(batch)
                for i, a in enumerate(answers):
                    if not isinstance(a, Integrated) or a.duplicate or a.leaf_index != size + i:
                        raise AssertionError(f"batch {n} entry {i}: unexpected answer {a!r}")
                size += len(batch)
        finally:
            await sequencer.stop()
            await task
        if timer is not None:
            result.stages = dict(timer.cpu)
    finally:
        await storage.close()
    return result


def _parse_only(batches: list[list[bytes]], warmup: int) -> Result:
    result = Result()
    for n, batch in enumerate(batches):
        cpu = time.process_time()
        for raw in batch:
            acceptance_module.parse_entry(raw, max_size=16 * 1024)
        if n > warmup:
            result.cpu += time.process_time() - cpu
            result.entries += len(batch)
    result.stages = {"parse": result.cpu}
    return result


@contextlib.contextmanager
def _database(backend: str, data_dir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{data_dir / 'log.db'}"
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from load_harness import pg_database

    with pg_database("firmlog_bench_cpu") as url:
        yield url


def measure(args: argparse.Namespace, batches: list[list[bytes]], timer: Stages | None) -> Result:
    if args.stop_after == "parse":
        return _parse_only(batches, args.warmup)
    with (
        tempfile.TemporaryDirectory(prefix="firmlog-bench-cpu-") as tmp,
        _database(args.backend, Path(tmp)) as url,
    ):
        return asyncio.run(run(url, Path(tmp), batches, args.warmup, timer))


def ed25519_verify_us(rounds: int = 2000) -> float:
    message = b"firmlog/release/v1\n" + b"x" * 600
    sig = OPERATOR.sign(message)
    verifier = OPERATOR.verifier
    start = time.process_time()
    for _ in range(rounds):
        verifier.verify(message, sig)
    return (time.process_time() - start) / rounds * 1e6


# -- callgrind ---------------------------------------------------------------------------


def _instructions(args: argparse.Namespace, entries: Path, batches: int) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--entries",
        str(entries),
        "--batches",
        str(batches),
        "--warmup",
        str(args.warmup),
        "--backend",
        args.backend,
        "--stop-after",
        args.stop_after,
        "--no-stages",
        "--quiet",
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"valgrind failed ({done.returncode}):\n{done.stderr[-3000:]}")
    m = re.search(r"Collected : (\d+)", done.stderr)
    if m is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{done.stderr[-3000:]}")
    return int(m.group(1))


def callgrind(args: argparse.Namespace) -> None:
    low, high = args.callgrind_batches
    if not 0 < low < high:
        raise SystemExit("--callgrind-batches A B: expected 0 < A < B")
    with tempfile.TemporaryDirectory(prefix="firmlog-bench-cpu-") as tmp:
        entries = Path(tmp) / "entries.json"
        write_entries(entries, _batches(args, high))
        counts = [_instructions(args, entries, n) for n in (low, high)]
    per_entry = (counts[1] - counts[0]) / ((high - low) * args.batch_size)
    print(
        f"callgrind ({args.backend}, stop after {args.stop_after}): Ir {counts[0]} for {low} "
        f"batches, {counts[1]} for {high}; {per_entry:,.0f} instructions per entry"
    )


# -- the command ---------------------------------------------------------------------------


def _batches(args: argparse.Namespace, timed: int) -> list[list[bytes]]:
    return make_batches(
        args.warmup + timed, args.batch_size, args.admissions, args.rotations, args.revocations
    )


def report(args: argparse.Namespace, results: list[Result]) -> None:
    per = [r.cpu / r.entries * 1e6 for r in results]
    print(
        f"{args.backend}, {results[0].entries} entries in batches of {args.batch_size} "
        f"({args.admissions} admissions, {args.rotations} rotations, {args.revocations} "
        f"revocations, the rest releases), stop after {args.stop_after}; runs: {len(results)}"
    )
    print(
        f"  CPU per entry: median {statistics.median(per):7.1f} us  (runs: "
        + ", ".join(f"{p:.1f}" for p in per)
        + ")"
    )
    wall = [r.wall / r.entries * 1e6 for r in results]
    print(f"  wall per entry: median {statistics.median(wall):7.1f} us")
    if results[0].stages:
        for stage in (*STAGES, "other"):
            values = [
                (r.cpu - sum(r.stages.values()) if stage == "other" else r.stages.get(stage, 0.0))
                / r.entries
                * 1e6
                for r in results
            ]
            print(f"  {stage:<11} {statistics.median(values):7.1f} us/entry")
    print(f"  (one Ed25519 verification: {ed25519_verify_us():.1f} us)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--batches", type=int, default=8, help="timed batches (default 8)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    parser.add_argument("--admissions", type=int, default=4, help="per batch")
    parser.add_argument("--rotations", type=int, default=4, help="per batch")
    parser.add_argument("--revocations", type=int, default=2, help="per batch")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--stop-after",
        choices=("parse", "all"),
        default="all",
        help="parse: only parse_entry of each entry (no log); all: the whole path",
    )
    parser.add_argument("--no-stages", action="store_true", help="no per-stage timers")
    parser.add_argument("--callgrind", action="store_true", help="instructions per entry")
    parser.add_argument("--callgrind-batches", type=int, nargs=2, default=(1, 4))
    parser.add_argument("--entries", type=Path, help="read the signed entries from this file")
    parser.add_argument("--write-entries", type=Path, help="write the signed entries and exit")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    # The log's per-batch lines are not what is measured, nor wanted on the screen.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    timer = None
    if not args.no_stages and args.stop_after == "all":
        timer = Stages()
        timer.install()
    if args.callgrind:
        callgrind(args)
        return
    if args.entries is not None:
        batches = read_entries(args.entries)[: args.warmup + 1 + args.batches]
    else:
        batches = _batches(args, args.batches)
    if args.write_entries is not None:
        write_entries(args.write_entries, batches)
        return
    results = [measure(args, batches, timer) for _ in range(1 if args.quiet else args.runs)]
    if not args.quiet:
        report(args, results)


if __name__ == "__main__":
    main()
