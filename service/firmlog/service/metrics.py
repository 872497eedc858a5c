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

A service run as several processes answers ``/metrics`` for all of them:
:func:`merge_expositions` merges their expositions into one, as if one process
had counted everything (counters and histograms add up; each gauge is summed,
or its largest or smallest value is taken, as its meaning asks).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
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
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "SIZE_BUCKETS",
    "ScrapedGauge",
    "ServiceMetrics",
    "merge_expositions",
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


PROCESS_GAUGES_MAX = frozenset({"process_max_fds", "python_info", "firmlog_build_info"})
"""Gauges of every service whose merged value is the largest of the processes'."""
PROCESS_GAUGES_MIN = frozenset({"process_start_time_seconds"})
"""Gauges of every service whose merged value is the smallest (the oldest process)."""


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merge_expositions(
    texts: Iterable[str], *, largest: Collection[str] = (), smallest: Collection[str] = ()
) -> bytes:
    """The expositions (text format 0.0.4) of several processes of one service as
    one, in the same format, families in the order they first appear.

    A sample of a counter or histogram is the sum of the processes' samples of
    its name and labels, and so is a gauge's, unless its family is named in
    ``largest`` or ``smallest`` (with :data:`PROCESS_GAUGES_MAX` and
    :data:`PROCESS_GAUGES_MIN`): then it is the largest or smallest value. A
    family must have one type and help text in every exposition (ValueError)."""
    largest = PROCESS_GAUGES_MAX | frozenset(largest)
    smallest = PROCESS_GAUGES_MIN | frozenset(smallest)
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                values[family.name] = {}
            elif (merged.type, merged.documentation) != (family.type, family.documentation):
                raise ValueError(
                    f"metric {family.name} is a {merged.type} in one exposition and a "
                    f"{family.type} in another"
                )
            pick = _pick(family, largest, smallest)
            samples = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen = samples.get(key)
                samples[key] = sample.value if seen is None else pick(seen, sample.value)
    for name, merged in families.items():
        merged.samples = [
            Sample(sample, dict(labels), value) for (sample, labels), value in values[name].items()
        ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)


def _pick(
    family: Metric, largest: Collection[str], smallest: Collection[str]
) -> Callable[[float, float], float]:
    if family.type == "gauge" and family.name in largest:
        return max
    if family.type == "gauge" and family.name in smallest:
        return min
    if family.type in ("counter", "gauge", "histogram", "summary", "gaugehistogram", "unknown"):
        return _add
    raise ValueError(f"metric {family.name} is of type {family.type}: no way to merge it")


def _add(a: float, b: float) -> float:
    return a + b


Exposition = Callable[[], Awaitable[bytes]]
"""What ``GET /metrics`` answers with: the exposition, in the text format 0.0.4."""


def metrics_handler(
    metrics: ServiceMetrics, exposition: Exposition | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``GET /metrics`` handler of an app whose metrics are ``metrics``; with
    ``exposition``, what that returns (the metrics of several processes, merged)."""

    async def get_metrics(_request: web.Request) -> web.Response:
        body = metrics.exposition() if exposition is None else await exposition()
        return web.Response(
            body=body,
            headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"},
        )

    return get_metrics
