"""Plain HTTP client of RunPod's hosted API (api.runpod.ai/v2 in production, the stand-in locally).

Failures are raised as `RunPodError` carrying an `ErrorClass`, so callers decide by class, never by
message text. Reads (status, stream, health, cancel) are retried on transient errors with tenacity; /run is
retried only when the connection was never made, since a retried POST that did arrive would start a second
GPU job. Redirects are never followed: every request carries our API key, and a redirect would send it
wherever the answer points (a 3xx is a transient fault of the endpoint, as a 5xx is).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests
from pydantic import BaseModel, ValidationError
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from stillhouse.errors import ErrorClass, StillhouseError
from stillhouse.runpod.schemas import RunAccepted, RunPodJob, RunRequest
from stillhouse.telemetry import tracing


class RunPodError(StillhouseError):
    code = "runpod_error"

    def __init__(
        self,
        message: str,
        *,
        error_class: ErrorClass,
        status_code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.status_code = status_code
        self.retry_after_s = retry_after_s


def classify_status(status_code: int) -> ErrorClass:
    if status_code == 429:
        return ErrorClass.CAPACITY
    # 401/403: our API key for this endpoint is wrong, not the job's input. Failing over and counting
    # it towards the endpoint's breaker takes a misconfigured endpoint out of rotation instead of
    # failing every job routed to it.
    # 3xx: a redirect we do not follow (it would carry our key elsewhere); the endpoint's fault, as a 5xx.
    if status_code >= 500 or 300 <= status_code < 400 or status_code in (401, 403, 408):
        return ErrorClass.TRANSIENT
    if status_code == 404:
        return ErrorClass.WORKER_LOST
    return ErrorClass.TERMINAL


def _retry_after(response: requests.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, RunPodError) and exc.error_class is ErrorClass.TRANSIENT


def _never_connected(exc: BaseException) -> bool:
    return isinstance(exc, RunPodError) and isinstance(exc.__cause__, requests.exceptions.ConnectionError) and not isinstance(
        exc.__cause__, requests.exceptions.ReadTimeout
    )


_retry_reads = retry(
    retry=retry_if_exception(_transient),
    stop=stop_after_attempt(3),
    wait=wait_exponential_jitter(multiplier=0.1, max=1.0),
    reraise=True,
)
_retry_unsent = retry(
    retry=retry_if_exception(_never_connected),
    stop=stop_after_attempt(2),
    wait=wait_exponential_jitter(multiplier=0.1, max=0.5),
    reraise=True,
)


def _checked(schema: type[BaseModel], method: str, url: str, answer: Any) -> dict[str, Any]:
    """RunPod's answer if it has the shape we rely on; a malformed answer is a transient fault of theirs."""
    try:
        return schema.model_validate(answer).model_dump(exclude_unset=True)
    except ValidationError as err:
        raise RunPodError(f"{method} {url}: unexpected answer ({err.errors()[0]['msg']})",
                          error_class=ErrorClass.TRANSIENT) from err


#: The key of a RunPod job's input that carries our job id and trace; gpu_handler takes it out before the
#: task sees its input, and logs with it.
TRACE_INPUT_KEY = "_stillhouse"


def _traced(payload: dict[str, Any]) -> dict[str, Any]:
    ctx = tracing.current()
    if ctx is None:
        return payload
    return {**payload, TRACE_INPUT_KEY: {"job_id": ctx.job_id, tracing.HEADER: ctx.trace.child().traceparent}}


#: After a 401 the API key is read again (it may have been rotated), at most this often per client: a key
#: that is simply wrong must not turn every request into a read of the secret.
KEY_REFRESH_INTERVAL_S = 30.0
#: (refresh) -> the API key; refresh=True reads it again from where it is kept, past any cache.
KeySource = Callable[..., str]


class RunPodClient:
    def __init__(self, api_key: str | KeySource, *, timeout_s: float = 10.0, session: requests.Session | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._timeout = timeout_s
        self._session = session or requests.Session()
        self._key_source = api_key if callable(api_key) else None
        self._clock = clock
        self._refreshed_at = float("-inf")
        self._use_key(api_key() if callable(api_key) else api_key)

    def _use_key(self, api_key: str) -> None:
        self._api_key = api_key
        self._session.headers.update({"Authorization": f"Bearer {api_key}"})

    def _refreshed_key(self) -> bool:
        """After a 401: read the key again, once; True when it changed (a rotation), so the request is worth
        one more try. A 401 rejects the request before anything runs, so even /run may be repeated."""
        if self._key_source is None or self._clock() - self._refreshed_at < KEY_REFRESH_INTERVAL_S:
            return False
        self._refreshed_at = self._clock()
        fresh = self._key_source(refresh=True)
        if fresh == self._api_key:
            return False
        self._use_key(fresh)
        return True

    def _send(self, method: str, url: str, body: dict[str, Any] | None) -> requests.Response:
        try:
            # Never follow a redirect: the session's Authorization header would go to wherever it points.
            return self._session.request(method, url, json=body, timeout=self._timeout, allow_redirects=False)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
            raise RunPodError(f"{method} {url}: {err.__class__.__name__}", error_class=ErrorClass.TRANSIENT) from err

    def _call(self, method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self._send(method, url, body)
        if response.status_code == 401 and self._refreshed_key():
            response = self._send(method, url, body)
        if 300 <= response.status_code < 400:
            raise RunPodError(f"{method} {url}: HTTP {response.status_code}, a redirect (not followed)",
                              error_class=classify_status(response.status_code), status_code=response.status_code)
        if response.status_code >= 400:
            raise RunPodError(
                f"{method} {url}: HTTP {response.status_code} {response.text[:200]}",
                error_class=classify_status(response.status_code),
                status_code=response.status_code,
                retry_after_s=_retry_after(response),
            )
        try:
            return response.json()
        except ValueError as err:
            raise RunPodError(f"{method} {url}: body is not JSON", error_class=ErrorClass.TRANSIENT) from err

    @_retry_unsent
    def run(
        self,
        base_url: str,
        endpoint_id: str,
        payload: dict[str, Any],
        *,
        webhook: str | None = None,
        policy: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = RunRequest(input=_traced(payload), webhook=webhook, policy=policy or None).model_dump(exclude_none=True)
        url = f"{base_url}/{endpoint_id}/run"
        return _checked(RunAccepted, "POST", url, self._call("POST", url, body))

    @_retry_reads
    def status(self, base_url: str, endpoint_id: str, job_id: str) -> dict[str, Any]:
        url = f"{base_url}/{endpoint_id}/status/{job_id}"
        return _checked(RunPodJob, "GET", url, self._call("GET", url))

    @_retry_reads
    def stream(self, base_url: str, endpoint_id: str, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"{base_url}/{endpoint_id}/stream/{job_id}")

    @_retry_reads
    def cancel(self, base_url: str, endpoint_id: str, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"{base_url}/{endpoint_id}/cancel/{job_id}")

    @_retry_reads
    def health(self, base_url: str, endpoint_id: str) -> dict[str, Any]:
        return self._call("GET", f"{base_url}/{endpoint_id}/health")
