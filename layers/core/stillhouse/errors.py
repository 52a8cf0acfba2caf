"""Domain exceptions. The HTTP layer maps them to status codes by type, in one place (api.py)."""
from __future__ import annotations


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


class Unauthorized(StillhouseError):
    code = "unauthorized"


class Forbidden(StillhouseError):
    code = "forbidden"


class NotFound(StillhouseError):
    code = "not_found"


class JobNotFound(NotFound):
    pass


class Conflict(StillhouseError):
    code = "conflict"


class TransitionRefused(Conflict):
    """A conditional write refused a status change (e.g. out of a terminal status)."""

    code = "transition_refused"


class ServiceUnavailable(StillhouseError):
    code = "unavailable"


# --- errors raised by workflow tasks: their class names are the Step Functions error names ---------


class WorkflowTaskError(StillhouseError):
    code = "workflow_task_error"


class CapacityError(WorkflowTaskError):
    """Every endpoint is throttling: back off longer (statemachines Retry)."""


class TransientError(WorkflowTaskError):
    """5xx, timeouts, resets: retry with backoff, fail over."""


class WorkerLostError(WorkflowTaskError):
    """The RunPod job vanished or timed out: submit again, elsewhere."""


class NoEndpointAvailable(WorkflowTaskError):
    """No endpoint serves the model right now (all open or full): wait, don't drop the job."""


class TerminalError(WorkflowTaskError):
    """Not worth retrying: bad input, a non-retryable handler error, attempts exhausted."""


class JobFinished(WorkflowTaskError):
    """The job is already terminal (e.g. cancelled): the workflow just ends."""
