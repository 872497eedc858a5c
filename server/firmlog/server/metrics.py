"""The log server's Prometheus metrics (prometheus_client, on the app's own registry).

What every service exports (process, platform, ``firmlog_build_info``) and
``GET /metrics`` are in :mod:`firmlog.service.metrics`. Updated from the event
loop; ``/metrics`` reads them there too.

With ``serve --workers N`` each worker counts in its own registry, and
:class:`WorkerMetrics` answers ``/metrics`` for the whole server: the worker a
scrape reaches asks every other worker for its exposition, on the Unix socket
each listens on in the workers' private directory
(:class:`firmlog.server.workers.WorkerHost`), and merges them with its own
(:func:`firmlog.service.metrics.merge_expositions`): counters and histograms
add up, and so do the pool and the processes' memory and CPU; the tree sizes
are the largest any worker knows, the checkpoint ages the smallest.
``firmlog_workers`` says how many workers the scrape includes: fewer than N
while one is being restarted (its counts are missing from that scrape).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import structlog
from aiohttp import ClientError, ClientSession, ClientTimeout, UnixConnector, web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from firmlog.server.workers import WorkerHost
from firmlog.service.metrics import (
    CONTENT_TYPE,
    LATENCY_BUCKETS,
    SIZE_BUCKETS,
    ScrapedGauge,
    ServiceMetrics,
    merge_expositions,
)

__all__ = ["CONTENT_TYPE", "ServerMetrics", "WorkerMetrics"]

log = structlog.get_logger("firmlog.metrics")

LARGEST = frozenset(
    {
        "firmlog_tree_size",
        "firmlog_published_tree_size",
        "firmlog_publish_tree_size",
        "firmlog_unpublished_entries",
    }
)
"""Gauges merged across workers by their largest value: what the server is at."""
SMALLEST = frozenset({"firmlog_checkpoint_age_seconds", "firmlog_published_checkpoint_age_seconds"})
"""Gauges merged by their smallest value: the age of the newest checkpoint served."""


class _EmptyLabelsOmitted(Collector):
    """Shows ``metric`` without its labels whose value is empty.

    Prometheus stores a label with an empty value as no label at all, so this
    changes no series; it keeps a label that only some series have (the reason
    of a refused submission) out of the others' exposition, which stays as it was.
    """

    def __init__(self, metric: MetricWrapperBase, registry: CollectorRegistry) -> None:
        self._metric = metric
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        yield from self._metric.describe()

    def collect(self) -> Iterator[Metric]:
        for family in self._metric.collect():
            family.samples = [
                s._replace(labels={k: v for k, v in s.labels.items() if v}) for s in family.samples
            ]
            yield family


class ServerMetrics(ServiceMetrics):
    """Every metric the log server exports."""

    def __init__(self) -> None:
        super().__init__("firmlog-server", "firmlog-server")
        r = self.registry
        self.workers = Gauge(
            "firmlog_workers",
            "Server processes whose metrics this scrape adds up (serve --workers N: N, "
            "fewer while one is restarted).",
            registry=r,
        )
        self.workers.set(1)
        self.requests = Counter(
            "firmlog_http_requests_total",
            "HTTP requests by route and status.",
            ("route", "status"),
            registry=r,
        )
        self.request_seconds = Histogram(
            "firmlog_http_request_seconds",
            "HTTP request latency.",
            ("route",),
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.submissions = Counter(
            "firmlog_submissions_total",
            "Submissions by outcome: integrated, duplicate, pool_full, unproven (logged, no "
            "proof yet), refused (by the ledger rules at integration) or rejected (before the "
            "pool: malformed, badly signed, too large, too slow); refused and rejected ones "
            "by reason, the error kind they were answered with.",
            ("outcome", "reason"),
            registry=None,
        )
        _EmptyLabelsOmitted(self.submissions, r)
        self.batch_size = Histogram(
            "firmlog_batch_entries",
            "Entries per integrated batch.",
            registry=r,
            buckets=SIZE_BUCKETS,
        )
        self.integrate_seconds = Histogram(
            "firmlog_integrate_seconds",
            "Time to integrate and commit one batch.",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.integration_errors = Counter(
            "firmlog_integration_errors_total", "Batches that failed to integrate.", registry=r
        )
        self.tree_size = Gauge("firmlog_tree_size", "Size of the latest checkpoint.", registry=r)
        self.pool = Gauge("firmlog_pool_entries", "Entries waiting to be integrated.", registry=r)
        self.signing_refusals = Counter(
            "firmlog_signing_refusals_total",
            "Trees the log key refused to sign: not provably consistent with the last "
            "checkpoint this server published. Any is an incident.",
            registry=r,
        )
        self.checkpoint_age = ScrapedGauge(
            "firmlog_checkpoint_age_seconds",
            "Seconds since the checkpoint this server serves was signed: by the newest of its "
            "cosignatures' timestamps, else since this process signed it or first read it.",
            r,
        )
        # Witnessing (with --witness-policy).
        self.witness_requests = Counter(
            "firmlog_witness_requests_total",
            "add-checkpoint requests to witnesses by witness and outcome: cosigned, "
            "conflict (409: the witness knows another size), refused (any other answer, "
            "or no valid cosignature), unreachable (no answer in time), cancelled (the "
            "quorum was met without it).",
            ("witness", "outcome"),
            registry=r,
        )
        self.witness_request_seconds = Histogram(
            "firmlog_witness_request_seconds",
            "Latency of add-checkpoint requests that got an answer, by witness.",
            ("witness",),
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.cosigning_seconds = Histogram(
            "firmlog_cosigning_seconds",
            "Time to collect a quorum of cosignatures for one checkpoint (by outcome).",
            ("outcome",),
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.checkpoints_published = Counter(
            "firmlog_checkpoints_published_total",
            "Checkpoints published with a quorum of cosignatures (newer ones supersede "
            "older ones still waiting, so fewer than batches).",
            registry=r,
        )
        self.published_tree_size = Gauge(
            "firmlog_published_tree_size", "Tree size of the published checkpoint.", registry=r
        )
        self.unpublished_entries = Gauge(
            "firmlog_unpublished_entries",
            "Entries integrated but not yet covered by the published (cosigned) checkpoint.",
            registry=r,
        )
        self.published_age = ScrapedGauge(
            "firmlog_published_checkpoint_age_seconds",
            "Seconds since this process published (or adopted) the checkpoint it serves.",
            r,
        )

        # The publish directory (with --publish-dir).
        self.publish_failures = Counter(
            "firmlog_publish_failures_total",
            "Attempts to write a checkpoint and its tiles to the publish directory "
            "that failed (retried at the next checkpoint).",
            registry=r,
        )
        self.publish_files = Counter(
            "firmlog_publish_files_total", "Tiles and bundles written to the directory.", registry=r
        )
        self.publish_tree_size = Gauge(
            "firmlog_publish_tree_size",
            "Tree size of the publish directory's checkpoint.",
            registry=r,
        )
        self.publish_seconds = Counter(
            "firmlog_publish_seconds_total", "Seconds spent writing the directory.", registry=r
        )

    def submitted(self, outcome: str, reason: str = "") -> None:
        """Count one submission's outcome (a refused or rejected one with its reason)."""
        self.submissions.labels(outcome, reason).inc()


class WorkerMetrics:
    """``/metrics`` for every worker of this server (module docstring).

    :meth:`start` listens on this worker's socket, where the others ask for its
    exposition; :meth:`exposition` is the merged one. A worker that does not
    answer within ``timeout`` seconds (being restarted) is left out, and logged.
    """

    PATH = "/metrics/worker"

    def __init__(self, metrics: ServerMetrics, host: WorkerHost, timeout: float = 2.0) -> None:
        self._metrics = metrics
        self._host = host
        self._timeout = timeout
        self._runner: web.AppRunner | None = None
        self._peers: dict[int, ClientSession] = {}

    async def start(self) -> None:
        if self._host.slot is None:
            raise RuntimeError("worker metrics run in a worker that claimed its slot")
        app = web.Application()
        app.router.add_get(self.PATH, self._own)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self._host.socket_of(self._host.slot))).start()
        timeout = ClientTimeout(total=self._timeout)
        for slot in range(self._host.count):
            if slot != self._host.slot:
                connector = UnixConnector(path=str(self._host.socket_of(slot)))
                self._peers[slot] = ClientSession(connector=connector, timeout=timeout)

    async def stop(self) -> None:
        for session in self._peers.values():
            await session.close()
        self._peers.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _own(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.exposition(), content_type="text/plain")

    async def exposition(self) -> bytes:
        """This worker's metrics and every other worker's that answers, merged."""
        own = self._metrics.exposition().decode("utf-8")
        peers = await asyncio.gather(*(self._fetch(s, c) for s, c in self._peers.items()))
        texts = [own, *(text for text in peers if text is not None)]
        return merge_expositions(texts, largest=LARGEST, smallest=SMALLEST)

    async def _fetch(self, slot: int, session: ClientSession) -> str | None:
        try:
            async with session.get(f"http://worker-{slot}{self.PATH}") as resp:
                if resp.status != 200:
                    raise ClientError(f"status {resp.status}")
                return await resp.text()
        except (ClientError, OSError, TimeoutError) as exc:
            log.warning(
                "metrics: a worker did not answer; its metrics are left out of this scrape",
                slot=slot,
                error=f"{type(exc).__name__}: {exc}",
            )
            return None
