"""Prometheus metrics for firmlog's HTTP services, with ``prometheus_client``.

Each app has its own :class:`~prometheus_client.CollectorRegistry`, never the
process-wide default one (tests run many apps in one process). On it,
:class:`ServiceMetrics` puts what every service exports:

- ``process_*`` (CPU, memory, open files, start time) and ``python_info``;
- ``firmlog_build_info{service,version}``, always 1.

The log server and the monitor subclass it and define their own metrics on
``self.registry`` with prometheus_client's Counter, Gauge and Histogram
(counters are named with their ``_total``: prometheus_client keeps it once).
``GET /metrics`` is :func:`metrics_handler`, in the text format 0.0.4.

Counters carry no ``_created`` samples (prometheus_client's switch for that
is process-wide; these programs own their process).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "SIZE_BUCKETS",
    "ScrapedGauge",
    "ServiceMetrics",
    "metrics_handler",
]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)

disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client


def installed_version(distribution: str) -> str:
    """The installed version of ``distribution``; "unknown" in a source tree never installed."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


class ServiceMetrics:
    """A registry of one app: process, platform and build info; subclasses add theirs."""

    def __init__(self, service: str, distribution: str) -> None:
        """``service``: the program's name (``firmlog-server``); ``distribution``: the
        package whose version it reports."""
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.build_info = Gauge(
            "firmlog_build_info",
            "Always 1: the service and the version of the package it runs.",
            ("service", "version"),
            registry=self.registry,
        )
        self.build_info.labels(service, installed_version(distribution)).set(1)

    def exposition(self) -> bytes:
        """Every metric, in the Prometheus text format 0.0.4."""
        return generate_latest(self.registry)


class ScrapedGauge(Collector):
    """A gauge computed when the metrics are scraped: ``function`` gives its value,
    or None for no sample (nothing to measure yet). It runs on the event loop while
    ``/metrics`` is answered: it must only read, never block."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.function: Callable[[], float | None] = lambda: None
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation)
        value = self.function()
        if value is not None:
            family.add_metric([], value)
        yield family


def metrics_handler(
    metrics: ServiceMetrics,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``GET /metrics`` handler of an app whose metrics are ``metrics``."""

    async def get_metrics(_request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(),
            headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"},
        )

    return get_metrics
