"""GET /v1/stats (admin): the operators' picture over a recent window (jobs/stats.py), for the dashboard."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from stillhouse.auth import require_admin
from stillhouse.container import container

router = Router()


@router.get("/v1/stats")
def stats(
    window_s: Annotated[int, Query(ge=60, le=7 * 24 * 3600)] = 3600,
    buckets: Annotated[int, Query(ge=1, le=120)] = 30,
) -> dict[str, Any]:
    """Queue depth per priority, jobs by status, throughput and latency percentiles over time, recent
    failures and jobs, estimated cost per 1M jobs. Every tenant's jobs: admin keys only."""
    require_admin(router.context["principal"])
    return container().job_stats.snapshot(datetime.now(UTC), window_s=window_s, buckets=buckets)
