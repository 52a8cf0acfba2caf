"""What routing learns from a finished RunPod job: success or the class of failure, and a latency that
means health.

The latency learnt is RunPod's queue delay (load) plus the execution time per unit of work (an output
token of generate, a text of embed), never a job's whole time: one legitimate long job must not make a
warm endpoint look sick to every tenant. Diagnostics (`sleep`) teach no latency at all.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from stillhouse.errors import ErrorClass
from stillhouse.jobs.status import JobStatus
from stillhouse.telemetry.metrics import metrics


class Learner(Protocol):
    """The router's side of a result (stillhouse.routing.router.Router)."""

    def succeeded(self, name: str, latency_ms: float | None) -> None: ...

    def failed(self, name: str, error_class: ErrorClass, *, latency_ms: float | None = None,
               error: str | None = None) -> None: ...

    def released(self, name: str) -> None: ...


def total_ms(body: Mapping[str, Any]) -> float:
    """What the caller waited for on an endpoint: RunPod's queue delay plus execution."""
    return float(body.get("delayTime") or 0) + float(body.get("executionTime") or 0)


def work_units(task: str | None, output: Any, job_input: Mapping[str, Any] | None = None) -> float | None:
    """How much work a result's execution time paid for; None for diagnostics, whose time says nothing."""
    if task in ("sleep", "batch"):
        return None  # a diagnostic's time says nothing; a chunk's says little (its lines vary widely)
    if task == "generate" and isinstance(output, Mapping) and isinstance(output.get("completion_tokens"), int):
        return float(max(1, output["completion_tokens"]))
    if task == "embed" and isinstance((job_input or {}).get("texts"), list):
        return float(max(1, len(job_input["texts"])))  # type: ignore[index]
    return 1.0


def latency_ms(body: Mapping[str, Any], units: float | None = 1.0) -> float | None:
    """The latency routing learns: queue delay plus execution time per unit of work (None: learn none)."""
    if units is None:
        return None
    return float(body.get("delayTime") or 0) + float(body.get("executionTime") or 0) / units


def report_outcome(router: Learner, endpoint: str | None, status: JobStatus, error_class: ErrorClass | None,
                   error: str | None, body: dict[str, Any], units: float | None = 1.0) -> None:
    """Teach routing and the breaker from one finished RunPod job, exactly once (after the winning write).
    `units`: the work the job did (work_units)."""
    if not endpoint:
        return
    metrics.attempt_reported(endpoint, status, body)
    latency = latency_ms(body, units)
    if status is JobStatus.COMPLETED:
        router.succeeded(endpoint, latency)
    elif error_class is not None:
        router.failed(endpoint, error_class, latency_ms=latency or None, error=error)
    else:
        router.released(endpoint)  # cancelled: nothing to learn
