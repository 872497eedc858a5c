"""The monitor's Prometheus metrics (prometheus_client, on the app's own registry).

What every service exports (process, platform, ``firmlog_build_info``) and
``GET /metrics`` are in :mod:`firmlog.service.metrics`. Updated from the event
loop; ``/metrics`` reads them there too.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from firmlog.service.metrics import CONTENT_TYPE, ServiceMetrics

__all__ = ["CONTENT_TYPE", "MonitorMetrics"]


class MonitorMetrics(ServiceMetrics):
    """Every metric the monitor exports."""

    def __init__(self) -> None:
        super().__init__("firmlog-monitor", "firmlog-monitor")
        r = self.registry
        self.requests = Counter(
            "firmlog_monitor_http_requests_total",
            "HTTP requests by route and status.",
            ("route", "status"),
            registry=r,
        )
        self.polls = Counter(
            "firmlog_monitor_polls_total", "Polls of the log by outcome.", ("outcome",), registry=r
        )
        self.tree_size = Gauge(
            "firmlog_monitor_trusted_tree_size",
            "Size of the latest verified checkpoint.",
            registry=r,
        )
        self.checked = Gauge(
            "firmlog_monitor_checked_entries", "Entries checked by the ledger replay.", registry=r
        )
        self.alerts = Counter(
            "firmlog_monitor_alerts_total", "Content alerts raised, by kind.", ("kind",), registry=r
        )
        self.split_views = Counter(
            "firmlog_monitor_split_views_total",
            "Split views proven (evidence stored). Any is an incident.",
            registry=r,
        )
        self.cosignatures = Counter(
            "firmlog_monitor_cosignatures_total",
            "Checkpoints cosigned, by path.",
            ("via",),
            registry=r,
        )
        self.witness_refusals = Counter(
            "firmlog_monitor_witness_refusals_total",
            "add-checkpoint requests refused, by status.",
            ("status",),
            registry=r,
        )
        self.log_up = Gauge(
            "firmlog_monitor_log_up", "1 if the last poll of the log succeeded, else 0.", registry=r
        )
        self.gossip = Counter(
            "firmlog_monitor_gossip_total",
            "Gossip exchanges with peers, by direction and outcome.",
            ("direction", "outcome"),
            registry=r,
        )
