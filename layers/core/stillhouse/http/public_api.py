"""The HTTP API v1 (Powertools APIGatewayHttpResolver): validation, OpenAPI, errors in one format."""

import time
from functools import lru_cache
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Header, Query
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)

from stillhouse import errors
from stillhouse.auth import Principal, require_admin
from stillhouse.container import container
from stillhouse.delivery.webhooks import public_view
from stillhouse.http import config_api, dashboard, job_trace, openapi_doc, stats_api, tenants, webhook_secrets
from stillhouse.http.resolver import new_resolver
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


def principal() -> Principal:
    return app.context["principal"]


def _idempotent_submit():
    return _submit_keeping(container().idempotency)


@lru_cache(maxsize=1)  # keyed by the persistence layer: a new container (reset) builds a new one
def _submit_keeping(persistence: DynamoDBPersistenceLayer):
    config = IdempotencyConfig(
        event_key_jmespath="[tenant_id, key]",
        payload_validation_jmespath="request",
        expires_after_seconds=24 * 3600,
    )

    @idempotent_function(data_keyword_argument="data", persistence_store=persistence, config=config)
    def submit(*, data: dict[str, Any]) -> dict[str, Any]:
        who = Principal(tenant_id=data["tenant_id"])
        job = container().job_service.submit(who, JobRequest.model_validate(data["request"]),
                                             data.get("traceparent"))
        return {"id": job.id, "status": job.status.value, "trace_id": job.trace_id}

    return submit, config


#: How long a request waits for a twin with the same Idempotency-Key that another instance is handling
#: (a submit is a few writes), before it answers 409 with Retry-After.
IN_PROGRESS_WAITS_S = (0.05, 0.1, 0.2, 0.4, 0.8)


def submit_once(who: Principal, key: str, request: JobRequest, lambda_context: Any = None,
                traceparent: str | None = None) -> dict[str, Any]:
    """Submit under an Idempotency-Key: the first request creates the job, every twin gets that job."""
    submit, config = _idempotent_submit()
    if lambda_context is not None:
        config.register_lambda_context(lambda_context)
    data = {"tenant_id": who.tenant_id, "key": key, "request": request.model_dump(mode="json"),
            "traceparent": traceparent}  # neither part of the key nor of the payload a twin must match
    for wait_s in IN_PROGRESS_WAITS_S:
        try:
            return _submit_checked(submit, data)
        except IdempotencyAlreadyInProgressError:
            time.sleep(wait_s)  # the twin usually finishes within these waits: answer with its job
    try:
        return _submit_checked(submit, data)
    except IdempotencyAlreadyInProgressError as err:
        raise errors.RetryLater("a request with this Idempotency-Key is still being handled; ask again to get "
                                "its job", field="Idempotency-Key") from err


def _submit_checked(submit: Any, data: dict[str, Any]) -> dict[str, Any]:
    try:
        return submit(data=data)
    except IdempotencyValidationError as err:
        raise errors.Conflict("Idempotency-Key was used with a different request", field="Idempotency-Key") from err


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
