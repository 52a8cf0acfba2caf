"""The Lambda tasks of the recovery workflow (statemachines/recovery.asl.json).

Errors are raised as the classes in stillhouse.errors whose names the state machine's Retry and
Catch blocks match, so backoff, failover and giving up are decided by the workflow definition.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stillhouse import errors
from stillhouse.aws import unavailable
from stillhouse.crash_points import crash_point
from stillhouse.errors import ErrorClass
from stillhouse.jobs.dispatch import Dispatcher
from stillhouse.jobs.model import Job, JobStatus
from stillhouse.jobs.status import LOSE_ATTEMPT, NOTE_WAITING
from stillhouse.jobs.store import JobStore
from stillhouse.routing.feedback import work_units
from stillhouse.routing.placement import Refused, nothing_available
from stillhouse.runpod.callbacks import CallbackRecorder, error_class_of
from stillhouse.runpod.client import RunPodError
from stillhouse.workflows.council import CouncilTasks
from stillhouse.workflows.events import CheckStatusTask, RecordFailureTask, StateError, SubmitTask, parse_task_event


@dataclass
class RecoveryTasks:
    store: JobStore
    dispatcher: Dispatcher
    callbacks: CallbackRecorder
    fetch_status: Callable[[str, str], dict[str, Any]]
    notify: Callable[[Job], Any]
    max_attempts: int
    council: CouncilTasks | None = None

    def submit(self, job_id: str, task_token: str, execution_arn: str | None = None) -> dict[str, Any]:
        """One attempt: route, POST /run, remember the task token; the webhook resumes the workflow.
        The execution records itself on the job: its first task can run before the dispatcher that
        started it has written `execution_arn`, and the job must never look like it has no owner."""
        job = self.store.get(job_id)
        if job.status.terminal:
            raise errors.JobFinished(f"job is {job.status.value}")
        if self.dispatcher.time_out_if_overdue(job, job.attempts, actor="recovery"):
            raise errors.JobFinished("job is past its deadline")
        # Only runs on a GPU count: a refused /run cost none, and is retried until the deadline instead.
        if (runs := job.gpu_runs) >= self.max_attempts:
            raise errors.TerminalError(f"gave up after {runs} attempts; last error: {job.error}")
        plan = self.dispatcher.plan(job)
        if not plan:
            # Waiting is not failing: no attempt is spent, the workflow's own long Retry block waits.
            reason = nothing_available(job.model)
            self._note(job, reason, None, execution_arn)
            raise errors.NoEndpointAvailable(reason)
        claimed = self.store.claim_attempt(job.id, job.attempts)
        if claimed is None:
            raise errors.TransientError("another attempt of this job is being submitted")
        crash_point("recovery.after_claim", job.id)
        outcome = self.dispatcher.submit(claimed, claimed.attempts, actor="recovery", task_token=task_token,
                                         execution_arn=execution_arn, plan=plan)
        if isinstance(outcome, Refused):
            self._note(claimed, outcome.reason, outcome.error_class, execution_arn)
            if outcome.error_class in (ErrorClass.TRANSIENT, ErrorClass.WORKER_LOST):
                raise errors.NotStarted(outcome.reason)  # before any GPU ran: bounded by the deadline
            raise errors.WORKFLOW_ERRORS[outcome.error_class](outcome.reason)
        if outcome is None:
            raise errors.JobFinished(f"job is {self.store.get(job_id).status.value}")
        return {"runpod_id": outcome.runpod_id, "endpoint": outcome.endpoint, "attempt": outcome.attempts}

    def check_status(self, job_id: str) -> dict[str, str]:
        """No callback came in time: ask RunPod. Lost or failed retryably -> WorkerLostError (submit again)."""
        job = self.store.get(job_id)
        if job.status.terminal:
            return {"state": "done"}
        if not (job.endpoint and job.runpod_id) or job.status is not JobStatus.IN_PROGRESS:
            self._note(job, "no RunPod job in flight", ErrorClass.WORKER_LOST)
            raise errors.WorkerLostError("no RunPod job in flight")
        try:
            body = self.fetch_status(job.endpoint, job.runpod_id)
        except RunPodError as err:
            if err.error_class is ErrorClass.WORKER_LOST:  # RunPod no longer knows the job
                self._attempt_lost(job, err.message, ErrorClass.WORKER_LOST, {})
                raise errors.WorkerLostError(err.message) from err
            raise errors.TransientError(err.message) from err
        if body.get("status") in ("IN_QUEUE", "IN_PROGRESS"):
            return {"state": "running"}
        target = JobStatus(body["status"]) if body.get("status") in JobStatus.__members__ else None
        error_class = error_class_of(target, body.get("error")) if target else ErrorClass.WORKER_LOST
        if error_class is not None and error_class.retryable:
            self._attempt_lost(job, str(body.get("error") or body.get("status")), error_class, body)
            raise errors.WorkerLostError(f"RunPod job {job.runpod_id} ended {body.get('status')}")
        self.callbacks.apply(job, job.endpoint, job.attempts, body, actor="recovery")
        return {"state": "done"}

    def record_failure(self, job_id: str, error: StateError | None) -> dict[str, Any]:
        """The workflow gave up: end the job FAILED with the last error (a no-op if it already ended)."""
        name, cause = (error.Error, error.Cause) if error else ("Unknown", "")
        job = self.store.get(job_id)
        message = f"{name}: {cause}" if cause else name
        if job.error and name != errors.TerminalError.__name__:
            message = f"{message} (last attempt: {job.error})"
        error_class = errors.error_class_named(name) or ErrorClass.TRANSIENT
        try:
            failed = self.store.transition(job_id, JobStatus.FAILED, actor="recovery", attempt=job.attempts,
                                           detail=message, fields={"error": message, "error_class": error_class.value})
        except errors.TransitionRefused:
            return {"recorded": False}
        crash_point("recovery.after_record_failure", job_id)
        self.notify(failed)
        return {"recorded": True}

    def _attempt_lost(self, job: Job, reason: str, error_class: ErrorClass, body: dict[str, Any]) -> None:
        """The RunPod job in flight ended without a usable result: take the job off it and report the
        failure to routing (breaker, in-flight slot). Only the write that moves this very attempt off
        IN_PROGRESS reports, so a webhook or a second check racing us cannot count it twice."""
        try:
            self.store.transition(job.id, LOSE_ATTEMPT, actor="recovery", attempt=job.attempts,
                                  endpoint=job.endpoint, detail=reason,
                                  fields={"error": reason, "error_class": error_class.value},
                                  expect_runpod_id=job.runpod_id)
        except errors.TransitionRefused:
            return  # recorded (and reported) by whoever moved the job first
        self.callbacks.learn(job.endpoint, JobStatus.FAILED, error_class, reason, body,
                             work_units(job.task.value, None, job.input))

    def _note(self, job: Job, reason: str, error_class: ErrorClass | None, execution_arn: str | None = None) -> None:
        """Keep the latest reason on the job so its timeline shows why it is still waiting."""
        fields: dict[str, Any] = {"error": reason}
        if error_class is not None:
            fields["error_class"] = error_class.value
        if execution_arn:
            fields["execution_arn"] = execution_arn
        try:
            self.store.transition(job.id, NOTE_WAITING, actor="recovery", attempt=job.attempts,
                                  endpoint=None, detail=reason, fields=fields)
        except errors.TransitionRefused:
            pass

    def handle(self, raw: dict[str, Any]) -> dict[str, Any]:
        """One Step Functions task event (typed in stillhouse.workflows.events) -> the task it names. AWS
        throttling us is raised as AwsUnavailable, which every task's Retry block waits out: it is no
        fault of the job's, and the catch-all would fail it."""
        try:
            return self._handle(raw)
        except Exception as err:
            if (throttled := unavailable(err)) is not None:
                raise throttled from err
            raise

    def _handle(self, raw: dict[str, Any]) -> dict[str, Any]:
        match event := parse_task_event(raw):
            case SubmitTask():
                return self.submit(event.job_id, event.task_token, event.execution_arn)
            case CheckStatusTask():
                return self.check_status(event.job_id)
            case RecordFailureTask():
                return self.record_failure(event.job_id, event.error)
        if self.council is None:
            raise errors.TerminalError(f"no council tasks here for {event.action!r}")
        return self.council.handle(event)
