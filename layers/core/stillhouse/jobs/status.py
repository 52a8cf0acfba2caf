"""Job statuses and the one table of moves between them: every status write goes through it.

`ALLOWED` says which moves exist at all. A `Move` names a narrower change that one step of a flow makes
(e.g. "an attempt started" may only leave IN_QUEUE or RETRYING); each is checked against `ALLOWED`
when this module loads, so no caller can invent a move the table forbids.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobStatus(StrEnum):
    """RunPod's own words, so users recognise them; RETRYING is ours (recovery workflow waits)."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    RETRYING = "RETRYING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


S = JobStatus
#: The statuses a job never leaves (RunPod's terminal statuses are the same words).
TERMINAL = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMED_OUT})

ALLOWED: dict[S, frozenset[S]] = {
    S.IN_QUEUE: frozenset({S.IN_PROGRESS, S.RETRYING, S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMED_OUT}),
    S.IN_PROGRESS: frozenset({S.RETRYING, S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMED_OUT}),
    # RETRYING -> RETRYING records workflow progress (a new attempt, the execution that owns the job).
    S.RETRYING: frozenset({S.RETRYING, S.IN_PROGRESS, S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMED_OUT}),
    # Terminal statuses have no way out: this is what makes duplicate deliveries harmless.
    **{terminal: frozenset() for terminal in TERMINAL},
}


def sources_of(target: S) -> frozenset[S]:
    """Every status a job may be in for a move to `target` to be allowed."""
    return frozenset(src for src, targets in ALLOWED.items() if target in targets)


def allowed(source: S, target: S) -> bool:
    return target in ALLOWED[source]


@dataclass(frozen=True)
class Move:
    """A status change and the statuses it may start from."""

    name: str
    target: S
    sources: frozenset[S]

    def __post_init__(self) -> None:
        forbidden = self.sources - sources_of(self.target)
        if forbidden or not self.sources:
            raise ValueError(f"move {self.name}: {sorted(forbidden)} -> {self.target} is not in ALLOWED")


def to(target: S) -> Move:
    """The plain move to `target` from wherever the table allows."""
    return Move(f"to_{target.value.lower()}", target, sources_of(target))


# The narrower moves of the flows (docs/design.md tells the flows).
#: RunPod accepted an attempt (fast path or recovery).
START_ATTEMPT = Move("start_attempt", S.IN_PROGRESS, frozenset({S.IN_QUEUE, S.RETRYING}))
#: The council workflow took a queued job.
START_COUNCIL = Move("start_council", S.IN_PROGRESS, frozenset({S.IN_QUEUE}))
#: Dispatch hands a job to the recovery workflow; the workflow's first task may have recorded RETRYING already.
HAND_OVER = Move("hand_over", S.RETRYING, frozenset({S.IN_QUEUE, S.RETRYING}))
#: The current attempt failed retryably (a RunPod callback): recovery takes over or goes on.
RETRY_ATTEMPT = Move("retry_attempt", S.RETRYING, frozenset({S.IN_QUEUE, S.IN_PROGRESS}))
#: The RunPod job in flight ended without a usable result (found by a status check).
LOSE_ATTEMPT = Move("lose_attempt", S.RETRYING, frozenset({S.IN_PROGRESS}))
#: Recovery keeps the latest reason a live job is still waiting.
NOTE_WAITING = Move("note_waiting", S.RETRYING, frozenset({S.IN_QUEUE, S.IN_PROGRESS, S.RETRYING}))
#: The council's chair answered: the council job completes.
COMPLETE_COUNCIL = Move("complete_council", S.COMPLETED, frozenset({S.IN_PROGRESS}))
