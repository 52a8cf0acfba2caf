"""The sweeper: no job is left without a terminal status, even when a webhook or a workflow is lost.

Each round (every `SweepEverySeconds`) it looks at the live jobs that are due (`due_at`, jobs.deadlines):
- IN_PROGRESS on RunPod (fast path or workflow): due once it has had time to finish. Ask RunPod's
  /status: a finished job is recorded as if its webhook had come, a vanished one goes to the recovery
  workflow (WORKER_LOST), a running one is looked at again later (RunPod's executionTimeout bounds it);
  one still running well past the executionTimeout it was given (RunPod did not end it: a hung worker) is
  given up on as RunPod would have: TIMED_OUT for that attempt, retried elsewhere, blamed on the endpoint's
  breaker, and cancelled on RunPod.
  So a short job's lost webhook costs tens of seconds, not the workflow's callback timeout.
- RETRYING, or IN_PROGRESS under a workflow with nothing on RunPod to ask: if the execution is no
  longer running, ended FAILED.
- IN_QUEUE: its queue message was lost (or could not be read): sent again; a job still not dispatched
  `in_queue_give_up_s` after it was submitted is ended FAILED.
- The dead-letter queues, by policy: a message whose job still waits goes back to its queue, one whose
  job has ended (dispatch ends a job before its message goes there) or that cannot be read is dropped.
On request it also moves every DLQ message back (after an operator fixed the cause).
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from stillhouse.crash_points import crash_point
from stillhouse.delivery.outbox import resend_owed
from stillhouse.errors import ErrorClass, JobFinished, JobNotFound, TransitionRefused
from stillhouse.jobs.deadlines import SettleDeadlines, overdue, parse
from stillhouse.jobs.model import Job, JobStatus, Task
from stillhouse.jobs.queue import JobQueue
from stillhouse.jobs.store import JobStore
from stillhouse.routing.breaker import EndpointHealth
from stillhouse.routing.state import BreakerState
from stillhouse.runpod.callbacks import CallbackRecorder
from stillhouse.runpod.client import RunPodError
from stillhouse.telemetry.metrics import metrics
from stillhouse.telemetry.tracing import job_context

logger = Logger(service="stillhouse", child=True)


@dataclass
class Sweeper:
    store: JobStore
    callbacks: CallbackRecorder
    fetch_status: Callable[[str, str], dict[str, Any]]
    execution_status: Callable[[str], str]
    notify: Callable[[Job], Any]
    deadlines: SettleDeadlines
    queue: JobQueue | None = None
    in_queue_give_up_s: float = 3600
    settle_dlqs: bool = True
    # Every endpoint's breaker (Router.describe's health): sampled each sweep, for the open-too-long alarm.
    breakers: Callable[[], Iterable[EndpointHealth]] | None = None
    # The Batch API's round (BatchService.sweep): expire batches past their window, step stalled ones.
    batches: Callable[[], dict[str, int]] | None = None
    # (endpoint name, RunPod id): cancel a hung attempt on RunPod once it was reported (RunPodGateway.cancel).
    cancel_runpod: Callable[[str, str], None] | None = None
    # Recount the tenants' quota shards whose give-backs were lost (Quotas.heal): returns the shards healed.
    heal_quotas: Callable[[], int] | None = None

    def sweep(self, *, ahead_s: float = 0.0, now: datetime | None = None) -> dict[str, int]:
        """One round over the due jobs. `ahead_s`: also take jobs due within that many seconds (an
        operator's "look at everything now" is a large value)."""
        now = now or datetime.now(UTC)
        by = self.deadlines.due(now, ahead_s)
        counts: Counter[str] = Counter()
        for status in (JobStatus.IN_PROGRESS, JobStatus.RETRYING, JobStatus.IN_QUEUE):
            for job_id in self.store.due(status, by):
                try:
                    job = self.store.get(job_id)
                    with job_context(job.id, job.trace_id, "sweep"):
                        why = None if job.status.terminal else overdue(now, job.deadline_at, job.start_by,
                                                                       started=job.gpu_runs > 0)
                        counts[self._time_out(job, why) if why
                               else self._requeue(job, now) if job.status is JobStatus.IN_QUEUE
                               else self._settle(job, now)] += 1
                except JobNotFound:
                    continue
                except Exception:  # noqa: BLE001 - one bad job must not stop the sweep of every other
                    # The most overdue job comes first every round: raising here would block every sweep.
                    logger.exception("could not settle a due job", extra={"job_id": job_id})
                    counts["errors"] += 1
        counts.update(resend_owed(self.store, self.notify, by))  # finished jobs whose notice is owed
        if self.queue is not None and self.settle_dlqs:
            counts.update(self.queue.settle_dlqs(self._still_waiting))
        if self.batches is not None:
            try:
                counts.update(self.batches())
            except Exception:  # noqa: BLE001 - the jobs' round is done; batches are looked at again next round
                logger.exception("could not sweep the batches")
                counts["errors"] += 1
        if self.heal_quotas is not None:
            try:
                if healed := self.heal_quotas():
                    counts["quota_shards_healed"] += healed
            except Exception:  # noqa: BLE001 - healed next round
                logger.exception("could not heal the tenants' quotas")
                counts["errors"] += 1
        metrics.swept(counts)
        self._sample_breakers(now)
        return dict(counts)

    def _sample_breakers(self, now: datetime) -> None:
        if self.breakers is None:
            return
        try:
            endpoints = list(self.breakers())
        except Exception:  # noqa: BLE001 - a metric must not fail the sweep
            logger.exception("could not read the breakers")
            return
        for health in endpoints:
            opened = health.opened_at if health.state is not BreakerState.CLOSED else None
            metrics.breaker_open_for(health.name, now.timestamp() - opened if opened is not None else 0.0)

    def _requeue(self, job: Job, now: datetime) -> str:
        """Queued with no news: its message was lost or could not be read. Dispatch takes a job once
        (a claimed attempt), so a second message is harmless; a job never dispatched ends, bounded."""
        if self.queue is None:
            return "still_queued"
        submitted = parse(job.created_at)
        # A batch's chunk may wait in its lane for as long as its batch's window: the batch's expiry ends it.
        if job.task is not Task.BATCH and now - submitted > timedelta(seconds=self.in_queue_give_up_s):
            return self._fail(job, f"not dispatched within {self.in_queue_give_up_s:g} s of its submission")
        self.queue.send(job.id, job.priority, attempts=job.attempts, task=job.task.value)
        try:
            self.store.annotate(job.id, {})  # news: due again only after watch_s
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

    def _settle(self, job: Job, now: datetime) -> str:
        if job.status.terminal:
            return "already_final"
        on_runpod = job.status is JobStatus.IN_PROGRESS and job.endpoint and job.runpod_id
        if on_runpod:
            # Ask RunPod first, workflow or not: a lost webhook is settled here in seconds, where the
            # workflow would wait for its whole callback timeout.
            outcome = self._ask_runpod(job, now)
            if outcome != "still_running" or not job.execution_arn:
                return outcome
        if job.execution_arn and (job.status is JobStatus.RETRYING or job.task_token or job.members is not None):
            # A workflow owns the job; it has its own timeouts. Only a dead workflow needs us.
            state = self.execution_status(job.execution_arn)
            if state == "RUNNING":
                return "still_running" if on_runpod else self._look_later(job, now, "workflow_running")
            return self._fail(job, f"its workflow ended {state} without recording a result")
        if not on_runpod:
            return self._fail(job, "no RunPod job was recorded for it")
        return "still_running"

    def _ask_runpod(self, job: Job, now: datetime) -> str:
        try:
            body = self.fetch_status(job.endpoint, job.runpod_id)  # type: ignore[arg-type]
        except RunPodError as err:
            if err.error_class is not ErrorClass.WORKER_LOST:
                return "runpod_unreachable"  # still due: the next round asks again
            body = {"id": job.runpod_id, "status": JobStatus.TIMED_OUT.value, "error": f"RunPod lost the job: {err.message}"}
        if body.get("status") == JobStatus.IN_PROGRESS.value and (running_s := self._overran(job, body, now)):
            return self._give_up_hung(job, body, running_s)
        if body.get("status") == JobStatus.IN_QUEUE.value and (why := overdue(now, None, job.start_by, started=False)):
            return self._time_out(job, why)  # accepted, but still in RunPod's queue at its ttl
        if body.get("status") in (JobStatus.IN_QUEUE.value, JobStatus.IN_PROGRESS.value):
            return self._look_later(job, now, "still_running")
        settled = self.callbacks.apply(job, job.endpoint, job.attempts, body, actor="sweeper")  # type: ignore[arg-type]
        crash_point("sweeper.after_settle", job.id)
        if settled is not None:
            # Worth a warning: a webhook went missing (RunPod gave up on our callback URL).
            logger.warning("settled a job whose webhook never came", extra={"job_id": job.id, "status": body.get("status")})
        return "settled" if settled is not None else "unchanged"

    def _overran(self, job: Job, body: dict[str, Any], now: datetime) -> float | None:
        """Seconds the attempt has executed on RunPod (its queue delay left out), when that is past the
        executionTimeout it was given plus floor_s of grace for RunPod to end it itself; else None."""
        started = next((e.at for e in reversed(job.events)
                        if e.status is JobStatus.IN_PROGRESS and e.runpod_id == job.runpod_id), None)
        if job.run_timeout_s is None or started is None:
            return None
        running_s = (now - parse(started)).total_seconds() - float(body.get("delayTime") or 0) / 1000
        return running_s if running_s > job.run_timeout_s + self.deadlines.floor_s else None

    def _give_up_hung(self, job: Job, body: dict[str, Any], running_s: float) -> str:
        """What RunPod should have done: end the attempt TIMED_OUT (retried elsewhere through the recovery
        workflow, counted against the endpoint's breaker), then cancel it there so the GPU stops."""
        report = {"id": job.runpod_id, "status": JobStatus.TIMED_OUT.value, "delayTime": body.get("delayTime"),
                  "error": f"hung: still running after {running_s:.0f} s, past its executionTimeout of "
                           f"{job.run_timeout_s} s"}
        settled = self.callbacks.apply(job, job.endpoint, job.attempts, report, actor="sweeper")  # type: ignore[arg-type]
        if settled is None:
            return "unchanged"
        logger.warning("gave up on a hung attempt", extra={"job_id": job.id, "endpoint": job.endpoint})
        if self.cancel_runpod is not None:
            self.cancel_runpod(job.endpoint, job.runpod_id)  # type: ignore[arg-type]
        return "hung"

    def _look_later(self, job: Job, now: datetime, outcome: str) -> str:
        since = next((e.at for e in reversed(job.events) if e.status is job.status), job.updated_at)
        running_for = (now - parse(since)).total_seconds()
        wait_s = self.deadlines.still_running_s(running_for)
        if outcome == "still_running" and job.run_timeout_s is not None:
            # Look again just after the attempt should have been ended, not a whole `running_for` later.
            wait_s = min(wait_s, max(1.0, job.run_timeout_s + self.deadlines.floor_s - running_for + 1.0))
        due = self.deadlines.due(now, wait_s)
        try:
            self.store.annotate(job.id, {"due_at": due})
        except TransitionRefused:
            return "already_final"
        return outcome

    def _time_out(self, job: Job, why: str) -> str:
        """Past its deadline (or its ttl, not started): TIMED_OUT, naming what it was waiting for. Its run on
        RunPod, if any, is cancelled and its endpoint slot freed; a workflow waiting on it is ended."""
        error = f"{why}; it was waiting for: {_waiting_for(job)}"
        try:
            ended = self.store.transition(job.id, JobStatus.TIMED_OUT, actor="sweeper", attempt=job.attempts,
                                          detail=error, fields={"error": error})
        except TransitionRefused:
            return "already_final"
        self.notify(ended)
        if job.status is JobStatus.IN_PROGRESS and job.endpoint and job.runpod_id:
            self.callbacks.learn(job.endpoint, JobStatus.CANCELLED, None, None, {}, None)  # frees its slot
            if self.cancel_runpod is not None:
                self.cancel_runpod(job.endpoint, job.runpod_id)
        if job.task_token and self.callbacks.workflows is not None:
            self.callbacks.workflows.fail_task(job.task_token, JobFinished.__name__, f"job ended {ended.status.value}")
        return "timed_out"

    def _fail(self, job: Job, reason: str) -> str:
        try:
            failed = self.store.transition(job.id, JobStatus.FAILED, actor="sweeper", attempt=job.attempts,
                                           detail=reason, fields={"error": reason, "error_class": ErrorClass.WORKER_LOST.value})
        except TransitionRefused:
            return "already_final"
        crash_point("sweeper.after_fail", job.id)
        self.notify(failed)
        return "failed"


def _waiting_for(job: Job) -> str:
    if job.status is JobStatus.IN_PROGRESS and job.endpoint:
        return f"its run on {job.endpoint} to finish" + (f" (last: {job.error})" if job.error else "")
    if job.status is JobStatus.IN_QUEUE:
        return "dispatch (it was still queued)"
    return job.error or "a retry"


@dataclass
class SweepRounds:
    """A schedule runs at most once a minute, and a lost webhook should cost less than that: one scheduled
    run sweeps every `every_s` seconds until the next run is due (the function idles in between, a fixed
    cost that docs/cost.md prices)."""

    sweeper: Sweeper
    every_s: float = 60.0
    period_s: float = 60.0  # the schedule's rate
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def run(self) -> dict[str, int]:
        started = self.clock()
        total: Counter[str] = Counter()
        for n in range(max(1, int(self.period_s // self.every_s))):
            self.sleep(max(0.0, started + n * self.every_s - self.clock()))
            total.update(self.sweeper.sweep())
        total["rounds"] = n + 1
        return dict(total)
