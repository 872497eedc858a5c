"""Real ``firmlog-server serve`` processes, and the checks the robustness tests share.

Used by test_multiprocess.py (three servers on one PostgreSQL database) and
test_crash.py (one server killed with SIGKILL and restarted, on both
backends). Everything runs on loopback.

- :class:`ServerProcess` runs ``python -m firmlog.server.cli serve --workers N``
  on SQLite or PostgreSQL; starting, killing (SIGKILL to its whole process
  group: a crash of the supervisor and of every worker) and stopping it
  (SIGTERM to the supervisor, which stops its workers; SIGKILL to the group
  after a timeout) is :class:`support.processes.Process`'s.
- :func:`running_servers` stops every server it handed out, even when the
  test fails, and then prints the tail of each server's log (pytest shows it
  for failed tests only).
- :func:`check_bundle`, :func:`check_checkpoints` verify what clients were
  given: bundles against their own checkpoint, and every checkpoint ever
  served against the newest with consistency proofs fetched from the log and
  verified with :func:`firmlog.client.merkle.verify_consistency`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from support.entries import admission
from support.processes import Process, stop_all

from firmlog.client.bundle import ProofBundle
from firmlog.client.checkpoint import Checkpoint, open_checkpoint
from firmlog.client.keys import Ed25519Signer, Ed25519Verifier, parse_signer_key
from firmlog.client.merkle import EMPTY_ROOT, leaf_hash, verify_consistency, verify_inclusion

ORIGIN = "robust.firmlog.example/log"
PUSHBACK = ("PoolFull", "ShuttingDown")  # kinds of 503 a healthy log may answer


def write_config(data_dir: Path, *, batch_interval: float, batch_size: int) -> None:
    """Pre-seed config.toml so the first start uses these sequencer settings.

    The first start creates the keys and keeps an existing config.toml; its
    origin must be the one passed with ``--origin`` (:data:`ORIGIN`).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "config.toml").write_text(
        f'origin = "{ORIGIN}"\n\n'
        "[sequencer]\n"
        f"batch_interval = {batch_interval}\n"
        f"batch_size = {batch_size}\n",
        encoding="utf-8",
    )


@dataclass(frozen=True)
class LogKeys:
    log: Ed25519Verifier
    operator: Ed25519Signer


def load_keys(data_dir: Path) -> LogKeys:
    """The log's verifier key and the operator's signer key from a data dir."""

    def read(name: str) -> Ed25519Signer:
        return parse_signer_key((data_dir / name).read_text(encoding="utf-8").strip())

    return LogKeys(log=read("log.key").verifier, operator=read("operator.key.MOVE-ME-OFFLINE"))


def make_entry(operator: Ed25519Signer, tag: str, i: int) -> bytes:
    """A distinct valid entry: an operator-signed admission of vendor ``<tag>-<i>.example``."""
    return admission(operator, f"{tag}-{i}.example")


class ServerProcess(Process):
    """``python -m firmlog.server.cli serve`` with ``--workers N`` and :data:`ORIGIN`, on
    SQLite in its data dir or on the PostgreSQL ``database``; its output appended to
    ``log_path``."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        log_path: Path,
        database: str | None = None,
        *,
        workers: int = 1,
    ) -> None:
        super().__init__(data_dir, name=name, log_path=log_path)
        self.database = database
        self.workers = workers

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "firmlog.server.cli", "serve"]
        cmd += ["--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}"]
        cmd += ["--origin", ORIGIN, "--log-json", "--workers", str(self.workers)]
        if self.database is not None:
            cmd += ["--database", self.database]
        return cmd


def assert_no_errors(servers: Iterable[ServerProcess]) -> None:
    """No server logged an error (a 503 to a poller, or a failed integration, is one)."""
    found = {s.name: errors for s in servers if (errors := s.errors())}
    assert not found, "servers logged errors:\n" + "\n".join(
        f"{name}:\n{errors}" for name, errors in found.items()
    )


@contextlib.contextmanager
def running_servers() -> Iterator[list[ServerProcess]]:
    """A list to put servers in; on exit every one is stopped and its log tail printed
    (:func:`support.processes.stop_all`)."""
    servers: list[ServerProcess] = []
    try:
        yield servers
    finally:
        stop_all(servers)


# -- checks -----------------------------------------------------------------------


def is_pushback(status: int, body: bytes) -> bool:
    """A 503 that asks to come back later; a 503 of any other kind is a server error."""
    if status != 503:
        return False
    try:
        kind = json.loads(body).get("kind")
    except (ValueError, AttributeError):
        return False
    return kind in PUSHBACK


def open_cp(note: bytes, log_key: Ed25519Verifier) -> Checkpoint:
    """The checkpoint of a note that must be signed by the log."""
    return open_checkpoint(note, log_key).checkpoint


def check_bundle(raw: bytes, entry: bytes, log_key: Ed25519Verifier) -> ProofBundle:
    """Verify a bundle: it carries ``entry``, a log-signed checkpoint, and a valid proof."""
    bundle = ProofBundle.parse(raw)
    assert bundle.extra == entry, f"bundle for index {bundle.index} carries another entry"
    cp = open_cp(bundle.checkpoint, log_key)
    verify_inclusion(leaf_hash(entry), bundle.index, cp.tree_size, bundle.proof, cp.root_hash)
    return bundle


async def fetch_consistency(
    session: aiohttp.ClientSession, base: str, old: int, new: int
) -> list[bytes]:
    url = f"{base}/v1/proof/consistency?old={old}&new={new}"
    async with session.get(url) as resp:
        body = await resp.read()
        assert resp.status == 200, f"GET {url}: {resp.status} {body[:300]!r}"
    got = json.loads(body)
    assert (got["old_size"], got["new_size"]) == (old, new), f"GET {url} answered {got}"
    return [base64.b64decode(h, validate=True) for h in got["hashes"]]


async def check_checkpoints(
    session: aiohttp.ClientSession,
    base: str,
    log_key: Ed25519Verifier,
    notes: Iterable[bytes],
    newest_note: bytes,
) -> int:
    """Every note is log-signed and consistent with ``newest_note``; returns how many sizes.

    Two notes of one size must have one root (else both are shown as evidence);
    no note may be larger than the newest (the log would have lost entries);
    every smaller one is proven consistent with a proof from ``base``.
    """
    newest = open_cp(newest_note, log_key)
    by_size: dict[int, tuple[bytes, Checkpoint]] = {}
    for note in notes:
        cp = open_cp(note, log_key)
        assert cp.tree_size <= newest.tree_size, (
            f"a checkpoint of size {cp.tree_size} was served, but the newest has size "
            f"{newest.tree_size}: the log lost entries\nserved:\n{note.decode()}\n"
            f"newest:\n{newest_note.decode()}"
        )
        seen = by_size.setdefault(cp.tree_size, (note, cp))
        assert seen[1].root_hash == cp.root_hash, (
            f"two checkpoints of size {cp.tree_size} with different roots (a fork):\n"
            f"{seen[0].decode()}\n{note.decode()}"
        )
    for size, (note, cp) in sorted(by_size.items()):
        if size == 0:
            assert cp.root_hash == EMPTY_ROOT, f"empty tree with root {cp.root_hash.hex()}"
        elif size == newest.tree_size:
            assert cp.root_hash == newest.root_hash, (
                f"two checkpoints of size {size} with different roots (a fork):\n"
                f"{note.decode()}\n{newest_note.decode()}"
            )
        else:
            proof = await fetch_consistency(session, base, size, newest.tree_size)
            try:
                verify_consistency(size, newest.tree_size, cp.root_hash, newest.root_hash, proof)
            except Exception as exc:
                raise AssertionError(
                    f"checkpoint of size {size} is not consistent with the newest: {exc}\n"
                    f"old:\n{note.decode()}\nnewest:\n{newest_note.decode()}\n"
                    f"proof: {[base64.b64encode(h).decode() for h in proof]}"
                ) from exc
    return len(by_size)
