"""The jobs service: what the HTTP API does, free of HTTP."""
from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aws_lambda_powertools import Logger
from pydantic import ValidationError

from stillhouse.auth import Principal
from stillhouse.config import InputLimits, TenantLimits
from stillhouse.errors import (
    Conflict,
    PayloadTooLarge,
    TransitionRefused,
    Unprocessable,
)
from stillhouse.jobs.deadlines import after
from stillhouse.jobs.input_limits import check_input
from stillhouse.jobs.model import CouncilInput, Job, JobRequest, JobStatus, Priority, Task
from stillhouse.jobs.queue import JobQueue
from stillhouse.jobs.store import JobStore, now_iso
from stillhouse.outputs.cache import ResultCache, cache_key, cacheable
from stillhouse.telemetry.metrics import metrics
from stillhouse.telemetry.tracing import TraceContext, job_context
from stillhouse.tenants.quotas import Quotas

# The most input a job takes. An input over a few KB is kept in S3, not in the job's item (outputs.spill), but
# a job without a results bucket keeps it inline, and DynamoDB items stop at 400 KB.
MAX_INPUT_BYTES = 300_000

logger = Logger(service="stillhouse", child=True)


@dataclass(frozen=True)
class CouncilDefaults:
    models: tuple[str, ...] = ()
    chair: str | None = None


def new_job_id() -> str:
    return uuid.uuid4().hex


class WorkflowStopper(Protocol):
    """Stops a job's workflow (stillhouse.workflows.stepfunctions.Workflows)."""

    def stop(self, execution_arn: str, cause: str) -> None: ...


class RunPodStopper(Protocol):
    """Cancels a RunPod job and frees its endpoint slot (stillhouse.routing.runpod_gateway.RunPodGateway)."""

    def stop(self, endpoint_name: str, runpod_id: str) -> None: ...


class JobService:
    def __init__(self, store: JobStore, queue: JobQueue, *, workflows: WorkflowStopper | None = None,
                 runpod: RunPodStopper | None = None, council_defaults: CouncilDefaults | None = None,
                 cache: ResultCache | None = None, notify: Callable[[Job], Any] | None = None,
                 limits: InputLimits | None = None, quotas: Quotas | None = None,
                 check_webhook: Callable[[str], Any] | None = None) -> None:
        self._quotas = quotas
        self._limits = limits or InputLimits()
        # Refuses a webhook URL we must not send to (delivery.destinations.WebhookGuard.check: 422 `webhook`).
        self._check_webhook = check_webhook
        self._cache = cache
        self._notify = notify  # pushes a finished job to the caller's webhook
        self._council_defaults = council_defaults or CouncilDefaults()
        self._store = store
        self._queue = queue
        self._workflows = workflows
        self._runpod = runpod

    def submit(self, principal: Principal, request: JobRequest, traceparent: str | None = None) -> Job:
        """Store and queue a job; it joins the caller's trace (`traceparent`), or starts one."""
        size = len(json.dumps(request.input, separators=(",", ":")))
        if size > MAX_INPUT_BYTES:
            raise PayloadTooLarge(f"input is {size} bytes; a job keeps at most {MAX_INPUT_BYTES} bytes of input "
                                  "(pass large data by URL)", field="input")
        check_input(request.task, request.input, request.params, self._limits)
        if request.webhook and self._check_webhook is not None:
            self._check_webhook(str(request.webhook))
        if request.task is Task.COUNCIL:
            request = request.model_copy(update={"input": self._council_input(request.input)})
        key = None
        if request.cache:
            if self._cache is None or not cacheable(request.task, request.input, request.params):
                raise Unprocessable("cache: only deterministic jobs can be cached (echo, embed, and generate "
                                    "with temperature 0 and no stream)", field="cache")
            key = cache_key(principal.tenant_id, request.task, request.model, request.input, request.params)
        job_id = new_job_id()
        # A council counts as the GPU jobs it runs, not as one: otherwise it would be 2N+1 for 1.
        spec = CouncilInput.model_validate(request.input) if request.task is Task.COUNCIL else None
        gpu_jobs = spec.gpu_jobs() if spec else 1
        quota_hold = None
        if self._quotas is not None:
            quota_hold = self._quotas.admit(principal.tenant_id, job_id, high_priority=request.priority is Priority.HIGH,
                               council_models=len(spec.models or ()) if spec else None, gpu_jobs=gpu_jobs)
        at = now_iso()
        deadline_s = request.deadline_s or (self._quotas.limits(principal.tenant_id).deadline_s if self._quotas
                                            else TenantLimits().deadline_s)
        trace = TraceContext.parse(traceparent) or TraceContext.new()
        job = Job(
            id=job_id,
            tenant_id=principal.tenant_id,
            task=request.task,
            status=JobStatus.IN_QUEUE,
            input=request.input,
            model=request.model,
            params=request.params,
            priority=request.priority,
            webhook=str(request.webhook) if request.webhook else None,
            cache=request.cache,
            created_at=at,
            updated_at=at,
            deadline_at=after(at, deadline_s),
            start_by=after(at, min(request.ttl_s, deadline_s)) if request.ttl_s else None,
            events=[{"at": at, "status": JobStatus.IN_QUEUE, "actor": "api"}],
            # Council members are recorded into this map as the workflow asks them (it must exist first).
            members={} if request.task is Task.COUNCIL else None,
            cache_key=key,
            trace_id=trace.trace_id,
            quota_hold=quota_hold,
        )
        with job_context(job.id, trace, "submit"):
            try:
                job = self._store.create(job)  # with its input's reference, when S3 keeps the input
            except Exception:
                self._withdraw(job)
                raise  # an AWS "not now" is 503 + Retry-After (http.resolver): nothing of it was kept
            return self._accept(job, key)

    def _withdraw(self, job: Job) -> None:
        """A submission refused after its quota was taken leaves nothing behind: its in-flight place is
        given back, and an item the failed write may still have made (an AWS 5xx can follow a write) is
        deleted while nothing has queued it. Best effort: the sweeper's quota recount releases the places of
        a job that was never stored (tenants.quotas), and a leftover item is never queued by us."""
        try:
            self._store.discard(job.id)
        except Exception:  # noqa: BLE001 - the write's own error is what the caller is told
            logger.warning("could not discard a refused job's item", extra={"job_id": job.id})
        if self._quotas is not None and job.quota_hold:
            try:
                self._quotas.release(job.tenant_id, job.quota_hold)
            except Exception:  # noqa: BLE001 - healing releases it later
                logger.warning("could not release a refused job's quota", extra={"job_id": job.id})

    def _accept(self, job: Job, key: str | None) -> Job:
        """The job is stored: it is accepted (202), and nothing from here may refuse it. A stored IN_QUEUE job
        is never lost: the sweeper sends again the message of a queued job that has not been dispatched
        (jobs.sweeper), so a queue that fails now costs the job a wait, not its existence."""
        hit = None
        if key:
            try:
                hit = self._cache.get(key) if self._cache is not None else None
            except Exception:  # noqa: BLE001 - a cache is an optimisation: a lookup that fails is a miss
                logger.warning("result cache lookup failed; treated as a miss", extra={"job_id": job.id})
            metrics.cache_lookup(job.task.value, hit is not None)
        if hit is not None:  # answered at once: no queue, no GPU
            try:
                return self._answer_from_cache(job, *hit)
            except Exception:  # noqa: BLE001 - not answered from the cache: it runs as any other job
                logger.warning("could not answer from the cache; the job is queued", extra={"job_id": job.id})
        try:
            self._queue.send(job.id, job.priority, attempts=job.attempts, task=job.task.value)
        except Exception:  # noqa: BLE001 - any failure to enqueue leaves the job to the sweeper, never refused
            logger.warning("could not queue an accepted job; the sweeper sends it", extra={"job_id": job.id})
            try:  # due now: the sweeper's next round sends its message (else `watch_s` after it was stored)
                self._store.annotate(job.id, {"due_at": now_iso()})
            except Exception:  # noqa: BLE001 - still due, later
                logger.warning("could not mark an unqueued job due", extra={"job_id": job.id})
        return job

    def _answer_from_cache(self, job: Job, source: str, output: Any) -> Job:
        # The ordinary transition, so a big output spills to S3 and the timeline shows where it came from.
        done = self._store.transition(job.id, JobStatus.COMPLETED, actor="cache", detail=f"result of job {source}",
                                      fields={"output": output, "cached_from": source}, current=job)
        if self._notify is not None:
            self._notify(done)
        return done

    def _council_input(self, raw: dict[str, Any]) -> dict[str, Any]:
        try:
            spec = CouncilInput.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(["input", *map(str, first["loc"])])
            raise Unprocessable(f"{field}: {first['msg']}", field=field) from err
        limits = self._limits
        if len(spec.prompt) > limits.prompt_chars:
            raise Unprocessable(f"input.prompt: {len(spec.prompt)} characters; at most {limits.prompt_chars}",
                                field="input.prompt")
        if spec.max_new_tokens is not None and spec.max_new_tokens > limits.max_new_tokens:
            raise Unprocessable(f"input.max_new_tokens: must be at most {limits.max_new_tokens}",
                                field="input.max_new_tokens")
        models = spec.models or list(self._council_defaults.models)
        if len(models) > limits.council_models:
            raise Unprocessable(f"input.models: a council has at most {limits.council_models} models",
                                field="input.models")
        if len(models) < 2:
            raise Unprocessable("input.models: a council needs at least 2 models", field="input.models")
        if len(set(models)) != len(models):
            raise Unprocessable("input.models: each model may sit on the council once", field="input.models")
        chair = spec.chair or self._council_defaults.chair or models[0]
        return spec.model_copy(update={"models": models, "chair": chair}).model_dump()

    def get(self, principal: Principal, job_id: str) -> Job:
        return self._store.get(job_id, principal.tenant_id)

    def list(self, principal: Principal, *, status: JobStatus | None, limit: int, cursor: str | None):
        return self._store.list(principal.tenant_id, status=status, limit=limit, cursor=cursor)

    def cancel(self, principal: Principal, job_id: str) -> Job:
        job = self._store.get(job_id, principal.tenant_id)
        if job.status.terminal:
            raise Conflict(f"job {job_id} is already {job.status.value}", field="status")
        try:
            job = self._store.transition(job_id, JobStatus.CANCELLED, actor="api", endpoint=job.endpoint,
                                         attempt=job.attempts, detail="cancelled by caller")
        except TransitionRefused as err:
            current = self._store.get(job_id)
            raise Conflict(f"job {job_id} is already {current.status.value}", field="status") from err
        self._stop_work(job)
        return job

    def stop(self, job: Job, detail: str) -> Job | None:
        """Cancel a job on its owner's behalf (a batch's chunk when the batch is cancelled or expires): the
        job ends CANCELLED unless it ended first (None), and its RunPod work is stopped."""
        try:
            stopped = self._store.transition(job.id, JobStatus.CANCELLED, actor="batch", endpoint=job.endpoint,
                                             attempt=job.attempts, detail=detail)
        except TransitionRefused:
            return None
        self._stop_work(stopped)
        return stopped

    def _stop_work(self, job: Job) -> None:
        """Best effort: the job is already CANCELLED; stop its workflow and the RunPod work in flight."""
        if job.execution_arn and self._workflows is not None:
            self._workflows.stop(job.execution_arn, "cancelled by caller")
        if self._runpod is None:
            return
        in_flight = [(m.endpoint, m.runpod_id) for m in (job.members or {}).values() if not m.done]
        if job.endpoint and job.runpod_id:
            in_flight.append((job.endpoint, job.runpod_id))
        for endpoint_name, runpod_id in in_flight:
            self._runpod.stop(endpoint_name, runpod_id)
