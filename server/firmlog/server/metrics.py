"""Prometheus metrics in the text exposition format (version 0.0.4), without a dependency.

Counters, gauges and histograms with fixed label names; one registry per app.
Single-threaded use from the event loop.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[tuple[str, ...], float] = {}
        if not labels:
            self._values[()] = 0.0

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def render(self) -> list[str]:
        return [
            f"{self.name}{_labels(self.label_names, k)} {_num(v)}"
            for k, v in sorted(self._values.items())
        ]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        self._values[labels] = value


class FunctionGauge(_Metric):
    """A gauge whose value is computed when the metrics are rendered; None: no sample."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self.function: Callable[[], float | None] = lambda: None

    def render(self) -> list[str]:
        value = self.function()
        return [] if value is None else [f"{self.name} {_num(value)}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        labels: Sequence[str] = (),
    ) -> None:
        super().__init__(name, help_text, labels)
        self.buckets = tuple(buckets)
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        counts, sums = self._series.setdefault(labels, ([0] * (len(self.buckets) + 1), [0.0]))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        sums[0] += value

    def render(self) -> list[str]:
        out = []
        for key, (counts, sums) in sorted(self._series.items()):
            cumulative = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                cumulative += n
                le = f'le="{_num(bound)}"'
                out.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {cumulative}")
            out.append(f"{self.name}_sum{_labels(self.label_names, key)} {_num(sums[0])}")
            out.append(f"{self.name}_count{_labels(self.label_names, key)} {cumulative}")
        return out


M = TypeVar("M", bound=_Metric)


class Registry:
    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def add(self, metric: M) -> M:
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for m in self._metrics:
            lines += m.header() + m.render()
        return "\n".join(lines) + "\n"


class ServerMetrics:
    """Every metric the log server exports."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.requests = r.add(
            Counter(
                "firmlog_http_requests_total",
                "HTTP requests by route and status.",
                ("route", "status"),
            )
        )
        self.request_seconds = r.add(
            Histogram("firmlog_http_request_seconds", "HTTP request latency.", labels=("route",))
        )
        self.submissions = r.add(
            Counter("firmlog_submissions_total", "Submissions by outcome.", ("outcome",))
        )
        self.batch_size = r.add(
            Histogram("firmlog_batch_entries", "Entries per integrated batch.", SIZE_BUCKETS)
        )
        self.integrate_seconds = r.add(
            Histogram("firmlog_integrate_seconds", "Time to integrate and commit one batch.")
        )
        self.integration_errors = r.add(
            Counter("firmlog_integration_errors_total", "Batches that failed to integrate.")
        )
        self.tree_size = r.add(Gauge("firmlog_tree_size", "Size of the latest checkpoint."))
        self.pool = r.add(Gauge("firmlog_pool_entries", "Entries waiting to be integrated."))
        self.signing_refusals = r.add(
            Counter(
                "firmlog_signing_refusals_total",
                "Trees the log key refused to sign: not provably consistent with the last "
                "checkpoint this server published. Any is an incident.",
            )
        )
        # Witnessing (with --witness-policy).
        self.witness_requests = r.add(
            Counter(
                "firmlog_witness_requests_total",
                "add-checkpoint requests to witnesses by witness and outcome: cosigned, "
                "conflict (409: the witness knows another size), refused (any other answer, "
                "or no valid cosignature), unreachable (no answer in time), cancelled (the "
                "quorum was met without it).",
                ("witness", "outcome"),
            )
        )
        self.witness_request_seconds = r.add(
            Histogram(
                "firmlog_witness_request_seconds",
                "Latency of add-checkpoint requests that got an answer, by witness.",
                labels=("witness",),
            )
        )
        self.cosigning_seconds = r.add(
            Histogram(
                "firmlog_cosigning_seconds",
                "Time to collect a quorum of cosignatures for one checkpoint (by outcome).",
                labels=("outcome",),
            )
        )
        self.checkpoints_published = r.add(
            Counter(
                "firmlog_checkpoints_published_total",
                "Checkpoints published with a quorum of cosignatures (newer ones supersede "
                "older ones still waiting, so fewer than batches).",
            )
        )
        self.published_tree_size = r.add(
            Gauge("firmlog_published_tree_size", "Tree size of the published checkpoint.")
        )
        self.unpublished_entries = r.add(
            Gauge(
                "firmlog_unpublished_entries",
                "Entries integrated but not yet covered by the published (cosigned) checkpoint.",
            )
        )
        self.published_age = r.add(
            FunctionGauge(
                "firmlog_published_checkpoint_age_seconds",
                "Seconds since this process published (or adopted) the checkpoint it serves.",
            )
        )
