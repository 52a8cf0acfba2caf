"""Dispatch: take a queued job, pick an endpoint, submit it to RunPod with our signed callback URL.

Safe under duplicate SQS deliveries: each delivery must first claim the next attempt with a
conditional write, so only one of two concurrent deliveries submits to RunPod.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stillhouse.errors import StillhouseError, TransitionRefused
from stillhouse.jobs import JobStore
from stillhouse.models import ErrorClass, Job, JobStatus
from stillhouse.runpod_client import RunPodClient, RunPodError


class Endpoint(Protocol):
    name: str
    endpoint_id: str
    base_url: str
    secret_ref: str | None


class DispatchDeferred(StillhouseError):
    """No endpoint took the job this time; the queue delivers it again later."""

    code = "dispatch_deferred"


class Routing(Protocol):
    """What dispatch needs of the router (stillhouse.route.Router): a plan, breaker claims, outcomes."""

    def plan(self, model: str | None) -> Sequence[Endpoint]: ...

    def allow(self, name: str, plan: Any = None) -> bool: ...

    def submitted(self, name: str) -> None: ...

    def refused(self, name: str, error: RunPodError) -> None: ...

    def released(self, name: str) -> None: ...


def runpod_payload(job: Job) -> dict[str, Any]:
    """The handler's input: the caller's params, then input, then the routing facts."""
    payload = {**job.params, **job.input, "task": job.task.value}
    if job.model:
        payload["model"] = job.model
    return payload


@dataclass
class Dispatcher:
    store: JobStore
    router: Routing
    client_for: Callable[[Endpoint], RunPodClient]
    callback_url: Callable[[Job, int, Endpoint], str]
    policy: dict[str, Any]
    max_receive_count: int

    def dispatch(self, job_id: str, receive_count: int = 1) -> Job | None:
        job = self.store.get(job_id)
        if job.status not in (JobStatus.IN_QUEUE, JobStatus.RETRYING):
            return None  # duplicate delivery, or cancelled while queued
        claimed = self.store.claim_attempt(job.id, job.attempts)
        if claimed is None:
            return None  # a concurrent delivery took this attempt
        attempt = claimed.attempts
        errors: list[str] = []
        plan = self.router.plan(job.model)
        for endpoint in plan:
            if not self.router.allow(endpoint.name, plan):
                errors.append(f"{endpoint.name}: breaker open")
                continue  # another instance took the last recovery probe
            try:
                accepted = self.client_for(endpoint).run(
                    endpoint.base_url,
                    endpoint.endpoint_id,
                    runpod_payload(job),
                    webhook=self.callback_url(job, attempt, endpoint),
                    policy=self.policy,
                )
            except RunPodError as err:
                self.router.refused(endpoint.name, err)
                errors.append(f"{endpoint.name}: {err.message}")
                if err.error_class is ErrorClass.TERMINAL:
                    return self._fail(job, attempt, endpoint.name, err.message, ErrorClass.TERMINAL)
                continue
            self.router.submitted(endpoint.name)
            return self._started(job, attempt, endpoint, accepted)
        reason = "; ".join(errors) or f"no endpoint serves model {job.model or '(default)'}"
        if receive_count >= self.max_receive_count:
            # Last delivery: end the job before the message goes to the DLQ.
            self._fail(job, attempt, None, f"dispatch failed after {receive_count} deliveries: {reason}",
                       ErrorClass.TRANSIENT)
        raise DispatchDeferred(reason)

    def _started(self, job: Job, attempt: int, endpoint: Endpoint, accepted: dict[str, Any]) -> Job | None:
        runpod_id = accepted["id"]
        try:
            return self.store.transition(
                job.id, JobStatus.IN_PROGRESS, actor="dispatch", endpoint=endpoint.name, attempt=attempt,
                fields={"runpod_id": runpod_id}, expect=[JobStatus.IN_QUEUE, JobStatus.RETRYING],
            )
        except TransitionRefused:
            current = self.store.get(job.id)
            if current.status is JobStatus.CANCELLED:
                # Cancelled while we were submitting: don't leave the GPU working for nobody.
                self.client_for(endpoint).cancel(endpoint.base_url, endpoint.endpoint_id, runpod_id)
                if current.endpoint is None:
                    self.router.released(endpoint.name)  # the cancel could not know where it ran
            return None  # or the result webhook already finished it

    def _fail(self, job: Job, attempt: int, endpoint: str | None, error: str, error_class: ErrorClass) -> Job | None:
        try:
            return self.store.transition(
                job.id, JobStatus.FAILED, actor="dispatch", endpoint=endpoint, attempt=attempt, detail=error,
                fields={"error": error, "error_class": error_class.value},
            )
        except TransitionRefused:
            return None
