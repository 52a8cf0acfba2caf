"""Push a finished job to the caller's webhook, signed (header X-Stillhouse-Signature)."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

import requests
from aws_lambda_powertools import Logger
from tenacity import retry, stop_after_attempt, wait_exponential_jitter

from stillhouse.delivery.signing import webhook_signature
from stillhouse.jobs.model import Job

logger = Logger(service="stillhouse", child=True)
SIGNATURE_HEADER = "X-Stillhouse-Signature"


def webhook_body(job: Job) -> bytes:
    return json.dumps(
        {"id": job.id, "status": job.status.value, "output": job.output, "output_url": job.output_url,
         "error": job.error,
         "endpoint": job.endpoint, "attempts": job.attempts},
        separators=(",", ":"),
    ).encode()


@retry(stop=stop_after_attempt(3), wait=wait_exponential_jitter(multiplier=0.2, max=2), reraise=True)
def _post(url: str, body: bytes, signature: str) -> None:
    response = requests.post(
        url, data=body, timeout=5,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature},
    )
    response.raise_for_status()


def notify(job: Job, secret: str) -> bool:
    """Deliver once with retries; a client that stays down does not fail the job (it is logged)."""
    if not job.webhook:
        return False
    body = webhook_body(job)
    try:
        _post(job.webhook, body, webhook_signature(secret, body))
    except requests.RequestException as err:
        logger.warning("client webhook failed", extra={"job_id": job.id, "error": str(err)})
        return False
    return True


class OutputLinks(Protocol):
    """Presigned links to outputs kept outside the job item (stillhouse.outputs.spill.ResultStore)."""

    def url(self, output: Any) -> str | None: ...


def public_view(job: Job, links: OutputLinks) -> Job:
    """The job as callers see it: a result kept in S3 is given as a presigned URL."""
    url = links.url(job.output)
    return job.model_copy(update={"output": None, "output_url": url}) if url else job


class CallerNotifier:
    """Pushes a finished job, as its caller sees it, to the caller's webhook."""

    def __init__(self, links: OutputLinks, secret: Callable[[], str]) -> None:
        self._links = links
        self._secret = secret

    def __call__(self, job: Job) -> bool:
        return notify(public_view(job, self._links), self._secret())
