"""The one table of allowed job status transitions."""
from __future__ import annotations

from stillhouse.jobs.model import JobStatus as S

ALLOWED: dict[S, frozenset[S]] = {
    S.IN_QUEUE: frozenset({S.IN_PROGRESS, S.RETRYING, S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMED_OUT}),
    S.IN_PROGRESS: frozenset({S.RETRYING, S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMED_OUT}),
    # RETRYING -> RETRYING records workflow progress (a new attempt, the execution that owns the job).
    S.RETRYING: frozenset({S.RETRYING, S.IN_PROGRESS, S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMED_OUT}),
    # Terminal statuses have no way out: this is what makes duplicate deliveries harmless.
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.TIMED_OUT: frozenset(),
}


def sources_of(target: S) -> list[S]:
    """Every status a job may be in for a move to `target` to be allowed."""
    return [src for src, targets in ALLOWED.items() if target in targets]


def allowed(source: S, target: S) -> bool:
    return target in ALLOWED[source]
