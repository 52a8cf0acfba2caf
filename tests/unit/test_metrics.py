"""Metrics: what the domain reports comes out as CloudWatch EMF log lines (parsed here as CloudWatch
would), with few, bounded dimensions, each rolled up to the service; a Prometheus sink sees the same."""
from __future__ import annotations

import io
import json
import random

import pytest
from stillhouse_local.prometheus import PrometheusSink

from stillhouse.config import BreakerSettings
from stillhouse.errors import ErrorClass, TransitionRefused
from stillhouse.jobs.model import JobStatus
from stillhouse.jobs.store import JobStore
from stillhouse.routing.breaker import Breaker
from stillhouse.routing.feedback import report_outcome
from stillhouse.routing.state import EndpointStateStore
from stillhouse.telemetry.metrics import CATALOGUE, EmfSink, Metrics, log_metrics, metrics
from tests.support.clock import Clock
from tests.support.jobs import make_job
from tests.support.tables import create_state_table


class Emf:
    """The EMF lines this process wrote since the last read (after flushing the metrics)."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def printed(self) -> list[dict]:
        """What was written, without flushing first."""
        lines = self.stream.getvalue().splitlines()
        self.stream.seek(0)
        self.stream.truncate()
        return [b for b in (json.loads(line) for line in lines if line.startswith("{")) if "_aws" in b]

    def blobs(self) -> list[dict]:
        metrics.flush()
        return self.printed()

    def values(self, blobs: list[dict], name: str) -> list[tuple[dict, list[float]]]:
        """(dimensions, values) of `name` in each blob that has it."""
        found = []
        for blob in blobs:
            (directive,) = blob["_aws"]["CloudWatchMetrics"]
            if any(m["Name"] == name for m in directive["Metrics"]):
                dims = {k: blob[k] for k in directive["Dimensions"][0]}
                value = blob[name]
                found.append((dims, value if isinstance(value, list) else [value]))
        return found


@pytest.fixture
def emf(monkeypatch):
    (sink,) = [s for s in metrics.sinks if isinstance(s, EmfSink)]
    metrics.flush()  # what earlier tests left behind
    stream = io.StringIO()
    monkeypatch.setattr(sink, "stream", stream)
    return Emf(stream)


@pytest.fixture
def store(jobs_table):
    return JobStore(jobs_table)


def test_a_job_that_completes_is_counted_once_with_its_latency_attempts_and_dimensions(store, emf):
    store.create(make_job(priority="high"))
    store.claim_attempt("j1", 0)
    store.transition("j1", JobStatus.IN_PROGRESS, actor="dispatch", endpoint="gpu-a", attempt=1,
                     fields={"runpod_id": "rp1"})
    store.transition("j1", JobStatus.COMPLETED, actor="webhook", endpoint="gpu-a", attempt=1, fields={"output": 1})
    with pytest.raises(TransitionRefused):  # a duplicate webhook changes nothing, and counts nothing
        store.transition("j1", JobStatus.COMPLETED, actor="webhook", endpoint="gpu-a", attempt=1)

    blobs = emf.blobs()
    outcome = {"task": "echo", "priority": "high", "endpoint": "gpu-a", "service": "stillhouse"}
    assert emf.values(blobs, "JobsSubmitted") == [({"task": "echo", "priority": "high", "service": "stillhouse"},
                                                   [1.0])]
    assert emf.values(blobs, "JobsCompleted") == [(outcome, [1.0])]
    assert emf.values(blobs, "JobsFailed") == []
    assert emf.values(blobs, "Attempts") == [(outcome, [1.0])]
    assert emf.values(blobs, "Retries") == [(outcome, [0.0])]
    [(dims, [latency])] = emf.values(blobs, "EndToEndLatency")
    assert dims == outcome and latency >= 0


def test_every_blob_is_valid_emf_rolled_up_to_the_service_and_never_names_a_tenant_or_job(store, emf):
    store.create(make_job(job_id="j9", tenant="acme-corp"))
    store.transition("j9", JobStatus.FAILED, actor="dispatch", fields={"error": "no", "error_class": "terminal"})
    blobs = emf.blobs()
    assert blobs
    for blob in blobs:
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "stillhouse"
        assert isinstance(blob["_aws"]["Timestamp"], int)
        assert directive["Dimensions"][-1] == ["service"]  # the roll-up the alarms use
        for dim in {d for dims in directive["Dimensions"] for d in dims}:
            assert blob[dim] not in ("acme-corp", "j9")
        for m in directive["Metrics"]:
            assert m["Name"] in blob and m["Unit"]
    assert emf.values(blobs, "JobsFailed")[0][0]["endpoint"] == "none"  # failed before any endpoint


def test_an_attempt_reports_queue_delay_execution_time_and_an_estimated_cost(emf):
    class Router:
        def succeeded(self, name, latency_ms): ...
        def failed(self, name, error_class, **kw): ...
        def released(self, name): ...

    report_outcome(Router(), "gpu-a", JobStatus.COMPLETED, None, None,
                   {"id": "rp1", "status": "COMPLETED", "delayTime": 120, "executionTime": 2000})
    report_outcome(Router(), "gpu-a", JobStatus.FAILED, ErrorClass.TRANSIENT, "boom",
                   {"id": "rp2", "status": "FAILED", "delayTime": 30, "executionTime": 0})
    blobs = emf.blobs()
    assert emf.values(blobs, "QueueDelay") == [({"endpoint": "gpu-a", "service": "stillhouse"}, [120.0, 30.0])]
    assert emf.values(blobs, "ExecutionTime")[0][1] == [2000.0, 0.0]
    assert emf.values(blobs, "AttemptsFailed")[0][1] == [1.0]
    [(_, [two_seconds, none])] = emf.values(blobs, "EstimatedCost")
    assert two_seconds == pytest.approx(2 * 0.00019 + 0.0000172)
    assert none == pytest.approx(0.0000172)


@pytest.fixture
def breaker(module_dynamodb):
    table = create_state_table(module_dynamodb, "metrics-endpoint-state")
    clock = Clock()
    store = EndpointStateStore(table, sleep=lambda _: None, rng=random.Random(0))
    return Breaker(store, BreakerSettings(consecutive_failures=2, cooldown_s=30), now=clock), clock


def test_a_breaker_that_opens_and_closes_reports_both_and_how_long_it_was_open(breaker, emf):
    b, clock = breaker
    b.record_failure("gpu-b", ErrorClass.TRANSIENT)
    b.record_failure("gpu-b", ErrorClass.TRANSIENT)  # opens
    clock.advance(45)
    assert b.allow("gpu-b")  # half-open probe
    b.record_success("gpu-b", 100)  # closes
    blobs = emf.blobs()
    assert emf.values(blobs, "BreakerOpened") == [({"endpoint": "gpu-b", "service": "stillhouse"}, [1.0])]
    assert emf.values(blobs, "BreakerClosed")[0][1] == [1.0]
    assert emf.values(blobs, "BreakerTimeOpen")[0][1] == [45.0]


def test_handlers_flush_when_they_return_and_when_they_raise(emf):
    @log_metrics
    def handler(event, context):
        metrics.cache_lookup("echo", hit=event["hit"])
        if event.get("raise"):
            raise RuntimeError("boom")

    handler({"hit": True}, None)
    assert emf.values(emf.printed(), "CacheHits")[0][1] == [1.0]  # the handler's own flush wrote it
    with pytest.raises(RuntimeError):
        handler({"hit": False, "raise": True}, None)
    assert emf.values(emf.printed(), "CacheMisses")[0][1] == [1.0]


def test_the_prometheus_sink_sees_the_same_metrics_in_prometheus_shape():
    sink = PrometheusSink()
    facade = Metrics(sinks=[sink])
    facade.webhook_tried(False, last=True)
    facade.webhook_tried(True)
    facade.swept({"requeued": 2, "errors": 0})
    facade.breaker_open_for("gpu-a", 90)
    text = sink.exposition().decode()
    assert "stillhouse_webhook_deliveries_total 1.0" in text
    assert "stillhouse_webhook_delivery_failures_total 1.0" in text
    assert "stillhouse_webhook_deliveries_abandoned_total 1.0" in text
    assert 'stillhouse_sweeper_actions_total{action="requeued"} 2.0' in text
    assert 'action="errors"' not in text  # nothing happened: nothing counted
    assert 'stillhouse_breaker_open_for_seconds{endpoint="gpu-a"} 90.0' in text


def test_every_metric_has_a_unit_cloudwatch_knows_and_at_most_three_dimensions():
    from aws_lambda_powertools.metrics import MetricUnit

    units = {u.value for u in MetricUnit}
    for metric in CATALOGUE:
        assert metric.unit in units, metric.name
        assert len(metric.dimensions) <= 3 and not {"tenant", "tenant_id", "job_id"} & set(metric.dimensions)


def test_each_sweep_counts_its_actions_and_samples_how_long_each_breaker_has_been_open(jobs_table, emf):
    from datetime import UTC, datetime

    from stillhouse.jobs.deadlines import SettleDeadlines
    from stillhouse.jobs.sweeper import Sweeper
    from stillhouse.routing.breaker import health
    from stillhouse.routing.state import BreakerState, EndpointState
    from tests.support.callbacks import recorder

    now = datetime.now(UTC)
    store = JobStore(jobs_table)
    store.create(make_job("stale"))
    store.transition("stale", JobStatus.IN_PROGRESS, actor="dispatch", endpoint="a", attempt=1,
                     fields={"runpod_id": "rp1", "attempts": 1})
    opened = EndpointState(name="gpu-a", state=BreakerState.OPEN, opened_at=now.timestamp() - 600,
                           open_until=now.timestamp() + 30)
    closed = EndpointState(name="gpu-b")
    callbacks, notified, _ = recorder(store)
    sweeper = Sweeper(store=store, callbacks=callbacks, execution_status=lambda arn: "RUNNING",
                      fetch_status=lambda endpoint, runpod_id: {"id": runpod_id, "status": "COMPLETED", "output": 1},
                      notify=notified.append, deadlines=SettleDeadlines(),
                      breakers=lambda: [health(s, BreakerSettings(), now.timestamp()) for s in (opened, closed)])
    emf.blobs()  # what creating the job emitted
    sweeper.sweep(ahead_s=10**7, now=now)  # every job is due
    blobs = emf.blobs()
    assert emf.values(blobs, "SweeperActions") == [({"action": "settled", "service": "stillhouse"}, [1.0])]
    open_for = {dims["endpoint"]: values for dims, values in emf.values(blobs, "BreakerOpenFor")}
    assert open_for["gpu-b"] == [0.0]
    assert open_for["gpu-a"] == [pytest.approx(600)]  # sampled at the sweep's now
