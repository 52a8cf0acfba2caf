"""RunPod result callbacks: verify, re-check when surprising, record once, notify the caller."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from stillhouse.crash_points import crash_point
from stillhouse.errors import (
    Conflict,
    ErrorClass,
    InvalidRequest,
    JobFinished,
    JobNotFound,
    RetryLater,
    TransitionRefused,
    Unauthorized,
    workflow_error_name,
)
from stillhouse.jobs.model import Job, JobStatus
from stillhouse.jobs.status import RETRY_ATTEMPT, TERMINAL
from stillhouse.jobs.store import JobStore, MemberStore
from stillhouse.outputs.cache import ResultCache
from stillhouse.routing.feedback import total_ms, work_units
from stillhouse.runpod.schemas import RunPodJob

# RunPod's terminal statuses and ours are the same words.
_TERMINAL = {s.value: s for s in TERMINAL}


def handler_report(error: Any) -> dict[str, Any] | None:
    """The structured error our worker (gpu_handler/errors.py) reports for every failure it means:
    `{"error_type": ..., "retryable": bool, ...}`, as a dict or its JSON text. None for anything else."""
    detail = error
    if isinstance(error, str):
        try:
            detail = json.loads(error)
        except ValueError:
            return None
    if isinstance(detail, dict) and isinstance(detail.get("error_type"), str) and isinstance(detail.get("retryable"), bool):
        return detail
    return None


def error_class_of(status: JobStatus, error: Any) -> ErrorClass | None:
    """Classify a failed RunPod job by what reported it, never by its text. Our worker reports each error
    it means with its class (handler_report); a FAILED without that report is a crash (the worker died:
    out of memory, a killed container, a lost host, an exception that escaped the handler), an
    infrastructure fault retried elsewhere like a lost job. TIMED_OUT: the job hung or was dropped."""
    if status is JobStatus.TIMED_OUT:
        return ErrorClass.WORKER_LOST
    if status is not JobStatus.FAILED:
        return None
    report = handler_report(error)
    if report is None:
        return ErrorClass.WORKER_LOST
    return ErrorClass.TRANSIENT if report["retryable"] else ErrorClass.TERMINAL


class Resumer(Protocol):
    """Where results go that a workflow waits for, or that need one (stillhouse.workflows.stepfunctions.Workflows)."""

    def start_recovery(self, job_id: str, attempt: int) -> str: ...

    def succeed_task(self, task_token: str, output: dict[str, Any]) -> None: ...

    def fail_task(self, task_token: str, error: str, cause: str) -> None: ...


def _started_runpod_id(job: Job, attempt: int) -> str | None:
    """The RunPod job `attempt` started, as recorded; None while its start is not recorded yet (a result can
    beat dispatch's own write: then RunPod's /status is asked instead)."""
    return next((e.runpod_id for e in job.events
                 if e.status is JobStatus.IN_PROGRESS and e.attempt == attempt and e.runpod_id), None)


def _units(job: Job, body: dict[str, Any]) -> float | None:
    """The work a RunPod job of `job` did, for the latency routing learns (routing.feedback.work_units)."""
    return work_units(job.task.value, body.get("output"), job.input)


def _detail(body: dict[str, Any]) -> str:
    """The terminal event's detail: which RunPod job, and its queue delay and execution time."""
    return f"runpod {body.get('id')} delay={body.get('delayTime')}ms exec={body.get('executionTime')}ms"


def _reported(body: dict[str, Any]) -> dict[str, Any]:
    """A RunPod webhook's body, checked against RunPod's job shape (the field at fault is named)."""
    try:
        return RunPodJob.model_validate(body).model_dump(exclude_unset=True)
    except ValidationError as err:
        first = err.errors()[0]
        field = f"body.{first['loc'][0]}" if first["loc"] else "body"  # the top-level field at fault
        raise InvalidRequest(f"callback {field}: {first['msg']}", field=field) from err


def _recorded_in_progress(job: Job, attempt: int) -> bool:
    """Did the job record show this attempt IN_PROGRESS? Whatever moved it off IN_PROGRESS (webhook,
    status check) reported that attempt's outcome already. An attempt RunPod accepted but never
    recorded (its submit died first) still holds its endpoint's in-flight slot."""
    return any(e.status is JobStatus.IN_PROGRESS and e.attempt == attempt for e in job.events)


@dataclass
class CallbackRecorder:
    store: JobStore
    # (token, job id, attempt, endpoint name, council member) -> is it the token we minted for that URL?
    verify_token: Callable[[str, str, int, str, str], bool]
    fetch_status: Callable[[str, str], dict[str, Any]]  # (endpoint name, runpod id) -> /status body
    notify: Callable[[Job], Any]
    # (endpoint, status, error class, error, RunPod body, units of work) -> routing.feedback.report_outcome
    learn: Callable[[str | None, JobStatus, ErrorClass | None, str | None, dict[str, Any], float | None], None] = (
        lambda endpoint, status, error_class, error, body, units: None)
    workflows: Resumer | None = None
    members: MemberStore | None = None
    cache: ResultCache | None = None
    # (endpoint name, RunPod id): cancel a RunPod job nobody needs any more and free its endpoint slot.
    stop_runpod_job: Callable[[str, str], None] | None = None

    def record(self, job_id: str, attempt: int, endpoint: str, token: str, body: dict[str, Any]) -> Job | None:
        """A RunPod webhook: verify it, trust it only if it matches our record, then apply it."""
        if not self.verify_token(token, job_id, attempt, endpoint, ""):
            raise Unauthorized("callback token does not match this job", field="token")
        body = _reported(body)
        crash_point("callbacks.before_record", job_id)
        runpod_id = body["id"]
        job = None
        if body.get("status") == JobStatus.COMPLETED.value:
            finished, job = self._complete_as_expected(job_id, attempt, endpoint, body)
            if finished is not None:
                return finished
        job = job or self.store.get(job_id)
        started = _started_runpod_id(job, attempt)
        if started is not None and started != runpod_id:
            raise Conflict(f"attempt {attempt} of job {job_id} started RunPod job {started}, not {runpod_id}",
                           field="body.id")
        if job.status.terminal:
            return None  # duplicate or late callback: the first result stands
        if job.runpod_id != runpod_id or job.status is not JobStatus.IN_PROGRESS:
            # Surprising (result before our own record, or another attempt's job): ask RunPod itself.
            body = self.fetch_status(endpoint, runpod_id)
        return self.apply(job, endpoint, attempt, body, actor="webhook")

    def _complete_as_expected(self, job_id: str, attempt: int, endpoint: str,
                              body: dict[str, Any]) -> tuple[Job | None, Job | None]:
        """The usual result, in one write and no read: the job is IN_PROGRESS on this attempt and this
        RunPod job, keeps no cache entry (that one must be written before the job shows COMPLETED), and
        its item has room for the output beside the input (else the output is sized on the job read).
        Then what `apply` does after its write, on the job the write returns. Otherwise (None, the job as the refused
        write found it, or None if it was not returned): the caller goes the long way, with that job."""
        try:
            finished = self.store.transition(
                job_id, JobStatus.COMPLETED, actor="webhook", endpoint=endpoint, attempt=attempt,
                fields={"runpod_id": body["id"], "output": body.get("output")}, detail=_detail(body),
                expect_runpod_id=body["id"], expect_attempts=attempt, expect_uncached=True, expect_room=True,
                refused_job=True)
        except TransitionRefused as refused:
            return None, refused.current
        self._announce(finished, body, _units(finished, body))
        return finished, None

    def record_member(self, job_id: str, member: str, endpoint: str, token: str, body: dict[str, Any]) -> bool:
        """A council member's RunPod webhook: resume the workflow task that asked it, once."""
        if not self.verify_token(token, job_id, 0, endpoint, member):
            raise Unauthorized("callback token does not match this job", field="token")
        body = _reported(body)
        runpod_id = body["id"]
        job = self.store.get(job_id)
        if job.status.terminal or job.members is None:
            return False  # the job is over (or no council): nothing waits for this result
        asked = job.members.get(member)
        if asked is None:
            # The result beat the task's record of the member (RunPod ran it before the task had written
            # it): dropped, the council would wait out its callback timeout. RunPod sends it again.
            raise RetryLater(f"council member {member} of job {job_id} is not recorded yet", field="member")
        if asked.runpod_id != runpod_id:
            body = self.fetch_status(endpoint, runpod_id)
        target = _TERMINAL.get(body.get("status", ""))
        if target is None or asked.runpod_id != body.get("id") or not self.members.finish(job_id, member):
            return False  # not finished, an older try of this member, or a duplicate
        error = body.get("error")
        error_text = None if error is None else error if isinstance(error, str) else json.dumps(error)
        error_class = error_class_of(target, error)
        output = body.get("output")
        self.learn(endpoint, target, error_class, error_text, body, work_units("generate", output))
        if target is JobStatus.COMPLETED:
            text = output.get("text") if isinstance(output, dict) else None
            self.workflows.succeed_task(asked.task_token, {
                "model": asked.model, "text": text if isinstance(text, str) else json.dumps(output),
                "latency_ms": total_ms(body)})
        else:
            name = workflow_error_name(error_class or ErrorClass.TERMINAL)
            self.workflows.fail_task(asked.task_token, name, error_text or target.value)
        return True

    def apply(self, job: Job, endpoint: str, attempt: int, body: dict[str, Any], *, actor: str) -> Job | None:
        """Record a RunPod /status body once. A retryable failure of the current attempt goes to the
        recovery workflow (resuming it, or starting it) instead of ending the job."""
        target = _TERMINAL.get(body.get("status", ""))
        if target is None:
            return None  # not finished yet; RunPod calls again at a terminal status
        runpod_id = body.get("id")
        if target is JobStatus.CANCELLED and not (job.status is JobStatus.IN_PROGRESS and attempt == job.attempts
                                                  and job.runpod_id == runpod_id):
            # An attempt we stopped ourselves after moving the job off it (a hung worker, a superseded
            # attempt): its cancellation is not the caller's, and the job goes on.
            return None
        error = body.get("error")
        error_text = None if error is None else error if isinstance(error, str) else json.dumps(error)
        error_class = error_class_of(target, error)
        detail = _detail(body)
        if error_class is not None and error_class.retryable and self.workflows is not None:
            if attempt != job.attempts:
                # A newer attempt is under way, so the job is unchanged; the endpoint's slot is not.
                if not _recorded_in_progress(job, attempt):
                    self.learn(endpoint, JobStatus.FAILED, error_class, error_text or target.value, body,
                               _units(job, body))
                return None
            return self._retry(job, endpoint, attempt, body, error_text or target.value, error_class, detail, actor)
        fields: dict[str, Any] = {"runpod_id": runpod_id}
        if target is JobStatus.COMPLETED:
            fields["output"] = body.get("output")
        if error_text is not None:
            fields["error"] = error_text
        if error_class is not None:
            fields["error_class"] = error_class.value
        superseded = attempt < job.attempts  # an older attempt's result, while a newer attempt is under way
        # The cache entry is written before the job shows COMPLETED, so whoever sees COMPLETED and asks
        # again gets the hit; a result the job then does not take is dropped again.
        cached = (target is JobStatus.COMPLETED and not job.status.terminal and job.cache_key is not None
                  and self.cache is not None and self.cache.put(job.cache_key, job.id, body.get("output")))
        try:
            finished = self.store.transition(job.id, target, actor=actor, endpoint=endpoint, attempt=attempt,
                                             fields=fields, detail=detail, current=job)
        except TransitionRefused:
            if cached and self.store.get(job.id).status is not JobStatus.COMPLETED:  # not a duplicate report
                self.cache.forget(job.cache_key, job.id)  # type: ignore[union-attr, arg-type]
            return None
        # An older attempt the job had moved off was reported then; reporting it again would free its
        # endpoint's slot twice.
        learn = not superseded or not _recorded_in_progress(job, attempt)
        # The newer attempt's work is now pointless.
        newer = (job.endpoint, job.runpod_id) if superseded and job.status is JobStatus.IN_PROGRESS \
            and job.endpoint and job.runpod_id else None
        self._announce(finished, body, _units(job, body), learn=learn, stop=newer)
        return finished

    def _announce(self, finished: Job, body: dict[str, Any], units: float | None, *, learn: bool = True,
                  stop: tuple[str, str] | None = None) -> None:
        """After the terminal write won. The caller first: its notice is what it waits for, and nothing
        below (statistics, RunPod, the workflow) may delay it or, by failing, cost it. `stop`: the
        (endpoint, RunPod job) of a newer attempt to cancel."""
        crash_point("callbacks.after_terminal", finished.id)
        self.notify(finished)
        if learn:
            self.learn(finished.endpoint, finished.status, finished.error_class, finished.error, body, units)
        if stop is not None and self.stop_runpod_job is not None:
            self.stop_runpod_job(*stop)
        if finished.task_token and self.workflows is not None:
            if finished.status is JobStatus.COMPLETED:
                self.workflows.succeed_task(finished.task_token, {"status": finished.status.value})
            else:
                self.workflows.fail_task(finished.task_token, JobFinished.__name__, f"job ended {finished.status.value}")

    def _retry(self, job: Job, endpoint: str, attempt: int, body: dict[str, Any], error: str,
               error_class: ErrorClass, detail: str, actor: str) -> Job | None:
        fields: dict[str, Any] = {"error": error, "error_class": error_class.value}
        if not job.task_token:
            # Fast path: the recovery workflow takes over (idempotent start: duplicates are harmless).
            fields["execution_arn"] = self.workflows.start_recovery(job.id, attempt)
        try:
            retrying = self.store.transition(
                job.id, RETRY_ATTEMPT, actor=actor, endpoint=endpoint, attempt=attempt, detail=detail,
                fields=fields,
            )
        except TransitionRefused:
            return None  # already retrying or finished: this report is a duplicate
        self.learn(endpoint, JobStatus.FAILED, error_class, error, body, _units(job, body))
        if job.task_token:
            self.workflows.fail_task(job.task_token, workflow_error_name(error_class), error)
        return retrying


__all__ = ["CallbackRecorder", "JobNotFound", "error_class_of", "handler_report"]
