"""Dispatch: take a queued job, pick an endpoint, submit it to RunPod with our signed callback URL.

Safe under duplicate SQS deliveries: each delivery must first claim the next attempt with a
conditional write, so only one of two concurrent deliveries submits to RunPod. When no endpoint
takes the job, it is handed to the recovery workflow (backoff, failover), never dropped.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from stillhouse.aws import unavailable
from stillhouse.crash_points import crash_point
from stillhouse.errors import ErrorClass, StillhouseError, TransitionRefused
from stillhouse.jobs.deadlines import SettleDeadlines, overdue, seconds_left
from stillhouse.jobs.model import Job, JobStatus, Task
from stillhouse.jobs.queue import Queued
from stillhouse.jobs.status import HAND_OVER, START_ATTEMPT, START_COUNCIL, Move
from stillhouse.jobs.store import JobStore
from stillhouse.routing.placement import Endpoint, Refused, Routing, place
from stillhouse.runpod.client import RunPodClient


class DispatchDeferred(StillhouseError):
    """The job could not be handed on this time; the queue delivers it again later."""

    code = "dispatch_deferred"


class LaneBusy(DispatchDeferred):
    """A batch chunk found every endpoint for its model busier than the batch lane's share: it waits, so
    that interactive jobs find room (the queue brings it back in `defer_s`)."""

    code = "lane_busy"


@dataclass(frozen=True)
class BatchLane:
    """The batch lane's rule (config.BatchSettings): a chunk starts only where the endpoint's jobs in flight
    are under `share` of its max_in_flight and under `slots`; a chunk put back `defers` times goes as any
    job would (never starved: the plan still keeps to each endpoint's max_in_flight)."""

    share: float = 0.5
    defers: int = 5
    slots: int = 8

    def room(self, plan: Sequence[Endpoint], receive_count: int) -> Sequence[Endpoint] | None:
        """The endpoints a chunk may start on now; None when it must wait."""
        if receive_count > self.defers or not plan:
            return plan  # aged: never starved; or nothing serves it, which the usual path answers
        states = getattr(plan, "states", {})
        roomy = tuple(e for e in plan if _under_share(e, states.get(e.name), self.share, self.slots))
        if not roomy:
            return None
        return replace(plan, endpoints=roomy) if hasattr(plan, "endpoints") else list(roomy)


def _under_share(endpoint: Endpoint, state: Any, share: float, slots: int) -> bool:
    limit = getattr(endpoint, "max_in_flight", None)
    in_flight = getattr(state, "in_flight", 0) if state is not None else 0
    return in_flight < min(slots, max(1, int(limit * share)) if limit is not None else slots)


class Handover(Protocol):
    """Where jobs go that need a workflow (stillhouse.workflows.stepfunctions.Workflows)."""

    def start_recovery(self, job_id: str, attempt: int) -> str: ...

    def start_council(self, job_id: str, council: dict[str, Any]) -> str: ...


def runpod_payload(job: Job) -> dict[str, Any]:
    """The handler's input: the caller's params, then input, then the routing facts."""
    payload = {**job.params, **job.input, "task": job.task.value}
    if job.model:
        payload["model"] = job.model
    return payload


def slowest_per_unit_ms(plan: Sequence[Endpoint]) -> float | None:
    """The slowest latency per unit of work the plan's endpoints have taught (None: none taught yet)."""
    learnt = [s.ema_latency_ms for s in getattr(plan, "states", {}).values()
              if s is not None and s.ema_latency_ms is not None]
    return max(learnt) if learnt else None


def lost_on(job: Job) -> str | None:
    """The endpoint whose worker lost the job's last attempt, if that is how it ended."""
    return job.endpoint if job.error_class is ErrorClass.WORKER_LOST else None


@dataclass
class Dispatcher:
    store: JobStore
    router: Routing
    client_for: Callable[[Endpoint], RunPodClient]
    callback_url: Callable[[Job, int, Endpoint], str]
    policy: dict[str, Any]
    max_receive_count: int
    workflows: Handover | None = None
    workflow_mode: str = "on_failure"  # or "always": every job runs in the recovery workflow
    deadlines: SettleDeadlines = field(default_factory=SettleDeadlines)
    # What the worker is sent for a job: its own input, or for a batch chunk its lines (kept in S3).
    payload_for: Callable[[Job], dict[str, Any]] = runpod_payload
    lane: BatchLane = field(default_factory=BatchLane)
    # (receipt handle): have a waiting chunk's message come back soon (JobQueue.defer), not after the
    # queue's whole visibility timeout.
    defer: Callable[[str], None] | None = None
    # Pushes a job dispatch ended (refused terminally, timed out, out of deliveries) to its caller's webhook.
    notify: Callable[[Job], Any] = lambda job: None

    # --- the fast path (SQS) -------------------------------------------------------------------
    def dispatch(self, job_id: str, receive_count: int = 1, message: Queued | None = None,
                 receipt_handle: str | None = None) -> Job | None:
        """Dispatch a queued job. `message`: what its queue message says; a fast-path job is then
        claimed straight away (the claim's condition checks that it is still queued at those attempts),
        and read only when the claim is refused."""
        job: Job | None = None
        claimed: Job | None = None
        lane_plan: Sequence[Endpoint] | None = None
        if message is not None and message.task == Task.BATCH.value:
            # Outside the try below: waiting in the lane is not a failed delivery.
            job = self.store.get(job_id)
            if job.status is not JobStatus.IN_QUEUE:
                return None
            lane_plan = self.lane.room(self.plan(job), receive_count)
            if lane_plan is None:
                if receipt_handle and self.defer is not None:
                    self.defer(receipt_handle)
                raise LaneBusy(f"every endpoint for {job.model} is over the batch lane's share")
            receive_count -= min(receive_count - 1, self.lane.defers)  # deliveries spent waiting are not failures
        try:
            if job is not None:
                claimed = self.store.claim_attempt(job.id, job.attempts, queued_only=True)
                if claimed is None:
                    return None  # a concurrent delivery took this attempt
            elif self._claims_blind(message):
                claimed = self.store.claim_attempt(job_id, message.attempts, queued_only=True)  # type: ignore[union-attr, arg-type]
            if claimed is None:
                job = self.store.get(job_id)
                if job.status is not JobStatus.IN_QUEUE:
                    return None  # duplicate delivery, cancelled while queued, or a workflow has it
                if job.task is Task.COUNCIL:
                    return self._hand_over(job, 0, "council workflow", council=True)
                if self.workflow_mode == "always":
                    return self._hand_over(job, 0, "workflow_mode=always")
                claimed = self.store.claim_attempt(job.id, job.attempts)
                if claimed is None:
                    return None  # a concurrent delivery took this attempt
            crash_point("dispatch.after_claim", job_id)
            outcome = self.submit(claimed, claimed.attempts, actor="dispatch", plan=lane_plan)
            crash_point("dispatch.after_start", job_id)
            if not isinstance(outcome, Refused):
                return outcome
            return self._hand_over(claimed, claimed.attempts, outcome.reason, outcome.error_class)
        except Exception as err:
            if receive_count >= self.max_receive_count and unavailable(err) is None:
                # Last delivery: end the job before the message goes to the DLQ. Not when AWS throttled us:
                # that is no fault of the job's, and the sweeper's DLQ policy sends a waiting job's
                # message back (its deadline still bounds it).
                last = claimed or job or self.store.get(job_id)
                self._fail(last, last.attempts, None, f"dispatch failed after {receive_count} deliveries: {err}",
                           ErrorClass.TRANSIENT, actor="dispatch")
            raise

    def _claims_blind(self, message: Queued | None) -> bool:
        """Can the message's facts stand in for reading the job? Only for the plain fast path: council jobs
        and WorkflowMode=always hand the job to a workflow instead of claiming an attempt."""
        return (message is not None and message.attempts is not None and message.task is not None
                and message.task != Task.COUNCIL.value and self.workflow_mode != "always")

    def _hand_over(self, job: Job, attempt: int, reason: str, error_class: ErrorClass | None = None,
                   *, council: bool = False) -> Job | None:
        if self.workflows is None:
            raise DispatchDeferred(reason)
        if council:
            arn = self.workflows.start_council(job.id, job.input)
            return self._record(job, START_COUNCIL, "dispatch", attempt, reason,
                                {"execution_arn": arn})
        # Start first (the execution name makes it idempotent), then record it in one write: a job
        # is never RETRYING without the execution that owns it. The execution's first task may get
        # there before us (it records itself too), so RETRYING is accepted as well: the reason and
        # its error class still land.
        arn = self.workflows.start_recovery(job.id, attempt)
        fields: dict[str, Any] = {"execution_arn": arn}
        if error_class is not None:
            fields |= {"error": reason, "error_class": error_class.value}
        return self._record(job, HAND_OVER, "dispatch", attempt, reason, fields)

    def plan(self, job: Job) -> Sequence[Endpoint]:
        """The endpoints that could take the job now (serve its model, breaker not open, not full)."""
        return self.router.plan(job.model, streaming=bool(runpod_payload(job).get("stream")))

    # --- one pass over the plan (fast path and recovery workflow alike) --------------------------
    def submit(self, job: Job, attempt: int, *, actor: str, task_token: str | None = None,
               execution_arn: str | None = None, plan: Sequence[Endpoint] | None = None) -> Job | Refused | None:
        """Try the plan's endpoints in order (`plan`: one the caller has just read); the job is
        IN_PROGRESS on success, FAILED on a terminal refusal (returned as None), and unchanged when every
        endpoint refused retryably (Refused)."""
        now = datetime.now(UTC)
        if self.time_out_if_overdue(job, attempt, actor=actor, now=now):
            return None
        if plan is None:
            plan = self.plan(job)
        # RunPod ends an attempt that runs past what the job should take (a hung worker): TIMED_OUT, retried.
        left_s = seconds_left(now, job.deadline_at)
        run_timeout_s = self.deadlines.run_timeout_s(job.task.value, job.input, job.params,
                                                     slowest_per_unit_ms(plan), runs_before=job.gpu_runs, cap_s=left_s)
        policy = {**self.policy, "executionTimeout": int(run_timeout_s * 1000)}
        if left_s is not None:  # RunPod drops it too once the job's deadline has passed (at least its 10 s)
            policy["ttl"] = max(10_000, min(int(policy.get("ttl") or left_s * 1000), int(left_s * 1000)))
        # Worker-lost: retry elsewhere. Whatever lost the job there may lose it again.
        outcome = place(self.router, self.client_for, job.model, self.payload_for(job),
                        lambda endpoint: self.callback_url(job, attempt, endpoint), policy,
                        avoid=lost_on(job), plan=plan)
        if isinstance(outcome, Refused):
            if outcome.error_class is ErrorClass.TERMINAL:
                self._fail(job, attempt, outcome.endpoint, outcome.reason, ErrorClass.TERMINAL, actor=actor)
                return None
            return outcome
        self.router.submitted(outcome.endpoint.name)
        learnt = getattr(plan, "states", {}).get(outcome.endpoint.name)
        return self._started(job, attempt, outcome.endpoint, outcome.accepted, actor, task_token, execution_arn,
                             per_unit_ms=getattr(learnt, "ema_latency_ms", None), run_timeout_s=run_timeout_s)

    def _started(self, job: Job, attempt: int, endpoint: Endpoint, accepted: dict[str, Any], actor: str,
                 task_token: str | None, execution_arn: str | None = None, *,
                 per_unit_ms: float | None = None, run_timeout_s: float | None = None) -> Job | None:
        runpod_id = accepted["id"]
        # When to ask RunPod's /status if no webhook has come: what this job should take there.
        due_in = self.deadlines.in_flight_s(job.task.value, job.input, job.params, per_unit_ms)
        fields: dict[str, Any] = {"runpod_id": runpod_id, "due_at": self.deadlines.due(datetime.now(UTC), due_in)}
        if run_timeout_s is not None:
            fields["run_timeout_s"] = int(run_timeout_s)  # what the sweeper holds a still-running attempt to
        if task_token:
            fields["task_token"] = task_token
        if execution_arn:
            fields["execution_arn"] = execution_arn
        crash_point("dispatch.after_run", job.id)
        started = self._record(job, START_ATTEMPT, actor, attempt, None, fields, endpoint=endpoint.name)
        if started is None:
            current = self.store.get(job.id)
            if current.status is JobStatus.CANCELLED:
                # Cancelled while we were submitting: don't leave the GPU working for nobody.
                self.client_for(endpoint).cancel(endpoint.base_url, endpoint.endpoint_id, runpod_id)
                if current.endpoint is None:
                    self.router.released(endpoint.name)  # the cancel could not know where it ran
        return started  # None: cancelled meanwhile, or the result webhook already finished it

    def time_out_if_overdue(self, job: Job, attempt: int, *, actor: str, now: datetime | None = None) -> bool:
        """End the job TIMED_OUT if it is past its deadline, or past its ttl without having started on a
        GPU, naming what it was waiting for; True if it is (or already was) ended so."""
        why = overdue(now or datetime.now(UTC), job.deadline_at, job.start_by, started=job.gpu_runs > 0)
        if why is None:
            return False
        error = f"{why}; it was waiting for: {job.error or 'an endpoint to take it'}"
        timed_out = self._record(job, JobStatus.TIMED_OUT, actor, attempt, error, {"error": error})
        if timed_out is not None:
            self.notify(timed_out)
        return True

    def _fail(self, job: Job, attempt: int, endpoint: str | None, error: str, error_class: ErrorClass,
              *, actor: str) -> Job | None:
        failed = self._record(job, JobStatus.FAILED, actor, attempt, error,
                              {"error": error, "error_class": error_class.value}, endpoint=endpoint)
        if failed is not None:
            self.notify(failed)  # the caller hears of every end, whichever function wrote it
        return failed

    def _record(self, job: Job, move: Move | JobStatus, actor: str, attempt: int, detail: str | None,
                fields: dict[str, Any], *, endpoint: str | None = None) -> Job | None:
        try:
            return self.store.transition(job.id, move, actor=actor, endpoint=endpoint, attempt=attempt,
                                         detail=detail, fields=fields)
        except TransitionRefused:
            return None
