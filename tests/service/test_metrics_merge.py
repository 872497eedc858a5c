"""merge_expositions: the /metrics of several processes of one service as one
(firmlog.service.metrics), parsed back with prometheus_client's own parser."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from support.metrics import Samples

from firmlog.service.metrics import merge_expositions


def process(requests: dict[str, int], latencies: list[float], size: int, age: float) -> str:
    """The exposition of one process: a labelled counter, a histogram, three gauges."""
    r = CollectorRegistry()
    counter = Counter("app_requests_total", "Requests.", ("route",), registry=r)
    for route, n in requests.items():
        counter.labels(route).inc(n)
    histogram = Histogram("app_seconds", "Latency.", registry=r, buckets=(0.1, 1.0))
    for latency in latencies:
        histogram.observe(latency)
    Gauge("app_tree_size", "Largest wins.", registry=r).set(size)
    Gauge("app_age_seconds", "Smallest wins.", registry=r).set(age)
    Gauge("app_pool", "Adds up.", registry=r).set(size // 10)
    return generate_latest(r).decode()


def test_counters_and_histograms_add_up_and_gauges_as_told() -> None:
    one = process({"/a": 2, "/b": 1}, [0.05, 0.5], 40, 3.0)
    two = process({"/a": 5}, [2.0], 70, 1.5)
    merged = merge_expositions(
        [one, two], largest={"app_tree_size"}, smallest={"app_age_seconds"}
    ).decode()
    samples = Samples(merged)
    assert samples['app_requests_total{route="/a"}'] == 7
    assert samples['app_requests_total{route="/b"}'] == 1
    assert samples['app_seconds_bucket{le="0.1"}'] == 1
    assert samples['app_seconds_bucket{le="1.0"}'] == 2
    assert samples['app_seconds_bucket{le="+Inf"}'] == 3
    assert samples["app_seconds_count"] == 3
    assert samples["app_seconds_sum"] == pytest.approx(2.55)
    assert samples["app_tree_size"] == 70
    assert samples["app_age_seconds"] == 1.5
    assert samples["app_pool"] == 11
    assert samples.families["app_requests"].type == "counter"
    assert samples.families["app_seconds"].type == "histogram"
    # One process alone is its own exposition, byte for byte.
    assert merge_expositions([one]).decode() == one


def test_a_metric_of_two_types_is_refused() -> None:
    r = CollectorRegistry()
    Counter("app_pool", "Adds up.", registry=r).inc()
    other = generate_latest(r).decode()
    with pytest.raises(ValueError, match="app_pool is a gauge in one exposition and a counter"):
        merge_expositions([process({}, [], 1, 1.0), other])
