"""HTTP face of RunPod callbacks: POST /callbacks/runpod/{job_id}?attempt=&endpoint=&token=."""
from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler.openapi.params import Query

from stillhouse.container import container
from stillhouse.http.resolver import new_resolver
from stillhouse.jobs.model import JobStatus
from stillhouse.telemetry.tracing import job_context

app = new_resolver()
logger = Logger(service="stillhouse", child=True)


@app.post("/callbacks/runpod/<job_id>")
def runpod_callback(
    job_id: str,
    body: dict[str, Any],
    token: Annotated[str, Query(max_length=200)],
    endpoint: Annotated[str, Query(max_length=100)],
    attempt: Annotated[int, Query(ge=0)] = 0,
    member: Annotated[str, Query(max_length=40, pattern=r"^[a-z]+-\d+$")] = "",
    traceparent: Annotated[str, Query(max_length=200)] = "",
) -> dict[str, Any]:
    logger.thread_safe_append_keys(runpod_endpoint=endpoint, attempt=attempt)
    with job_context(job_id, traceparent or None, "callback"):
        return _record(job_id, body, token, endpoint, attempt, member)


def _record(job_id: str, body: dict[str, Any], token: str, endpoint: str, attempt: int, member: str) -> dict[str, Any]:
    if member:  # a council member's answer: it resumes a workflow task, the job's status is the workflow's
        taken = container().callbacks.record_member(job_id, member, endpoint, token, body)
        return {"id": job_id, "member": member, "recorded": taken}
    finished = container().callbacks.record(job_id, attempt, endpoint, token, body)
    status = finished.status if finished else JobStatus(container().job_store.get(job_id).status)
    return {"id": job_id, "status": status.value, "recorded": finished is not None}
