"""Submitting a job, with or without an Idempotency-Key: what POST /v1/jobs and the OpenAI routes share."""
import threading
import time
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.logging import Logger
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)

from stillhouse import errors
from stillhouse.auth import Principal
from stillhouse.container import container
from stillhouse.jobs.model import JobRequest

logger = Logger(service="stillhouse", child=True)
#: The job this thread's keyed submission made, if it made one: Powertools may fail to record it as done
#: after it was made (its table throttled), and an accepted job must still be answered 202.
_made = threading.local()
#: Pauses between our own tries to record a made job under its key, when Powertools' one try failed.
SAVE_RETRY_WAITS_S = (0.05, 0.2, 0.5)


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
        _made.accepted = {"id": job.id, "status": job.status.value, "trace_id": job.trace_id}
        return _made.accepted

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
    _made.accepted = None
    try:
        return submit(data=data)
    except IdempotencyValidationError as err:
        raise errors.Conflict("Idempotency-Key was used with a different request", field="Idempotency-Key") from err
    except IdempotencyPersistenceLayerError:
        accepted = _made.accepted
        if accepted is None:
            raise  # nothing was made: its cause (AWS throttled: 503 + Retry-After) is the answer
        _record_made(data, accepted)
        return accepted  # made and accepted: 202, whether or not its key now says so
    finally:
        _made.accepted = None


def _record_made(data: dict[str, Any], accepted: dict[str, Any]) -> None:
    """Record under its key a job that was made, where Powertools could not. If every try fails, the key's
    record stays "in progress": a twin is told 409 + Retry-After until it expires (the Lambda's remaining
    time), then makes a job of its own (docs/errors.md)."""
    persistence = container().idempotency
    for wait_s in (*SAVE_RETRY_WAITS_S, None):
        try:
            persistence.save_success(data=data, result=accepted)
            return
        except Exception:  # noqa: BLE001 - the job is accepted whatever its key's record says
            if wait_s is None:
                logger.warning("could not record a made job under its Idempotency-Key",
                               extra={"job_id": accepted["id"]})
                return
            time.sleep(wait_s)


def submit(who: Principal, request: JobRequest, idempotency_key: str | None, traceparent: str | None,
           lambda_context: Any = None) -> dict[str, Any]:
    """`{"id", "status", "trace_id"}` of the job: a new one, or the twin's under the same Idempotency-Key."""
    if idempotency_key:
        return submit_once(who, idempotency_key, request, lambda_context, traceparent)
    job = container().job_service.submit(who, request, traceparent)
    return {"id": job.id, "status": job.status.value, "trace_id": job.trace_id}
