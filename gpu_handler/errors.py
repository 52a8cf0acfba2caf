"""Job errors and their wire format.

RunPod's job `error` field is a string. When a handler raises, the SDK itself fills it with a JSON string
`{"error_type", "error_message", "error_traceback", ...}`; we return errors in the same shape (plus
`retryable` and, for bad input, `field`) so the router parses one format whatever went wrong:

    {"error": "{\"error_type\": \"ValidationError\", \"error_message\": \"...\", \"retryable\": false,
                \"field\": \"max_new_tokens\"}"}
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError


class JobError(Exception):
    """A failure reported to the caller as a job error (never a worker crash)."""

    error_type = "JobError"
    retryable = False

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "error_type": self.error_type,
            "error_message": self.message,
            "retryable": self.retryable,
        }
        if self.field is not None:
            body["field"] = self.field
        return body


class InvalidInput(JobError):
    error_type = "ValidationError"

    @classmethod
    def from_pydantic(cls, exc: ValidationError) -> InvalidInput:
        problems = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"]) or "input"
            problems.append(f"{loc}: {err['msg']}")
        first = exc.errors(include_url=False)[0]["loc"] if exc.errors() else ()
        field = ".".join(str(p) for p in first) or None
        return cls("invalid input: " + "; ".join(problems), field=field)


class OutOfMemory(JobError):
    """The accelerator ran out of memory. Another attempt (maybe on another worker) can succeed."""

    error_type = "OutOfMemory"
    retryable = True


class ModelLoadError(JobError):
    """The model could not be loaded; this worker is unhealthy and asks RunPod to replace it."""

    error_type = "ModelLoadError"
    retryable = True


class ModelNotServed(JobError):
    """The job names a model this worker was not deployed with: the router sent it to the wrong
    endpoint. Not retryable here: answering with another model would be wrong, and the same job sent
    again goes where the registry says, so the router must fail it (and the registry be fixed)."""

    error_type = "ModelNotServed"


class InternalError(JobError):
    error_type = "InternalError"


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocator failures, whatever torch version raised them."""
    name = type(exc).__name__
    if name == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError / torch.OutOfMemoryError
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()
    )


def classify(exc: BaseException) -> JobError:
    """Map any exception raised while running a job to the JobError reported for it."""
    if isinstance(exc, JobError):
        return exc
    if isinstance(exc, ValidationError):
        return InvalidInput.from_pydantic(exc)
    if is_out_of_memory(exc):
        return OutOfMemory(f"out of memory: {exc}")
    return InternalError(f"{type(exc).__name__}: {exc}")


def error_result(err: JobError) -> dict[str, Any]:
    """The handler's return value for a failed job."""
    result: dict[str, Any] = {"error": json.dumps(err.payload())}
    if isinstance(err, ModelLoadError):
        # The SDK turns `refresh_worker` into `stopPod`: RunPod replaces this worker after the job.
        result["refresh_worker"] = True
    return result
