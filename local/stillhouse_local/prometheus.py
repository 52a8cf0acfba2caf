"""The embedded stack's metrics as Prometheus text (`GET /metrics`), fed by the same facade as CloudWatch.

Names follow Prometheus' conventions: `stillhouse_<snake_case>`; counters end in `_total`; a duration in
milliseconds becomes a histogram in seconds; the labels are the metric's dimensions.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from stillhouse.telemetry.metrics import Kind, Metric

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


def prometheus_name(metric: Metric) -> str:
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", metric.name).lower()
    if metric.unit == "Milliseconds":
        return f"stillhouse_{snake}_seconds"
    if metric.unit == "Seconds":
        return f"stillhouse_{snake}_seconds"
    if metric.name == "EstimatedCost":
        return f"stillhouse_{snake}_usd"
    return f"stillhouse_{snake}"


class PrometheusSink:
    """A metrics sink (stillhouse.telemetry.metrics.Sink) kept in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._collectors: dict[str, Counter | Gauge | Histogram] = {}
        self._lock = threading.Lock()

    def record(self, metric: Metric, value: float, dimensions: Mapping[str, str]) -> None:
        with self._lock:
            collector = self._collectors.get(metric.name) or self._create(metric)
        child = collector.labels(**dimensions) if metric.dimensions else collector
        if metric.unit == "Milliseconds":
            value /= 1000
        if metric.kind is Kind.COUNTER:
            child.inc(value)
        elif metric.kind is Kind.GAUGE:
            child.set(value)
        else:
            child.observe(value)

    def _create(self, metric: Metric) -> Counter | Gauge | Histogram:
        name, labels = prometheus_name(metric), list(metric.dimensions)
        if metric.kind is Kind.COUNTER:
            collector = Counter(name, metric.help, labels, registry=self.registry)
        elif metric.kind is Kind.GAUGE:
            collector = Gauge(name, metric.help, labels, registry=self.registry)
        elif metric.unit in ("Milliseconds", "Seconds"):
            collector = Histogram(name, metric.help, labels, registry=self.registry, buckets=_LATENCY_BUCKETS_S)
        else:
            collector = Histogram(name, metric.help, labels, registry=self.registry)
        self._collectors[metric.name] = collector
        return collector

    def flush(self) -> None:
        return None  # scraped, not pushed

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
