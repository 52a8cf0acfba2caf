"""What routing learns from a finished RunPod job: latency and success or the class of failure."""
from __future__ import annotations

from typing import Any, Protocol

from stillhouse.errors import ErrorClass
from stillhouse.jobs.status import JobStatus


class Learner(Protocol):
    """The router's side of a result (stillhouse.routing.router.Router)."""

    def succeeded(self, name: str, latency_ms: float | None) -> None: ...

    def failed(self, name: str, error_class: ErrorClass, *, latency_ms: float | None = None,
               error: str | None = None) -> None: ...

    def released(self, name: str) -> None: ...


def latency_ms(body: dict[str, Any]) -> float:
    """What the caller waits for on an endpoint: RunPod's queue delay plus execution."""
    return float(body.get("delayTime") or 0) + float(body.get("executionTime") or 0)


def report_outcome(router: Learner, endpoint: str | None, status: JobStatus, error_class: ErrorClass | None,
                   error: str | None, body: dict[str, Any]) -> None:
    """Teach routing and the breaker from one finished RunPod job, exactly once (after the winning write)."""
    if not endpoint:
        return
    latency = latency_ms(body)
    if status is JobStatus.COMPLETED:
        router.succeeded(endpoint, latency)
    elif error_class is not None:
        router.failed(endpoint, error_class, latency_ms=latency or None, error=error)
    else:
        router.released(endpoint)  # cancelled: nothing to learn
