"""Domain exceptions and the classes of failure.

The HTTP layer maps exceptions to status codes by type, in one place (stillhouse.http.resolver); the
state machines match the workflow errors by class name, read from the one table at the end of this file.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorClass(StrEnum):
    """How a failed attempt is handled (see docs/errors.md)."""

    CAPACITY = "capacity"  # 429 / throttled: back off, same endpoint later, breaker untouched
    TRANSIENT = "transient"  # 5xx, timeouts, resets: retry, counts towards the breaker
    TERMINAL = "terminal"  # bad input, non-retryable handler error: fail now, breaker untouched
    WORKER_LOST = "worker_lost"  # job vanished, hung (TIMED_OUT) or its worker crashed: retry elsewhere

    @property
    def retryable(self) -> bool:
        return self is not ErrorClass.TERMINAL


class StillhouseError(Exception):
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRequest(StillhouseError):
    code = "invalid_request"


class Unprocessable(InvalidRequest):
    """Well-formed JSON whose values break a rule (422, like schema validation errors)."""

    code = "validation_error"


class PayloadTooLarge(StillhouseError):
    code = "payload_too_large"


class UnsupportedMediaType(StillhouseError):
    """A body declared as something other than JSON (415): this API reads JSON only."""

    code = "unsupported_media_type"


class Unauthorized(StillhouseError):
    code = "unauthorized"


class Forbidden(StillhouseError):
    code = "forbidden"


class NotFound(StillhouseError):
    code = "not_found"


class JobNotFound(NotFound):
    pass


class MethodNotAllowed(StillhouseError):
    """The route exists, but not for this method (405); `allow` lists the methods it has."""

    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: list[str]) -> None:
        super().__init__(message)
        self.allow = allow


class Conflict(StillhouseError):
    code = "conflict"


class RetryLater(Conflict):
    """Not now: the same request is still being handled elsewhere (409 with Retry-After)."""

    code = "in_progress"

    def __init__(self, message: str, *, field: str | None = None, retry_after_s: int = 1) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = retry_after_s


class TransitionRefused(Conflict):
    """A conditional write refused a status change (e.g. out of a terminal status). `current`: the job
    as it was when refused, where the write asked for it (JobStore.transition's `refused_job`)."""

    code = "transition_refused"
    current: Any = None


class QuotaExceeded(StillhouseError):
    """A tenant is over one of its limits for now (429 with Retry-After); `field` names the limit."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, limit: str, retry_after_s: int = 1) -> None:
        super().__init__(message, field=limit)
        self.retry_after_s = retry_after_s


class ServiceUnavailable(StillhouseError):
    code = "unavailable"


class AwsUnavailable(ServiceUnavailable):
    """AWS throttled us or was unavailable (503 with Retry-After): the request did nothing that stays, and
    the same request may be sent again. Made from an AWS error by its code only (stillhouse.aws.unavailable)."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class GatewayTimeout(StillhouseError):
    """A call that waits for its job gave up waiting (504); the job goes on. `job_id` names it."""

    code = "timeout"

    def __init__(self, message: str, *, job_id: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.job_id = job_id


# --- errors raised by workflow tasks: their class names are the Step Functions error names ---------


class WorkflowTaskError(StillhouseError):
    code = "workflow_task_error"


class CapacityError(WorkflowTaskError):
    """Every endpoint is throttling: back off longer (statemachines Retry)."""


class TransientError(WorkflowTaskError):
    """5xx, timeouts, resets: retry with backoff, fail over."""


class WorkerLostError(WorkflowTaskError):
    """The RunPod job vanished or timed out: submit again, elsewhere."""


class NotStarted(WorkflowTaskError):
    """RunPod refused the /run (5xx, a reset, a timeout with no RunPod id): no GPU ran, so no attempt is
    spent; retried with backoff until the job's deadline, not until a count runs out (statemachines Retry)."""


class NoEndpointAvailable(WorkflowTaskError):
    """No endpoint serves the model right now (all open or full): wait, don't drop the job."""


class TerminalError(WorkflowTaskError):
    """Not worth retrying: bad input, a non-retryable handler error, attempts exhausted."""


class JobFinished(WorkflowTaskError):
    """The job is already terminal (e.g. cancelled): the workflow just ends."""


# --- the one table: class of failure <-> the error a workflow task raises ---------------------------
#: What a workflow task raises for each class of failure (None: no endpoint could take the job at all).
#: The exception's class name is the Step Functions error name that statemachines/*.asl.json match.
WORKFLOW_ERRORS: dict[ErrorClass | None, type[WorkflowTaskError]] = {
    ErrorClass.CAPACITY: CapacityError,
    ErrorClass.TRANSIENT: TransientError,
    ErrorClass.WORKER_LOST: WorkerLostError,
    ErrorClass.TERMINAL: TerminalError,
    None: NoEndpointAvailable,
}
#: Every error name a task may raise to a state machine.
WORKFLOW_ERROR_NAMES = frozenset(cls.__name__ for cls in (*WORKFLOW_ERRORS.values(), JobFinished, NotStarted,
                                                             AwsUnavailable))


def workflow_error_name(error_class: ErrorClass | None) -> str:
    return WORKFLOW_ERRORS[error_class].__name__


def error_class_named(name: str) -> ErrorClass | None:
    """The class of failure a workflow error name stands for (None for unknown or no-endpoint names)."""
    return next((c for c, cls in WORKFLOW_ERRORS.items() if cls.__name__ == name), None)
