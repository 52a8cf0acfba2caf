"""Where RunPod posts an attempt's result. RunPod's webhooks are unsigned, so the URL carries a token
(an HMAC of job, attempt, endpoint and council member) that only we can mint."""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlencode

from stillhouse.telemetry import tracing


class _Job(Protocol):
    id: str
    trace_id: str | None


class _Endpoint(Protocol):
    name: str


def callback_token(secret: str, job_id: str, attempt: int, endpoint: str, member: str = "") -> str:
    message = f"{job_id}:{attempt}:{endpoint}:{member}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()[:40]


def verify_callback_token(secret: str, token: str, job_id: str, attempt: int, endpoint: str, member: str = "") -> bool:
    return hmac.compare_digest(callback_token(secret, job_id, attempt, endpoint, member), token or "")


class CallbackUrls:
    def __init__(self, secret: Callable[[], str], base_url: Callable[[], str]) -> None:
        self._secret = secret  # read on use: a rotated secret needs no restart
        self._base_url = base_url

    def for_attempt(self, job: _Job, attempt: int, endpoint: _Endpoint, member: str = "") -> str:
        token = callback_token(self._secret(), job.id, attempt, endpoint.name, member)
        params: dict[str, str | int] = {"attempt": attempt, "endpoint": endpoint.name, "token": token}
        if member:
            params["member"] = member
        traceparent = tracing.hop(job.trace_id)
        if traceparent:  # not signed: it only correlates the callback's log lines with the job's trace
            params[tracing.HEADER] = traceparent
        return f"{self._base_url()}/callbacks/runpod/{job.id}?{urlencode(params)}"

    def verify(self, token: str, job_id: str, attempt: int, endpoint: str, member: str = "") -> bool:
        return verify_callback_token(self._secret(), token, job_id, attempt, endpoint, member)
