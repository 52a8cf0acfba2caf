"""The HTTP API v1 (Powertools APIGatewayHttpResolver): validation, OpenAPI, errors in one format."""

import threading
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Header, Query

from stillhouse.auth import Principal, require_admin
from stillhouse.container import container
from stillhouse.delivery.webhooks import public_view
from stillhouse.http import (
    audit_api,
    batches_api,
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
# Who is calling, for the request's access line: the resolver forgets its context before it returns.
# Per thread: the embedded API serves requests concurrently in one process.
_caller = threading.local()


def authenticate(resolver) -> None:
    """Every /v1 route needs an API key, checked before the request is validated (401 before 422)."""
    if resolver.current_event.path not in PUBLIC_PATHS:
        who = container().api_keys.authenticate(resolver.current_event.headers.get("authorization"))
        resolver.append_context(principal=who)
        _caller.who = who


def serve(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Answer one API Gateway (HTTP API v2) event, and log its access line: API Gateway's own access log
    (template.yaml) cannot name the caller's key, which only this function knows; the two join on
    `request_id`. The line carries the key's id and tenant, never the key."""
    _caller.who = None
    answer = app.resolve(event, context)
    who: Principal | None = _caller.who
    _caller.who = None
    request = event.get("requestContext") or {}
    logger.info("access", extra={"access": {
        "request_id": request.get("requestId"),
        "method": (request.get("http") or {}).get("method"),
        "path": event.get("rawPath"),
        "status": answer.get("statusCode"),
        "tenant_id": who.tenant_id if who else None,
        "key_id": who.key_id if who else None,
        "admin": who.admin if who else None,
    }})
    return answer


app = new_resolver(gates=[authenticate])
app.include_router(job_trace.router)
app.include_router(webhook_secrets.router)
app.include_router(tenants.router)
app.include_router(config_api.router)
app.include_router(dashboard.router)
app.include_router(stats_api.router)
app.include_router(openai_api.router)
app.include_router(audit_api.router)
app.include_router(batches_api.router)


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
    job = container().job_service.get(principal(), job_id)
    # Once the job is read: a line naming a job names its trace too (the access line comes after).
    logger.thread_safe_append_keys(job_id=job_id, trace_id=job.trace_id)
    return public_view(job, container().spill)


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
    job = container().job_service.cancel(principal(), job_id)
    logger.thread_safe_append_keys(job_id=job_id, trace_id=job.trace_id)
    return JobAccepted(id=job.id, status=job.status)


@app.get("/v1/jobs/<job_id>/stream")
def stream_job(job_id: str) -> StreamPage:
    """The chunks a streaming job produced since the last call (RunPod-style polling; see streams.py)."""
    # Each poll asks RunPod with our key: counted per tenant here, at the route (the OpenAI streaming front
    # reads its own job's stream server-side and is not held to the caller's poll rate).
    container().quotas.poll(principal().tenant_id)
    reader = StreamReader(container().job_store, container().registry, container().runpod.client_for)
    page = reader.read(principal(), job_id)
    logger.thread_safe_append_keys(job_id=job_id, trace_id=page.trace_id)
    return page


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
    who = principal()
    require_admin(who)
    registry = container().registry
    try:
        before: EndpointSpec | None = registry.get(name, force_fetch=True)
    except EndpointNotFound:
        before = None
    try:
        spec = registry.update(name, **body)
    except EndpointNotFound:
        spec = registry.put({**body, "name": name})
    container().audit.record(who, "endpoint.put", name, before=before, after=spec)
    return spec.model_dump(mode="json")


__all__ = ["app", "logger", "serve", "EndpointSpec"]
