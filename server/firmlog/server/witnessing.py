"""Witnessing: the log collects cosignatures before it publishes a checkpoint.

The witness policy is tlog-policy text whose ``witness`` lines carry the
witnesses' URLs (the tlog-witness submission prefix) and a quorum; its
``log`` lines, if any, are ignored (the log is this server's key). For each
new checkpoint :class:`WitnessCollector` posts ``add-checkpoint`` (c2sp.org/
tlog-witness) to every witness in parallel, with a consistency proof from
the size that witness last cosigned (0 at first; a 409 answer says which
size it knows, and is retried once with a proof from there). It verifies
each returned cosignature against the witness's key in the policy (others
are dropped), and returns the note with the valid cosignatures once the
policy's quorum is met; :class:`WitnessingFailed` past the timeout.

:class:`CheckpointPublisher` is the pipeline around it, so that witnessing
never holds up integration: the sequencer offers each checkpoint it commits
and goes on with the next batch; the publisher's own task has one checkpoint
cosigned at a time, always the newest offered (a newer offer supersedes the
older ones still waiting; a witness behind is caught up by the 409 above),
records it in storage (so that a restarted server, or another process
sharing the database, serves it), then shows it to readers and tells the
sequencer, which answers every submitter whose entry it covers. It retries
a checkpoint that did not get its quorum at the next offer, or after a
backoff; so a server restarted with an uncosigned tree gets it cosigned.

With ``serve --workers N`` (a :class:`~firmlog.server.workers.WorkerHost`),
one worker, the cosigner, talks to the witnesses for the whole host, so that
they get one server's requests whatever N is (one round at a time, each
witness's size known from the last round), not N: each other worker wakes it
after its commits, and it then has the newest tree in storage cosigned. The
other workers' publishers follow: while a submitter of theirs waits, they
watch the tree size the workers have shown (shared memory), and once it
grows, publish the cosigned checkpoint recorded in storage, which answers
their submitters. Only a checkpoint carrying the quorum is ever published, by
any worker. While the cosigner is being restarted, the others' submitters
wait (503 past the witness timeout, as when the witnesses are away).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import structlog
from aiohttp import ClientError, ClientSession, ClientTimeout

from firmlog.client.errors import FormatError, VerificationError
from firmlog.client.keys import Ed25519Verifier
from firmlog.client.note import Signature, add_signatures, split_note
from firmlog.client.policy import Policy, PolicyLog, PolicyWitness, parse_policy
from firmlog.server.metrics import ServerMetrics
from firmlog.server.reader import LatestCheckpoint, LogReader, checkpoint_of
from firmlog.server.storage import Storage
from firmlog.server.workers import WorkerHost

__all__ = ["CheckpointPublisher", "WitnessCollector", "WitnessingFailed", "load_witness_policy"]

log = structlog.get_logger("firmlog.witnessing")

SIZE_CONTENT_TYPE = "text/x.tlog.size"
MAX_RESPONSE = 64 * 1024

ConsistencyProof = Callable[[int, int], Awaitable[list[bytes]]]


class WitnessingFailed(Exception):
    """The quorum of cosignatures was not met in time."""


def load_witness_policy(path: Path) -> Policy:
    """Parse the policy file (OSError, PolicyFormatError); ValueError if it names
    no witness with a URL."""
    policy = parse_policy(path.read_bytes())
    if not any(w.url for w in policy.witnesses):
        raise ValueError(f"{path}: no witness line carries a URL")
    return policy


class _Refused(Exception):
    def __init__(self, message: str, outcome: str = "refused") -> None:
        super().__init__(message)
        self.outcome = outcome  # for firmlog_witness_requests_total


class WitnessCollector:
    def __init__(
        self,
        policy: Policy,
        log_key: Ed25519Verifier,
        session: ClientSession,
        consistency_proof: ConsistencyProof,
        *,
        timeout: float = 10.0,
        metrics: ServerMetrics | None = None,
        host: WorkerHost | None = None,
    ) -> None:
        """``host``: in a worker of ``serve --workers N``, what the workers share (then
        only the cosigner among them calls :meth:`collect`; module docstring)."""
        self.host = host
        # The policy a checkpoint must meet: this log's key, the file's witnesses and quorum.
        self.policy = Policy((PolicyLog(log_key),), policy.witnesses, policy.groups, policy.quorum)
        self._witnesses: tuple[PolicyWitness, ...] = tuple(w for w in policy.witnesses if w.url)
        self._session = session
        self._proof = consistency_proof
        self._timeout = timeout
        self._metrics = metrics or ServerMetrics()
        self._sizes: dict[str, int] = {}  # witness name -> the size it cosigned last

    @property
    def timeout(self) -> float:
        """Seconds a checkpoint is given to get its quorum."""
        return self._timeout

    def cosigned(self, note: bytes) -> bool:
        """Whether ``note`` carries the quorum (and the log's signature)."""
        try:
            self.policy.verify_checkpoint(note)
        except (FormatError, VerificationError, ValueError):
            return False
        return True

    async def collect(self, note: bytes, tree_size: int) -> bytes:
        """``note`` (the log's signed checkpoint of ``tree_size``) with the
        witnesses' valid cosignatures, once they meet the quorum."""
        text, _ = split_note(note)
        if self.policy.satisfied_by(set()):
            return note
        tasks = {
            asyncio.create_task(self._witness(w, note, text, tree_size)): w for w in self._witnesses
        }
        got: dict[str, Signature] = {}
        deadline = time.monotonic() + self._timeout
        try:
            pending = set(tasks)
            while pending and not self.policy.satisfied_by(set(got)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                done, pending = await asyncio.wait(
                    pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    witness = tasks[task]
                    exc = task.exception()
                    if exc is None:
                        got[witness.name] = task.result()
                    else:
                        log.warning(
                            "witness did not cosign",
                            witness=witness.name,
                            tree_size=tree_size,
                            error=f"{type(exc).__name__}: {exc}",
                        )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if not self.policy.satisfied_by(set(got)):
            raise WitnessingFailed(
                f"checkpoint of size {tree_size}: cosignatures from "
                f"{sorted(got) or 'no witness'}; required {self.policy.describe_quorum()}"
            )
        cosigned = add_signatures(note, [got[w.name] for w in self._witnesses if w.name in got])
        log.info("checkpoint cosigned", tree_size=tree_size, witnesses=sorted(got))
        return cosigned

    async def _witness(
        self, witness: PolicyWitness, note: bytes, text: str, tree_size: int
    ) -> Signature:
        try:
            return await self._ask(witness, note, text, tree_size)
        except asyncio.CancelledError:
            self._metrics.witness_requests.labels(witness.name, "cancelled").inc()
            raise

    async def _ask(
        self, witness: PolicyWitness, note: bytes, text: str, tree_size: int
    ) -> Signature:
        for attempt in range(2):
            old = self._sizes.get(witness.name, 0)
            if old > tree_size:
                raise _Refused(f"the witness knows size {old}, beyond {tree_size}")
            proof = await self._proof(old, tree_size) if 0 < old < tree_size else []
            status, ctype, body = await self._post(witness, old, proof, note)
            if status == 200:
                try:
                    signature = _cosignature(witness, text, body)
                except _Refused:
                    self._metrics.witness_requests.labels(witness.name, "refused").inc()
                    raise
                self._metrics.witness_requests.labels(witness.name, "cosigned").inc()
                self._sizes[witness.name] = tree_size
                return signature
            conflict = status == 409 and ctype == SIZE_CONTENT_TYPE
            self._metrics.witness_requests.labels(
                witness.name, "conflict" if conflict else "refused"
            ).inc()
            if conflict and attempt == 0:
                known = _size(body)
                if known is None or known == old:
                    raise _Refused(f"409 with size {body[:40]!r}")
                self._sizes[witness.name] = known
                continue
            raise _Refused(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        raise _Refused("still 409 after catching it up")

    async def _post(
        self, witness: PolicyWitness, old: int, proof: Sequence[bytes], note: bytes
    ) -> tuple[int, str, bytes]:
        assert witness.url is not None
        body = f"old {old}\n".encode() + b"".join(base64.b64encode(h) + b"\n" for h in proof)
        url = witness.url.rstrip("/") + "/add-checkpoint"
        started = time.monotonic()
        try:
            async with self._session.post(
                url, data=body + b"\n" + note, timeout=ClientTimeout(total=self._timeout)
            ) as resp:
                data = await resp.content.read(MAX_RESPONSE)
        except (ClientError, TimeoutError) as exc:
            self._metrics.witness_requests.labels(witness.name, "unreachable").inc()
            raise _Refused(f"{url}: {type(exc).__name__}: {exc}", "unreachable") from exc
        self._metrics.witness_request_seconds.labels(witness.name).observe(
            time.monotonic() - started
        )
        return resp.status, resp.content_type, data


RETRY_MIN = 0.25
RETRY_MAX = 5.0
"""Backoff between attempts at a checkpoint that did not get its quorum, when no
newer checkpoint is offered meanwhile (a newer offer is tried at once)."""
FOLLOW_INTERVAL = 0.005
FOLLOW_MAX = 0.05
"""Seconds between looks at the workers' shared tree size, in a worker that is not
the cosigner, while a tree it committed waits for cosignatures: FOLLOW_INTERVAL
after a commit, doubling up to FOLLOW_MAX while nothing changes."""

Published = Callable[[LatestCheckpoint], Awaitable[None]]


class CheckpointPublisher:
    """Publishes the newest checkpoint the sequencer offers once a quorum cosigned it.

    Who owns what: :meth:`offer` is called by the sequencer's run loop,
    :meth:`run` is this publisher's own task; ``_offered`` and ``_wake`` are
    shared (offer writes, run reads), everything else belongs to run.
    ``published`` is only ever replaced by a larger tree. ``on_published`` is
    awaited after each publication, from the run task. In a worker that is not
    its host's cosigner, run only follows (module docstring).
    """

    def __init__(
        self,
        collector: WitnessCollector,
        storage: Storage,
        reader: LogReader,
        metrics: ServerMetrics,
        on_published: Published,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._collector = collector
        self._storage = storage
        self._reader = reader
        self._metrics = metrics
        self._on_published = on_published
        self._clock = clock
        self._offered: LatestCheckpoint | None = None  # the newest checkpoint integrated
        self._wake = asyncio.Event()
        self._host = collector.host
        self._others_committed = False  # the cosigner was woken by another worker
        self.published: LatestCheckpoint | None = None
        self._published_at: float | None = None
        metrics.published_age.function = self._age

    def _age(self) -> float | None:
        return None if self._published_at is None else self._clock() - self._published_at

    def cosigned(self, note: bytes) -> bool:
        return self._collector.cosigned(note)

    async def restore(self) -> None:
        """Publish the cosigned checkpoint recorded in storage, if there is one
        (at start: what this log published before a restart)."""
        note = await self._storage.latest_cosigned()
        if note is not None and self._collector.cosigned(note):
            await self._publish(checkpoint_of(note))

    def offer(self, checkpoint: LatestCheckpoint) -> None:
        """A checkpoint just committed (or committed earlier, offered again by a
        resubmission: then it is retried at once if it is not published yet)."""
        if self._offered is None or checkpoint.tree_size >= self._offered.tree_size:
            self._offered = checkpoint
        self._update_backlog()
        self._wake.set()
        if self._host is not None and not self._host.cosigner:
            self._host.wake_cosigner()

    def _update_backlog(self) -> None:
        integrated = self._offered.tree_size if self._offered is not None else 0
        published = self.published.tree_size if self.published is not None else 0
        self._metrics.unpublished_entries.set(max(0, integrated - published))

    def _wanted(self) -> LatestCheckpoint | None:
        offered, published = self._offered, self.published
        if offered is None or (published is not None and offered.tree_size <= published.tree_size):
            return None
        return offered

    async def run(self) -> None:
        """Have the newest offered checkpoint cosigned and publish it, until cancelled;
        in a worker that is not the cosigner, follow it."""
        host = self._host
        if host is None:
            await self._cosign_offers()
        elif not host.cosigner:
            await self._follow(host)
        else:
            loop = asyncio.get_running_loop()
            loop.add_reader(host.cosigner_wakeups, self._woken, host)
            self._others_committed = True  # what they committed before this one ran
            try:
                await self._cosign_offers()
            finally:
                loop.remove_reader(host.cosigner_wakeups)

    def _woken(self, host: WorkerHost) -> None:
        host.drain_wakeups()
        self._others_committed = True
        self._wake.set()

    async def _newest_committed(self) -> None:
        """Offer the newest tree in storage (the cosigner, once another worker
        committed)."""
        self._others_committed = False
        try:
            note = await self._storage.latest_checkpoint()
        except Exception as exc:  # the database may be away a while: retried at the next wake
            log.warning("reading the newest tree to cosign failed", error=repr(exc))
            return
        if note is None:
            return
        committed = checkpoint_of(note)
        if self._offered is None or committed.tree_size > self._offered.tree_size:
            self._offered = committed
            self._update_backlog()

    async def _follow(self, host: WorkerHost) -> None:
        """Publish what the cosigner published, while a submitter here waits for it."""
        read_at = -1  # the shared tree size when storage was last read
        pause = FOLLOW_INTERVAL
        while True:
            if self._wanted() is None:
                self._wake.clear()
                await self._wake.wait()
                pause = FOLLOW_INTERVAL
                continue
            shown = host.board.largest()
            published = self.published.tree_size if self.published is not None else -1
            if shown > max(published, read_at):
                read_at = shown
                try:
                    note = await self._storage.latest_cosigned()
                except Exception as exc:  # the database may be away: looked at again later
                    log.warning("reading the cosigned checkpoint failed", error=repr(exc))
                    read_at, pause, note = -1, FOLLOW_MAX, None
                if note is not None and self._collector.cosigned(note):
                    await self._publish(checkpoint_of(note))
                    continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
            pause = FOLLOW_INTERVAL if self._wake.is_set() else min(pause * 2, FOLLOW_MAX)

    async def _cosign_offers(self) -> None:
        backoff = RETRY_MIN
        while True:
            if self._others_committed:
                await self._newest_committed()
            target = self._wanted()
            if target is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._wake.clear()  # an offer from now on is worth an attempt of its own
            started = self._clock()
            try:
                published, collected = await self._cosign(target)
            except Exception as exc:  # the loop must outlive any attempt
                self._metrics.cosigning_seconds.labels("failed").observe(self._clock() - started)
                log.warning(
                    "checkpoint not published: no quorum",
                    tree_size=target.tree_size,
                    error=f"{type(exc).__name__}: {exc}",
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), backoff)
                backoff = min(backoff * 2, RETRY_MAX)
                continue
            backoff = RETRY_MIN
            if collected:
                self._metrics.cosigning_seconds.labels("cosigned").observe(self._clock() - started)
            await self._publish(published)

    async def _cosign(self, target: LatestCheckpoint) -> tuple[LatestCheckpoint, bool]:
        """``target`` cosigned by a quorum and recorded in storage, and True; or, if
        another process sharing the database recorded a cosigned checkpoint of a
        tree at least as large, that one, and False."""
        stored = await self._storage.latest_cosigned()
        mine = self.published is not None and stored == self.published.note
        if stored is not None and not mine and self._collector.cosigned(stored):
            cp = checkpoint_of(stored)
            if cp.tree_size >= target.tree_size:
                return cp, False
        note = await self._collector.collect(target.note, target.tree_size)
        await self._storage.record_cosigned(target.tree_size, note)
        cosigned = LatestCheckpoint(
            note=note, tree_size=target.tree_size, root_hash=target.root_hash
        )
        return cosigned, True

    async def _publish(self, checkpoint: LatestCheckpoint) -> None:
        if self.published is not None and checkpoint.tree_size <= self.published.tree_size:
            return
        self.published = checkpoint
        self._published_at = self._clock()
        self._reader.publish(checkpoint.note, checkpoint.tree_size, checkpoint.root_hash)
        self._metrics.checkpoints_published.inc()
        self._metrics.published_tree_size.set(checkpoint.tree_size)
        self._update_backlog()
        try:
            await self._on_published(checkpoint)
        except Exception:
            log.exception("answering the submitters of a published checkpoint failed")


def _size(body: bytes) -> int | None:
    text = body.decode("ascii", "replace")
    if not text.endswith("\n") or not text[:-1].isdigit():
        return None
    return int(text[:-1])


def _cosignature(witness: PolicyWitness, text: str, body: bytes) -> Signature:
    """The witness's valid cosignature among the lines of ``body``."""
    verifier = witness.verifier
    try:
        _, signatures = split_note(text.encode() + b"\n" + body)
    except FormatError as exc:
        raise _Refused(f"not signature lines: {exc}") from exc
    for sig in signatures:
        if (
            sig.name == verifier.name
            and sig.key_id == verifier.key_id
            and verifier.verify(text.encode(), sig.signature)
        ):
            return sig
    raise _Refused("no valid cosignature by the witness's key in the answer")
