"""The sweeper: no job is left without a terminal status, even when a webhook or a workflow is lost.

Every minute it looks at jobs with no news for `stale_after_s`:
- IN_PROGRESS on the fast path: ask RunPod's /status; a finished job is recorded as if its webhook
  had come, a vanished one goes to the recovery workflow (WORKER_LOST), a running one is left alone
  (RunPod's executionTimeout bounds it).
- RETRYING or IN_PROGRESS under a workflow whose execution is no longer running: ended FAILED.
- IN_QUEUE: its queue message was lost (or could not be read): sent again; a job still not dispatched
  `in_queue_give_up_s` after it was submitted is ended FAILED.
- The dead-letter queues, by policy: a message whose job still waits goes back to its queue, one whose
  job has ended (dispatch ends a job before its message goes there) or that cannot be read is dropped.
On request it also moves every DLQ message back (after an operator fixed the cause).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from stillhouse.errors import ErrorClass, JobNotFound, TransitionRefused
from stillhouse.jobs.model import Job, JobStatus
from stillhouse.jobs.queue import JobQueue
from stillhouse.jobs.store import JobStore
from stillhouse.runpod.callbacks import CallbackRecorder
from stillhouse.runpod.client import RunPodError

logger = Logger(service="stillhouse", child=True)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Sweeper:
    store: JobStore
    callbacks: CallbackRecorder
    fetch_status: Callable[[str, str], dict[str, Any]]
    execution_status: Callable[[str], str]
    notify: Callable[[Job], Any]
    stale_after_s: float
    queue: JobQueue | None = None
    in_queue_give_up_s: float = 3600
    settle_dlqs: bool = True

    def sweep(self, *, stale_after_s: float | None = None, now: datetime | None = None) -> dict[str, int]:
        now = now or datetime.now(UTC)
        cutoff = iso(now - timedelta(seconds=self.stale_after_s if stale_after_s is None else stale_after_s))
        counts: Counter[str] = Counter()
        for status in (JobStatus.IN_PROGRESS, JobStatus.RETRYING, JobStatus.IN_QUEUE):
            for job_id in self.store.stale(status, cutoff):
                try:
                    job = self.store.get(job_id)
                    counts[self._requeue(job, now) if job.status is JobStatus.IN_QUEUE else self._settle(job)] += 1
                except JobNotFound:
                    continue
                except Exception:  # noqa: BLE001 - one bad job must not stop the sweep of every other
                    # The oldest job comes first every minute: raising here would block the same sweep for ever.
                    logger.exception("could not settle a stale job", extra={"job_id": job_id})
                    counts["errors"] += 1
        if self.queue is not None and self.settle_dlqs:
            counts.update(self.queue.settle_dlqs(self._still_waiting))
        return dict(counts)

    def _requeue(self, job: Job, now: datetime) -> str:
        """Queued with no news: its message was lost or could not be read. Dispatch takes a job once
        (a claimed attempt), so a second message is harmless; a job never dispatched ends, bounded."""
        if self.queue is None:
            return "still_queued"
        submitted = datetime.fromisoformat(job.created_at.replace("Z", "+00:00"))
        if now - submitted > timedelta(seconds=self.in_queue_give_up_s):
            return self._fail(job, f"not dispatched within {self.in_queue_give_up_s:g} s of its submission")
        self.queue.send(job.id, job.priority, attempts=job.attempts, task=job.task.value)
        try:
            self.store.annotate(job.id, {})  # news: the next sweep looks again only after stale_after_s
        except TransitionRefused:
            return "already_final"
        return "requeued"

    def _still_waiting(self, job_id: str | None) -> bool:
        """The DLQ policy: a message goes back while its job waits; one of an ended job, or unreadable, would
        only die again (dispatch ends a job before its message goes to the DLQ)."""
        if job_id is None:
            return False
        try:
            return self.store.get(job_id).status is JobStatus.IN_QUEUE
        except JobNotFound:
            return False

    def _settle(self, job: Job) -> str:
        if job.status.terminal:
            return "already_final"
        if job.execution_arn and (job.status is JobStatus.RETRYING or job.task_token or job.members is not None):
            # A workflow owns the job; it has its own timeouts. Only a dead workflow needs us.
            state = self.execution_status(job.execution_arn)
            if state == "RUNNING":
                return "workflow_running"
            return self._fail(job, f"its workflow ended {state} without recording a result")
        if not (job.endpoint and job.runpod_id):
            return self._fail(job, "no RunPod job was recorded for it")
        try:
            body = self.fetch_status(job.endpoint, job.runpod_id)
        except RunPodError as err:
            if err.error_class is not ErrorClass.WORKER_LOST:
                return "runpod_unreachable"  # try again next minute
            body = {"id": job.runpod_id, "status": JobStatus.TIMED_OUT.value, "error": f"RunPod lost the job: {err.message}"}
        if body.get("status") in (JobStatus.IN_QUEUE.value, JobStatus.IN_PROGRESS.value):
            return "still_running"
        settled = self.callbacks.apply(job, job.endpoint, job.attempts, body, actor="sweeper")
        if settled is not None:
            # Worth a warning: a webhook went missing (RunPod gave up on our callback URL).
            logger.warning("settled a job whose webhook never came", extra={"job_id": job.id, "status": body.get("status")})
        return "settled" if settled is not None else "unchanged"

    def _fail(self, job: Job, reason: str) -> str:
        try:
            failed = self.store.transition(job.id, JobStatus.FAILED, actor="sweeper", attempt=job.attempts,
                                           detail=reason, fields={"error": reason, "error_class": ErrorClass.WORKER_LOST.value})
        except TransitionRefused:
            return "already_final"
        self.notify(failed)
        return "failed"
