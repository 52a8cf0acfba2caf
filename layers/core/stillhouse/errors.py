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
