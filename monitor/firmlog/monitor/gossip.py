"""Gossip (DESIGN.md section 5): checkpoints exchanged with peer monitors.

Each monitor pushes its latest verified checkpoint to every peer
(``POST /v1/gossip``, body: the signed note) and pulls theirs (the peer's
witness endpoint ``GET /<hex sha256(origin)>/checkpoint``). Pushed and pulled
checkpoints go through one check, :func:`receive`:

- a note that is not a checkpoint: :class:`GossipRefusal` 400; another
  origin: 404; no valid signature by the log key: 403;
- a note the monitor can reconcile with its trusted checkpoint, with a proof
  built from its own log's tiles (:class:`~firmlog.client.trust.CheckpointTracker`):
  the same checkpoint, a proven prefix, or a proven extension, which the
  monitor then trusts and cosigns (:meth:`WatchedLog.advance`, via ``gossip``);
- a note that cannot be reconciled (a :class:`~firmlog.client.errors.SplitViewError`,
  checked by :func:`firmlog.monitor.follower.split_view_evidence`) is a split
  view: the evidence is stored byte for byte and the log is no longer cosigned;
- a note the monitor cannot check now (it has verified nothing yet, its log
  does not serve the tiles of that larger tree yet, or is down):
  :class:`GossipRefusal` 503, nothing kept.

:class:`Gossiper` runs the rounds on a timer: every peer at once, each
exchange under one deadline; a peer that is down is logged and counted, and
never stops the monitor.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

import aiohttp
import structlog

from firmlog.client.checkpoint import Checkpoint, open_checkpoint
from firmlog.client.errors import (
    FirmlogError,
    FormatError,
    HTTPStatusError,
    SignatureError,
    SplitViewError,
)
from firmlog.client.note import split_note
from firmlog.client.trust import CheckpointTracker
from firmlog.monitor.config import MonitorConfig
from firmlog.monitor.fetch import USER_AGENT, LogFetcher
from firmlog.monitor.follower import Follower, split_view_evidence
from firmlog.monitor.state import WatchedLog

__all__ = [
    "ADVANCED",
    "CONSISTENT",
    "NOT_CHECKED",
    "SPLIT_VIEW",
    "GossipRefusal",
    "GossipResult",
    "Gossiper",
    "receive",
]

log = structlog.get_logger("firmlog.monitor.gossip")

CONSISTENT = "consistent"  # the trusted checkpoint, or a proven prefix of it
ADVANCED = "advanced"  # a proven extension, now trusted and cosigned
SPLIT_VIEW = "split-view"  # evidence recorded
NOT_CHECKED = "not-checked"  # the monitor already proved a split view of this log


class GossipRefusal(Exception):
    """A gossiped note refused: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class GossipResult:
    result: str  # CONSISTENT, ADVANCED, SPLIT_VIEW or NOT_CHECKED
    tree_size: int  # the monitor's trusted tree size afterwards
    detail: str = ""

    @property
    def status(self) -> int:
        return 409 if self.result == SPLIT_VIEW else 200

    def to_json(self) -> dict[str, object]:
        extra = {"error": f"split view recorded: {self.detail}"} if self.status == 409 else {}
        return {
            **extra,
            "result": self.result,
            "split_view": self.result in (SPLIT_VIEW, NOT_CHECKED),
            "tree_size": self.tree_size,
            "detail": self.detail,
        }


def checkpoint_path(origin: str) -> str:
    """The witness path of a log's latest cosigned checkpoint."""
    return f"{hashlib.sha256(origin.encode('utf-8')).hexdigest()}/checkpoint"


async def receive(
    watched: WatchedLog, follower: Follower, note: bytes, source: str
) -> GossipResult:
    """Check a gossiped ``note`` against the monitor's view (see the module docstring)."""
    try:
        text, _ = split_note(note)
        cp = Checkpoint.parse(text)
    except FormatError as exc:
        raise GossipRefusal(400, f"not a checkpoint note: {exc}") from exc
    if cp.origin != watched.origin:
        raise GossipRefusal(404, f"unknown log origin {cp.origin[:100]!r}")
    try:
        open_checkpoint(note, watched.log_key)
    except SignatureError as exc:
        raise GossipRefusal(403, f"no valid signature by the log key: {exc}") from exc
    except FormatError as exc:
        raise GossipRefusal(400, str(exc)) from exc
    if watched.split_view:
        return GossipResult(NOT_CHECKED, watched.tree_size, "split view already proven")
    expected = watched.trusted
    if expected is None:
        # Nothing verified yet to prove it against: never trusted on a peer's word.
        raise GossipRefusal(503, "this monitor has verified no checkpoint of this log yet")
    tracker = CheckpointTracker.for_log_key(watched.log_key, expected)
    fetch = follower.fetcher.sync_tiles(asyncio.get_running_loop())
    try:
        try:
            new = await asyncio.to_thread(tracker.update, note, fetch)
        except SplitViewError as exc:
            evidence = await asyncio.to_thread(split_view_evidence, exc, fetch)
            async with watched.lock:
                if watched.split_view:
                    return GossipResult(NOT_CHECKED, watched.tree_size, "split view already proven")
                await watched.record_split_view(evidence)
            watched.metrics.gossip.labels("received", SPLIT_VIEW).inc()
            log.critical(
                "split view caught by gossip",
                origin=watched.origin,
                source=source,
                kind=evidence.kind,
            )
            return GossipResult(SPLIT_VIEW, watched.tree_size, evidence.detail)
    except FirmlogError as exc:
        # The log's tiles could not prove it either way (not served yet, bad data,
        # log down): nothing is proven, nothing is kept.
        watched.metrics.gossip.labels("received", "unchecked").inc()
        raise GossipRefusal(
            503, f"cannot check this checkpoint against the log now: {type(exc).__name__}: {exc}"
        ) from exc
    if new.checkpoint.tree_size <= expected.checkpoint.tree_size:
        watched.metrics.gossip.labels("received", CONSISTENT).inc()
        return GossipResult(CONSISTENT, watched.tree_size)
    async with watched.lock:
        sig = await watched.advance(expected, new, "gossip")
    watched.metrics.gossip.labels("received", ADVANCED if sig else CONSISTENT).inc()
    return GossipResult(ADVANCED if sig else CONSISTENT, watched.tree_size)


class Gossiper:
    """The task that pushes to and pulls from every peer, every ``gossip_interval`` seconds."""

    def __init__(
        self,
        watched: WatchedLog,
        follower: Follower,
        session: aiohttp.ClientSession,
        config: MonitorConfig,
    ) -> None:
        self.watched = watched
        self.follower = follower
        self.session = session
        self.config = config
        self.rounds = 0

    async def run(self) -> None:
        """Gossip forever (until cancelled)."""
        if not self.config.peers:
            return
        while True:
            await self.round()
            await asyncio.sleep(self.config.gossip_interval)

    async def round(self) -> None:
        """One exchange with every peer, at once; never raises (but cancellation)."""
        await asyncio.gather(*(self._exchange(peer) for peer in self.config.peers))
        self.rounds += 1

    async def _exchange(self, peer: str) -> None:
        for what, step in (("push", self.push), ("pull", self.pull)):
            try:
                async with asyncio.timeout(self.config.request_timeout):
                    await step(peer)
            except asyncio.CancelledError:
                raise
            except GossipRefusal as exc:
                self.watched.metrics.gossip.labels(what, str(exc.status)).inc()
                log.info("gossip: peer's checkpoint not taken", peer=peer, error=exc.message)
            except (TimeoutError, aiohttp.ClientError, OSError, FirmlogError) as exc:
                self.watched.metrics.gossip.labels(what, "unreachable").inc()
                log.warning(
                    "gossip: peer unreachable",
                    peer=peer,
                    step=what,
                    error=f"{type(exc).__name__}: {exc}",
                )
            except Exception:
                self.watched.metrics.gossip.labels(what, "error").inc()
                log.exception("gossip failed", peer=peer, step=what)

    def _url(self, peer: str, path: str) -> str:
        return f"{peer.rstrip('/')}/{path}"

    async def push(self, peer: str) -> None:
        """POST the latest verified checkpoint (the log's note, byte for byte) to ``peer``."""
        trusted = self.watched.trusted
        if trusted is None:
            return
        async with self.session.post(
            self._url(peer, "v1/gossip"),
            data=trusted.note,
            headers={"User-Agent": USER_AGENT, "Content-Type": "text/plain; charset=utf-8"},
            allow_redirects=False,
        ) as resp:
            body = await resp.content.read(4096)
        outcome = str(resp.status)
        self.watched.metrics.gossip.labels("push", outcome).inc()
        if resp.status == 409:
            log.warning(
                "gossip: peer recorded a split view from our checkpoint",
                peer=peer,
                answer=body.decode("utf-8", "replace")[:300],
            )
        elif resp.status != 200:
            log.info(
                "gossip: peer refused our checkpoint",
                peer=peer,
                status=resp.status,
                answer=body.decode("utf-8", "replace")[:300],
            )

    async def pull(self, peer: str) -> None:
        """GET ``peer``'s latest cosigned checkpoint and check it as a pushed one."""
        config = self.config
        fetcher = LogFetcher(
            self.session,
            peer,
            timeout=config.request_timeout,
            max_checkpoint_size=config.max_checkpoint_size,
            max_bundle_size=config.max_checkpoint_size,
        )
        try:
            note = await fetcher.get(
                checkpoint_path(self.watched.origin), config.max_checkpoint_size
            )
        except HTTPStatusError as exc:
            if exc.status != 404:
                raise
            self.watched.metrics.gossip.labels("pull", "none").inc()
            return  # the peer has cosigned nothing of this log yet
        result = await receive(self.watched, self.follower, note, f"pull {peer}")
        self.watched.metrics.gossip.labels("pull", result.result).inc()
