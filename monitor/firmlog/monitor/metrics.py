"""Prometheus metrics of the monitor (text exposition format 0.0.4), without a dependency.

The same small registry shape as ``firmlog.server.metrics`` (which the
monitor cannot import: it depends on the client only). Single-threaded use
from the event loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["CONTENT_TYPE", "Counter", "Gauge", "MonitorMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class Counter:
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self._values: dict[tuple[str, ...], float] = {} if labels else {(): 0.0}

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for key, v in sorted(self._values.items()):
            pairs = ",".join(
                f'{n}="{_escape(x)}"' for n, x in zip(self.label_names, key, strict=True)
            )
            lines.append(f"{self.name}{{{pairs}}} {_num(v)}" if pairs else f"{self.name} {_num(v)}")
        return lines


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        self._values[labels] = value


class MonitorMetrics:
    """Every metric the monitor exports."""

    def __init__(self) -> None:
        self.requests = Counter(
            "firmlog_monitor_http_requests_total",
            "HTTP requests by route and status.",
            ("route", "status"),
        )
        self.polls = Counter(
            "firmlog_monitor_polls_total", "Polls of the log by outcome.", ("outcome",)
        )
        self.tree_size = Gauge(
            "firmlog_monitor_trusted_tree_size", "Size of the latest verified checkpoint."
        )
        self.checked = Gauge(
            "firmlog_monitor_checked_entries", "Entries checked by the ledger replay."
        )
        self.alerts = Counter(
            "firmlog_monitor_alerts_total", "Content alerts raised, by kind.", ("kind",)
        )
        self.split_views = Counter(
            "firmlog_monitor_split_views_total",
            "Split views proven (evidence stored). Any is an incident.",
        )
        self.cosignatures = Counter(
            "firmlog_monitor_cosignatures_total", "Checkpoints cosigned, by path.", ("via",)
        )
        self.witness_refusals = Counter(
            "firmlog_monitor_witness_refusals_total",
            "add-checkpoint requests refused, by status.",
            ("status",),
        )
        self.gossip = Counter(
            "firmlog_monitor_gossip_total",
            "Gossip exchanges with peers, by direction and outcome.",
            ("direction", "outcome"),
        )
        self.log_up = Gauge(
            "firmlog_monitor_log_up", "1 if the last poll of the log succeeded, else 0."
        )

    def render(self) -> str:
        lines: list[str] = []
        for metric in (
            self.requests,
            self.polls,
            self.tree_size,
            self.checked,
            self.alerts,
            self.split_views,
            self.cosignatures,
            self.witness_refusals,
            self.log_up,
            self.gossip,
        ):
            lines += metric.render()
        return "\n".join(lines) + "\n"
