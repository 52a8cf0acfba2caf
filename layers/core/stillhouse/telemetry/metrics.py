"""The system's metrics, as one small facade the domain calls at the few places where things happen:
`metrics.job_finished(job)` when a job's status becomes terminal, `metrics.attempt_reported(...)` when a
RunPod attempt's outcome is learnt, and so on.

Every value goes to each sink. The CloudWatch sink is always there: it writes Embedded Metric Format log
lines with Powertools' EMF provider (a log line, never an AWS call); handlers flush it once per invocation
(`log_metrics`). The embedded stack adds a Prometheus sink (stillhouse_local.prometheus), so a local run
can be scraped at `GET /metrics`.

Dimensions are few and bounded: task, priority, endpoint (and a sweeper action); never a tenant or a job
id. Each EMF blob also rolls its metrics up to the service alone, which is what the alarms watch.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import wraps
from typing import TYPE_CHECKING, Any, Protocol, TextIO, TypeVar

from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from stillhouse.jobs.status import JobStatus

if TYPE_CHECKING:  # annotations only: `log_metrics` must not load the job model or the settings at import
    from stillhouse.jobs.model import Job

NAMESPACE = "stillhouse"
SERVICE = "stillhouse"


class Kind(StrEnum):
    COUNTER = "counter"  # events: summed
    DISTRIBUTION = "distribution"  # one observation per event (latency, cost): percentiles
    GAUGE = "gauge"  # a level sampled now (how long a breaker has been open)


@dataclass(frozen=True)
class Metric:
    name: str  # CloudWatch's metric name; Prometheus: stillhouse_<snake_case>
    unit: str  # a CloudWatch unit
    kind: Kind
    dimensions: tuple[str, ...]
    help: str


_JOB = ("task", "priority")
_OUTCOME = ("task", "priority", "endpoint")
_ENDPOINT = ("endpoint",)

JOBS_SUBMITTED = Metric("JobsSubmitted", "Count", Kind.COUNTER, _JOB, "jobs accepted by the API")
JOBS_COMPLETED = Metric("JobsCompleted", "Count", Kind.COUNTER, _OUTCOME, "jobs ended COMPLETED")
JOBS_FAILED = Metric("JobsFailed", "Count", Kind.COUNTER, _OUTCOME, "jobs ended FAILED")
JOBS_CANCELLED = Metric("JobsCancelled", "Count", Kind.COUNTER, _OUTCOME, "jobs ended CANCELLED")
JOBS_TIMED_OUT = Metric("JobsTimedOut", "Count", Kind.COUNTER, _OUTCOME, "jobs ended TIMED_OUT")
JOBS_FINISHED = Metric("JobsFinished", "Count", Kind.COUNTER, _OUTCOME, "jobs ended, whatever the status")
END_TO_END = Metric("EndToEndLatency", "Milliseconds", Kind.DISTRIBUTION, _OUTCOME,
                    "submission to terminal status")
ATTEMPTS = Metric("Attempts", "Count", Kind.DISTRIBUTION, _OUTCOME, "RunPod attempts a finished job used")
RETRIES = Metric("Retries", "Count", Kind.COUNTER, _OUTCOME, "attempts beyond the first, of finished jobs")
QUEUE_DELAY = Metric("QueueDelay", "Milliseconds", Kind.DISTRIBUTION, _ENDPOINT,
                     "RunPod's delayTime: waiting for a worker")
EXECUTION_TIME = Metric("ExecutionTime", "Milliseconds", Kind.DISTRIBUTION, _ENDPOINT, "RunPod's executionTime")
ATTEMPTS_FAILED = Metric("AttemptsFailed", "Count", Kind.COUNTER, _ENDPOINT, "RunPod attempts that failed")
ESTIMATED_COST = Metric("EstimatedCost", "None", Kind.DISTRIBUTION, _ENDPOINT,
                        "estimated USD of one attempt: GPU seconds at the configured price plus AWS per attempt")
BREAKER_OPENED = Metric("BreakerOpened", "Count", Kind.COUNTER, _ENDPOINT, "breaker transitions to OPEN")
BREAKER_CLOSED = Metric("BreakerClosed", "Count", Kind.COUNTER, _ENDPOINT, "breaker transitions to CLOSED")
BREAKER_TIME_OPEN = Metric("BreakerTimeOpen", "Seconds", Kind.DISTRIBUTION, _ENDPOINT,
                           "how long a breaker stayed open, at its close")
BREAKER_OPEN_FOR = Metric("BreakerOpenFor", "Seconds", Kind.GAUGE, _ENDPOINT,
                          "how long a breaker has been open now (0: closed); sampled each sweep")
CACHE_HITS = Metric("CacheHits", "Count", Kind.COUNTER, ("task",), "result cache hits")
CACHE_MISSES = Metric("CacheMisses", "Count", Kind.COUNTER, ("task",), "result cache misses")
WEBHOOK_DELIVERIES = Metric("WebhookDeliveries", "Count", Kind.COUNTER, (), "callers' webhooks delivered")
WEBHOOK_FAILURES = Metric("WebhookDeliveryFailures", "Count", Kind.COUNTER, (), "failed tries of callers' webhooks")
WEBHOOK_ABANDONED = Metric("WebhookDeliveriesAbandoned", "Count", Kind.COUNTER, (),
                           "callers' webhooks whose last try failed (the notice is in the DLQ)")
SWEEPER_ACTIONS = Metric("SweeperActions", "Count", Kind.COUNTER, ("action",), "what the sweeper did, by action")

CATALOGUE: tuple[Metric, ...] = tuple(v for v in dict(globals()).values() if isinstance(v, Metric))

_BY_STATUS = {JobStatus.COMPLETED: JOBS_COMPLETED, JobStatus.FAILED: JOBS_FAILED,
              JobStatus.CANCELLED: JOBS_CANCELLED, JobStatus.TIMED_OUT: JOBS_TIMED_OUT}


class Sink(Protocol):
    def record(self, metric: Metric, value: float, dimensions: Mapping[str, str]) -> None: ...

    def flush(self) -> None: ...


class EmfSink:
    """CloudWatch: one Powertools EMF provider per dimension set, each written as one log line at flush.

    The stream is the one stdout was when the sink was made, as Powertools' Logger binds its own: code that
    swaps sys.stdout for a while (a CLI runner capturing its output) must not receive the functions' lines.
    """

    def __init__(self, namespace: str | None = None, service: str | None = None, stream: TextIO | None = None) -> None:
        self.namespace = namespace or os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE
        self.service = service or os.environ.get("POWERTOOLS_SERVICE_NAME") or SERVICE
        self.stream = stream or sys.stdout
        self._sets: dict[tuple[tuple[str, str], ...], AmazonCloudWatchEMFProvider] = {}
        self._lock = threading.Lock()

    def record(self, metric: Metric, value: float, dimensions: Mapping[str, str]) -> None:
        key = tuple(sorted(dimensions.items()))
        with self._lock:
            emf = self._sets.get(key)
            if emf is None:
                emf = self._sets[key] = AmazonCloudWatchEMFProvider(namespace=self.namespace, service=self.service)
                for name, dim in key:
                    emf.add_dimension(name, dim)
                if key:
                    emf.add_dimensions(service=self.service)  # the roll-up the alarms and the dashboard use
            emf.add_metric(metric.name, metric.unit, value)

    def flush(self) -> None:
        with self._lock:
            sets, self._sets = list(self._sets.values()), {}
        if is_metrics_disabled():  # POWERTOOLS_METRICS_DISABLED, as Powertools' own flush honours it
            return
        for emf in sets:
            if emf.metric_set:
                self.stream.write(json.dumps(emf.serialize_metric_set(), separators=(",", ":")) + "\n")
        self.stream.flush()


class Metrics:
    """The facade: one method per thing that happens; each knows its metrics and dimensions."""

    def __init__(self, sinks: list[Sink] | None = None) -> None:
        self.sinks: list[Sink] = sinks if sinks is not None else [EmfSink()]

    def _put(self, metric: Metric, value: float, **dimensions: Any) -> None:
        dims = {name: str(dimensions.get(name) or "none") for name in metric.dimensions}
        for sink in self.sinks:
            sink.record(metric, float(value), dims)

    # --- jobs --------------------------------------------------------------------------------------
    def job_submitted(self, job: Job) -> None:
        self._put(JOBS_SUBMITTED, 1, task=job.task.value, priority=job.priority.value)

    def job_finished(self, job: Job) -> None:
        """A job reached a terminal status (called once per job: the store's conditional write won)."""
        dims = {"task": job.task.value, "priority": job.priority.value, "endpoint": job.endpoint}
        self._put(_BY_STATUS[job.status], 1, **dims)
        self._put(JOBS_FINISHED, 1, **dims)
        self._put(END_TO_END, max(0.0, _ms_between(job.created_at, job.updated_at)), **dims)
        self._put(ATTEMPTS, job.attempts, **dims)
        self._put(RETRIES, max(0, job.attempts - 1), **dims)

    def attempt_reported(self, endpoint: str, status: JobStatus, body: Mapping[str, Any]) -> None:
        """RunPod's account of one attempt (its webhook or /status body), learnt once per attempt."""
        delay, execution = body.get("delayTime"), body.get("executionTime")
        if isinstance(delay, int | float):
            self._put(QUEUE_DELAY, delay, endpoint=endpoint)
        if isinstance(execution, int | float):
            self._put(EXECUTION_TIME, execution, endpoint=endpoint)
        if status is not JobStatus.COMPLETED and status is not JobStatus.CANCELLED:
            self._put(ATTEMPTS_FAILED, 1, endpoint=endpoint)
        gpu_s = float(execution) / 1000 if isinstance(execution, int | float) else 0.0
        from stillhouse.config import get_settings  # loaded with the first attempt, not at a cold import

        prices = get_settings()
        self._put(ESTIMATED_COST, gpu_s * prices.gpu_usd_per_s + prices.aws_usd_per_job, endpoint=endpoint)

    # --- routing -----------------------------------------------------------------------------------
    def breaker_changed(self, endpoint: str, before: str, after: str, open_s: float | None = None) -> None:
        """A breaker moved (states by name: CLOSED, OPEN, HALF_OPEN); `open_s`: how long it was not closed."""
        if after == "OPEN" and before == "CLOSED":
            self._put(BREAKER_OPENED, 1, endpoint=endpoint)
        elif after == "CLOSED":
            self._put(BREAKER_CLOSED, 1, endpoint=endpoint)
            if open_s is not None:
                self._put(BREAKER_TIME_OPEN, max(0.0, open_s), endpoint=endpoint)

    def breaker_open_for(self, endpoint: str, seconds: float) -> None:
        self._put(BREAKER_OPEN_FOR, max(0.0, seconds), endpoint=endpoint)

    # --- edges -------------------------------------------------------------------------------------
    def cache_lookup(self, task: str, hit: bool) -> None:
        self._put(CACHE_HITS if hit else CACHE_MISSES, 1, task=task)

    def webhook_tried(self, delivered: bool, *, last: bool = False) -> None:
        self._put(WEBHOOK_DELIVERIES if delivered else WEBHOOK_FAILURES, 1)
        if not delivered and last:
            self._put(WEBHOOK_ABANDONED, 1)

    def swept(self, actions: Mapping[str, int]) -> None:
        for action, count in actions.items():
            if count:
                self._put(SWEEPER_ACTIONS, count, action=action)

    # --- sinks -------------------------------------------------------------------------------------
    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)

    def flush(self) -> None:
        for sink in list(self.sinks):
            sink.flush()


def _ms_between(start: str, end: str) -> float:
    def parse(at: str) -> datetime:
        return datetime.fromisoformat(at)

    return (parse(end) - parse(start)).total_seconds() * 1000


#: This process's metrics (Powertools' Metrics is process-wide the same way).
metrics = Metrics()

F = TypeVar("F", bound=Callable[..., Any])


def log_metrics(handler: F) -> F:
    """Flush the metrics when a Lambda handler returns or raises (Powertools' `log_metrics`, for our sinks)."""

    @wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        finally:
            metrics.flush()

    return wrapper  # type: ignore[return-value]
