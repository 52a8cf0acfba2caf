"""Streaming results: GET /v1/jobs/{id}/stream, RunPod-style polling through the router.

A `stream: true` generate job runs on a streaming endpoint (its worker registered a generator
handler); the worker posts each chunk to RunPod, and RunPod's `/stream/{runpod_id}` hands out the
chunks produced since the previous call. This module proxies that call for the job's tenant:

    {"id": <our job id>, "status": <our job status>, "attempt": n, "stream": [{"output": chunk}, ...]}

* Like RunPod's, each call returns only the chunks no call has returned yet (RunPod keeps a read
  cursor per job): one consumer per job; join the chunks in the order received.
* `status` is ours (authoritative), read *before* RunPod is asked: when it is terminal, the same
  answer carries every chunk that was still unread, so a client stops polling at a terminal status
  and has everything (the final result is also on GET /v1/jobs/{id}).
* Not yet submitted (IN_QUEUE), waiting for a new attempt (RETRYING), or never dispatched: the
  status and an empty stream. A client that sees `attempt` change should discard the text so far (a
  new attempt streams from the start).
* Another tenant's job, or no job: NotFound (404). RunPod unreachable or refusing: ServiceUnavailable
  (503; nothing is lost, poll again). RunPod no longer knowing the job (its results expire 30 min
  after the end): an empty stream.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel, Field

from stillhouse.auth import Principal
from stillhouse.errors import ErrorClass, ServiceUnavailable
from stillhouse.jobs.model import Job, JobStatus
from stillhouse.routing.registry import EndpointNotFound, EndpointSpec
from stillhouse.runpod.client import RunPodError

log = logging.getLogger(__name__)


class StreamPage(BaseModel):
    """The answer of GET /v1/jobs/{id}/stream."""

    id: str
    status: JobStatus
    attempt: int = 0  # the attempt whose chunks these are (changes only when the job is retried)
    stream: list[dict[str, Any]] = Field(default_factory=list)  # [{"output": chunk}, ...]
    trace_id: str | None = Field(default=None, exclude=True)  # for the route's log lines, not shown


class Jobs(Protocol):
    def get(self, job_id: str, tenant_id: str | None = None) -> Job: ...


class Endpoints(Protocol):
    def get(self, name: str) -> EndpointSpec: ...


class StreamClient(Protocol):
    def stream(self, base_url: str, endpoint_id: str, job_id: str) -> dict[str, Any]: ...


class StreamReader:
    """Reads a job's new chunks from the RunPod endpoint that runs it (stillhouse.container builds the parts)."""

    def __init__(self, store: Jobs, registry: Endpoints, client_for: Callable[[EndpointSpec], StreamClient]) -> None:
        self._store = store
        self._registry = registry
        self._client_for = client_for

    def read(self, principal: Principal, job_id: str) -> StreamPage:
        job = self._store.get(job_id, principal.tenant_id)  # another tenant's job: JobNotFound (404)
        page = StreamPage(id=job.id, status=job.status, attempt=job.attempts, trace_id=job.trace_id)
        if not _on_runpod(job):
            return page
        try:
            endpoint = self._registry.get(job.endpoint)
        except EndpointNotFound:
            log.warning("job %s: its endpoint %r is no longer configured; no stream", job.id, job.endpoint)
            return page
        try:
            body = self._client_for(endpoint).stream(endpoint.base_url, endpoint.endpoint_id, job.runpod_id)
        except RunPodError as err:
            if err.error_class is ErrorClass.WORKER_LOST:  # 404: RunPod no longer has it (expired, purged)
                return page
            # The detail names RunPod URLs and ids: log it, don't show it.
            log.warning("job %s: stream of %s on %s failed: %s", job.id, job.runpod_id, endpoint.name, err.message)
            raise ServiceUnavailable(
                f"the stream of job {job.id} cannot be read from its endpoint right now; poll again"
            ) from err
        return page.model_copy(update={"stream": chunks_of(body)})


def _on_runpod(job: Job) -> bool:
    """Is there a RunPod job of the current attempt to read from?"""
    if not (job.endpoint and job.runpod_id):
        return False
    # RETRYING: the recorded RunPod job is the failed attempt's; the next one has not started yet.
    return job.status is JobStatus.IN_PROGRESS or job.status.terminal


def chunks_of(body: Any) -> list[dict[str, Any]]:
    """RunPod's `stream` list, each item as {"output": chunk}."""
    items = body.get("stream") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return []
    return [{"output": item["output"]} if isinstance(item, dict) and "output" in item else {"output": item}
            for item in items]


__all__ = ["StreamPage", "StreamReader", "chunks_of"]
