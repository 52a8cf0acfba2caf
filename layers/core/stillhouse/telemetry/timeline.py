"""A job's trace as a timeline of stages (GET /v1/jobs/{id}/trace; the CLI's `trace` draws it).

The stages come from what the job records anyway: each transition's event starts a stage that lasts
until the next one (IN_QUEUE, IN_PROGRESS on an endpoint, RETRYING, ...), the terminal event is the end, and
each try of the caller's webhook is a stage after it. No span store is read: a timeline costs one GetItem.
"""
from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from stillhouse.jobs.model import Job, JobStatus


class Stage(BaseModel):
    name: str  # the job's status in the stage (RunPod's words, as everywhere), or "webhook try N"
    status: str | None = None  # the job's status during the stage (None for a webhook try)
    actor: str | None = None  # who moved the job into it: api, dispatch, webhook, sweeper, workflow, ...
    endpoint: str | None = None
    attempt: int | None = None
    start: str
    end: str | None = None  # None: still going on (a live job's current stage)
    offset_ms: float  # from the submission
    duration_ms: float
    detail: str | None = None


class JobTrace(BaseModel):
    job_id: str
    trace_id: str | None
    status: JobStatus
    submitted_at: str
    ended_at: str | None
    total_ms: float
    stages: list[Stage]


def _at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def _ms(start: str, end: str) -> float:
    return round((_at(end) - _at(start)).total_seconds() * 1000, 3)


def timeline(job: Job, now: str | None = None) -> JobTrace:
    now = now or datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    events = sorted(job.events, key=lambda e: e.at)
    submitted = events[0].at if events else job.created_at
    ended = events[-1].at if events and events[-1].status.terminal else None
    stages: list[Stage] = []
    for i, event in enumerate(events):
        end = events[i + 1].at if i + 1 < len(events) else (event.at if event.status.terminal else None)
        stages.append(Stage(name=event.status.value, status=event.status.value, actor=event.actor, endpoint=event.endpoint,
                            attempt=event.attempt or None, start=event.at, end=end, offset_ms=_ms(submitted, event.at),
                            duration_ms=_ms(event.at, end or now), detail=event.detail))
    for delivery in job.deliveries:
        outcome = f"HTTP {delivery.status_code}" if delivery.status_code is not None else delivery.error
        stages.append(Stage(name=f"webhook try {delivery.try_}", start=delivery.at, end=delivery.at,
                            offset_ms=_ms(submitted, delivery.at), duration_ms=0.0,
                            detail="; ".join(x for x in (outcome, delivery.next) if x)))
    return JobTrace(job_id=job.id, trace_id=job.trace_id, status=job.status, submitted_at=submitted, ended_at=ended,
                    total_ms=_ms(submitted, ended or now), stages=stages)
