"""The HTTP API v1 (Powertools APIGatewayHttpResolver): validation, OpenAPI, errors in one format."""

from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Header, Query

from stillhouse.auth import Principal, require_admin
from stillhouse.container import container
from stillhouse.delivery.webhooks import public_view
from stillhouse.http import (
    config_api,
    dashboard,
    job_trace,
    openai_api,
    openapi_doc,
    stats_api,
    tenants,
    webhook_secrets,
)
from stillhouse.http.resolver import new_resolver
from stillhouse.http.submission import submit_once
from stillhouse.jobs.model import (
    Job,
    JobAccepted,
    JobPage,
    JobRequest,
    JobStatus,
)
from stillhouse.jobs.streams import StreamPage, StreamReader
from stillhouse.routing.registry import EndpointNotFound, EndpointSpec
from stillhouse.routing.router import EndpointView
from stillhouse.telemetry import tracing

logger = Logger(service="stillhouse")
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", dashboard.PATH})


def authenticate(resolver) -> None:
    """Every /v1 route needs an API key, checked before the request is validated (401 before 422)."""
    if resolver.current_event.path not in PUBLIC_PATHS:
        who = container().api_keys.authenticate(resolver.current_event.headers.get("authorization"))
        resolver.append_context(principal=who)


app = new_resolver(gates=[authenticate])
app.include_router(job_trace.router)
app.include_router(webhook_secrets.router)
app.include_router(tenants.router)
app.include_router(config_api.router)
app.include_router(dashboard.router)
app.include_router(stats_api.router)
app.include_router(openai_api.router)


def principal() -> Principal:
    return app.context["principal"]


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/openapi.json", include_in_schema=False)
def openapi() -> dict[str, Any]:
    return openapi_doc.document(app, public_paths=PUBLIC_PATHS)


@app.post("/v1/jobs", responses={202: {"description": "accepted"}})
def submit_job(
    request: JobRequest,
    idempotency_key: Annotated[str | None, Header(alias="idempotency-key", max_length=200)] = None,
    traceparent: Annotated[str | None, Header(alias="traceparent", max_length=200)] = None,
) -> JobAccepted:
    """A job joins the caller's W3C trace (`traceparent`), or starts one; the answer's `traceparent`
    header names it."""
    who = principal()
    if idempotency_key:
        accepted = submit_once(who, idempotency_key, request, app.lambda_context, traceparent)
        # Per thread: the embedded API serves requests concurrently in one process.
        logger.thread_safe_append_keys(job_id=accepted["id"], trace_id=accepted.get("trace_id"))
        return _accepted(JobAccepted(id=accepted["id"], status=accepted["status"]), accepted.get("trace_id"))
    job = container().job_service.submit(who, request, traceparent)
    logger.thread_safe_append_keys(job_id=job.id, trace_id=job.trace_id)
    logger.info("job accepted", extra={"task": job.task.value, "status": job.status.value})
    return _accepted(JobAccepted(id=job.id, status=job.status), job.trace_id)


def _accepted(body: JobAccepted, trace_id: str | None) -> Response:
    traceparent = tracing.hop(trace_id)
    return Response(status_code=202, content_type="application/json", body=body,
                    headers={tracing.HEADER: traceparent} if traceparent else None)


@app.get("/v1/jobs/<job_id>")
def get_job(job_id: str) -> Job:
    logger.thread_safe_append_keys(job_id=job_id)
    return public_view(container().job_service.get(principal(), job_id), container().spill)


@app.get("/v1/jobs")
def list_jobs(
    status: Annotated[JobStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> JobPage:
    jobs, next_cursor = container().job_service.list(principal(), status=status, limit=limit, cursor=cursor)
    return JobPage(items=jobs, cursor=next_cursor)


@app.post("/v1/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> JobAccepted:
    logger.thread_safe_append_keys(job_id=job_id)
    job = container().job_service.cancel(principal(), job_id)
    return JobAccepted(id=job.id, status=job.status)


@app.get("/v1/jobs/<job_id>/stream")
def stream_job(job_id: str) -> StreamPage:
    """The chunks a streaming job produced since the last call (RunPod-style polling; see streams.py)."""
    logger.thread_safe_append_keys(job_id=job_id)
    # Each poll asks RunPod with our key: counted per tenant here, at the route (the OpenAI streaming front
    # reads its own job's stream server-side and is not held to the caller's poll rate).
    container().quotas.poll(principal().tenant_id)
    reader = StreamReader(container().job_store, container().registry, container().runpod.client_for)
    return reader.read(principal(), job_id)


def _endpoint_row(view: EndpointView) -> dict[str, Any]:
    health = view.health
    return {
        **view.spec.model_dump(mode="json"),
        "breaker": health.state.name,
        "accepting": health.accepting,
        "opened_reason": health.opened_reason,
        "ema_latency_ms": health.ema_latency_ms,
        "baseline_latency_ms": health.baseline_latency_ms,
        "success_rate": health.success_rate,
        "failure_rate": health.failure_rate,
        "samples": health.samples,
        "in_flight": health.in_flight,
        "last_error": health.last_error,
        "last_error_class": health.last_error_class,
    }


def _model_rows(views: list[EndpointView]) -> list[dict[str, Any]]:
    """What a tenant may know of the fleet: the models it can ask for ("*": any), and whether an endpoint
    serving each takes jobs now. No endpoint ids, URLs, secret names or anyone's error text."""
    available: dict[str, bool] = {}
    for view in views:
        if view.spec.enabled:
            for model in view.spec.models:
                available[model] = available.get(model, False) or view.health.accepting
    return [{"model": model, "available": ok} for model, ok in sorted(available.items())]


@app.get("/v1/endpoints")
def list_endpoints() -> list[dict[str, Any]]:
    """Admins see the fleet (each endpoint's configuration and health); tenants see the models available."""
    views = container().router.describe()
    if principal().admin:
        return [_endpoint_row(view) for view in views]
    return _model_rows(views)


@app.put("/v1/endpoints/<name>")
def put_endpoint(name: str, body: dict[str, Any]) -> dict[str, Any]:
    """Add an endpoint (full spec) or change some fields of an existing one (e.g. weight, enabled)."""
    require_admin(principal())
    registry = container().registry
    try:
        spec = registry.update(name, **body)
    except EndpointNotFound:
        spec = registry.put({**body, "name": name})
    return spec.model_dump(mode="json")


__all__ = ["app", "logger", "EndpointSpec"]
