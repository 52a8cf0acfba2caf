"""GET /v1/jobs/{id}/trace: a job's stages as a timeline, with the W3C trace id every hop carried."""
from __future__ import annotations

from aws_lambda_powertools.event_handler.api_gateway import Router

from stillhouse.container import container
from stillhouse.telemetry.timeline import JobTrace, timeline

router = Router()


@router.get("/v1/jobs/<job_id>/trace")
def job_trace(job_id: str) -> JobTrace:
    job = container().job_service.get(router.context["principal"], job_id)  # another tenant's job: 404
    return timeline(job)
