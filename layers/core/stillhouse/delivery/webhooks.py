"""A finished job pushed to the caller's webhook, signed with its tenant's secret (Standard Webhooks
headers, `delivery/signing.py`), durably.

The function that finishes a job only queues the notice (`CallerNotifier`): a slow or dead caller
endpoint must not hold the RunPod callback, the sweeper or the API. The notice carries what a try
needs (`Notice`: the URL, the tenant, the trace and the exact body), so the delivery function
(`WebhookDeliverer`) posts it without reading the job, one try per queue delivery, and on failure
makes the message visible again after the next delay of a Standard Webhooks-like schedule (seconds,
then minutes, then hours). Every try is kept on the job (`deliveries`); after the last one the message
goes to the dead-letter queue, where the sweeper's redrive can send it again.
"""
from __future__ import annotations

import asyncio
import contextvars
import http.client
import json
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

import requests
import urllib3
from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict, Field

from stillhouse.crash_points import crash_point
from stillhouse.delivery.destinations import Deadline, UnsafeWebhook, WebhookGuard, host_header, pinned_connection
from stillhouse.delivery.signing import webhook_headers
from stillhouse.errors import JobNotFound
from stillhouse.jobs.model import Job
from stillhouse.jobs.queue import settle_dead_letters, trace_attributes
from stillhouse.telemetry import tracing
from stillhouse.telemetry.metrics import metrics

logger = Logger(service="stillhouse", child=True)
#: Delays before the 2nd, 3rd, ... try: Standard Webhooks' schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h).
STANDARD_SCHEDULE_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
#: A notice whose message would be larger carries only the job id: SQS takes 256 KiB (attributes included),
#: and this leaves a clear margin.
NOTICE_MAX_BYTES = 200_000


def webhook_body(job: Job) -> bytes:
    return json.dumps(
        {"id": job.id, "status": job.status.value, "output": job.output, "output_url": job.output_url,
         "error": job.error,
         "endpoint": job.endpoint, "attempts": job.attempts},
        separators=(",", ":"),
    ).encode()


class OutputLinks(Protocol):
    """Presigned links to outputs kept outside the job item (stillhouse.outputs.spill.ResultStore)."""

    def url(self, job_id: str, ref: dict[str, Any] | None) -> str | None: ...


def public_view(job: Job, links: OutputLinks) -> Job:
    """The job as callers see it: a result kept in S3 is given as a presigned URL."""
    url = links.url(job.id, job.output_ref)
    return job.model_copy(update={"output": None, "output_url": url}) if url else job


class Notice(BaseModel):
    """A message of the delivery queue. A full notice carries what a try posts, the same bytes on every
    try. One with only the job id (sent before notices carried more, or for a body too big for a
    message, or for an output kept in S3, whose presigned link would expire before the later tries)
    has the deliverer read the job and build the body at each try."""

    model_config = ConfigDict(frozen=True)

    job_id: str = Field(min_length=1)
    webhook: str | None = None
    tenant_id: str | None = None
    trace_id: str | None = None
    body: str | None = None  # webhook_body's JSON, as posted

    @classmethod
    def of(cls, job: Job, body: bytes) -> Notice:
        return cls(job_id=job.id, webhook=job.webhook, tenant_id=job.tenant_id, trace_id=job.trace_id,
                   body=body.decode())

    @property
    def full(self) -> bool:
        return bool(self.webhook and self.tenant_id) and self.body is not None

    def message(self) -> str:
        return self.model_dump_json(exclude_none=True)


def read_notice(body: str) -> Notice:
    """A delivery queue message; one that is not a notice raises ValueError (poison: it ends in the DLQ)."""
    return Notice.model_validate_json(body)


class DeliveryQueue:
    """The SQS queue of webhook notices (`Notice`)."""

    def __init__(self, sqs: Any, url: str, dlq_url: str = "") -> None:
        self._sqs = sqs
        self._url = url
        self._dlq_url = dlq_url

    def send(self, notice: Notice) -> None:
        self._sqs.send_message(QueueUrl=self._url, MessageBody=notice.message(),
                               **trace_attributes(tracing.hop(notice.trace_id)))

    def retry_after(self, receipt_handle: str, delay_s: float) -> None:
        """The message comes back after `delay_s` (SQS allows up to 12 h)."""
        self._sqs.change_message_visibility(QueueUrl=self._url, ReceiptHandle=receipt_handle,
                                            VisibilityTimeout=int(min(max(delay_s, 0), 43_200)))

    def redrive_dlq(self) -> int:
        """Every stopped notice gets a fresh round of tries (after the caller fixed their endpoint)."""
        if not self._dlq_url:
            return 0
        return sum(settle_dead_letters(self._sqs, self._dlq_url, self._url, lambda job_id: True, 1000).values())


class CallerNotifier:
    """Queues a finished job's notice for its caller's webhook (no network call to the caller here)."""

    def __init__(self, queue: DeliveryQueue, links: OutputLinks) -> None:
        self._queue = queue
        self._links = links

    def notice(self, job: Job) -> Notice:
        """The notice of a finished job: in full, or its id only when the body is made at each try."""
        view = public_view(job, self._links)
        if view.output_url:  # a presigned link expires (in an hour): a later try needs a fresh one
            return Notice(job_id=job.id, trace_id=job.trace_id)
        notice = Notice.of(job, webhook_body(view))
        if len(notice.message().encode()) > NOTICE_MAX_BYTES:
            return Notice(job_id=job.id, trace_id=job.trace_id)
        return notice

    def __call__(self, job: Job) -> bool:
        if not job.webhook:
            return False
        try:
            self._queue.send(self.notice(job))
        except Exception:  # noqa: BLE001 - the job has ended already: failing its finisher now helps nobody
            logger.exception("could not queue the caller's webhook notice", extra={"job_id": job.id})
            return False
        return True


class Deliveries(Protocol):
    """Where a job's delivery tries are kept (stillhouse.jobs.store.JobStore)."""

    def get(self, job_id: str) -> Job: ...

    def record_delivery(self, job_id: str, entry: dict[str, Any]) -> bool: ...


class DeliveryFailed(Exception):
    """This try failed; the queue brings the notice back later (or to its dead-letter queue)."""


Post = Callable[[str, bytes, dict[str, str], float], int]


class GuardedPost:
    """One POST to a checked destination (delivery/destinations.py): to the address that was checked,
    never following a redirect (a webhook URL is where the caller said, not where it points us).

    `timeout_s` is the try's deadline, from connecting to the answer's status: a receiver that drips its
    answer is cut off then, not after each slow read. Only the answer's status and headers are read (a
    few KB at most), never its body, so a receiver that sends gigabytes costs us nothing either."""

    def __init__(self, guard: WebhookGuard) -> None:
        self._guard = guard

    def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        dest = self._guard.check(url)  # again at each try: what a name resolves to can change
        with Deadline(timeout_s) as deadline:
            conn = pinned_connection(dest, deadline)
            try:
                conn.request("POST", dest.target, body=body, headers={**headers, "Host": host_header(dest)},
                             preload_content=False)
                status = conn.getresponse().status
            except (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError) as err:
                if deadline.expired:
                    raise DeliveryFailed(f"no answer within the try's deadline of {timeout_s:g} s") from err
                raise DeliveryFailed(f"{type(err).__name__}: {err}") from err
            finally:
                conn.close()
        if not 200 <= status < 300:
            raise DeliveryFailed(f"HTTP {status}")
        return status


class WebhookDeliverer:
    def __init__(self, store: Deliveries, links: OutputLinks, secrets_for: Callable[[str], Sequence[str]],
                 queue: DeliveryQueue, *,
                 schedule_s: Sequence[float] = STANDARD_SCHEDULE_S, timeout_s: float = 5.0,
                 send: Post | None = None, rng: random.Random | None = None) -> None:
        self._store = store
        self._links = links
        self._secrets_for = secrets_for  # tenant id -> its webhook secrets (WebhookSecretStore.signing_secrets)
        self._queue = queue
        self.schedule_s = tuple(schedule_s)
        self._timeout_s = timeout_s
        self._post = send or GuardedPost(WebhookGuard())
        self._rng = rng or random.Random()

    @property
    def max_tries(self) -> int:
        return len(self.schedule_s) + 1

    def deliver(self, notice: Notice, receive_count: int, receipt_handle: str) -> None:
        """Try the notice once (its `receive_count`-th try). Raises DeliveryFailed when it did not go
        through: the message then comes back after the schedule's next delay. Safe to call from several
        threads at once (a batch's notices are tried concurrently)."""
        job_id = notice.job_id
        if not notice.full:
            try:
                job = self._store.get(job_id)
            except JobNotFound:
                return  # gone (expired): nothing to build the notice from
            if not job.webhook:
                return
            notice = Notice.of(job, webhook_body(public_view(job, self._links)))
        url, tenant_id, body = str(notice.webhook), str(notice.tenant_id), str(notice.body).encode()
        entry: dict[str, Any] = {"at": _now(), "try": receive_count}
        secrets = self._secrets_for(tenant_id)
        if not secrets:  # never sent unsigned; the tenant gets one with POST /v1/tenants/{id}/webhook-secret
            entry["error"] = "the tenant has no webhook secret to sign with"
        else:
            # The id is the notice's, the same on every try: callers drop a duplicate by it.
            headers = {"Content-Type": "application/json", **webhook_headers(secrets, f"msg_{job_id}", body)}
            if notice.trace_id:  # the caller's own tracing sees where its job went
                headers[tracing.HEADER] = tracing.hop(notice.trace_id)
            crash_point("delivery.before_post", job_id)
            try:
                entry["status_code"] = self._post(url, body, headers, self._timeout_s)
            except UnsafeWebhook as err:
                entry["error"] = f"refused: {err.message}"[:200]
            except (requests.RequestException, DeliveryFailed) as err:
                entry["error"] = str(err)[:200]
        crash_point("delivery.after_post", job_id)
        last = receive_count >= self.max_tries
        metrics.webhook_tried("error" not in entry, last=last)
        if "error" not in entry:
            self._store.record_delivery(job_id, entry)
            return
        entry["next"] = "stopped: in the dead-letter queue" if last else "retry"
        self._store.record_delivery(job_id, entry)
        logger.warning("caller webhook failed", extra={"job_id": job_id, "try": receive_count, "error": entry["error"]})
        if not last:
            delay = self.schedule_s[receive_count - 1]
            self._queue.retry_after(receipt_handle, delay * self._rng.uniform(0.8, 1.2))  # jitter spreads a herd
        raise DeliveryFailed(f"webhook of job {job_id}, try {receive_count}: {entry['error']}")


#: A thread for every notice of a batch (the delivery function's BatchSize), so a batch of slow receivers
#: lasts about one try's deadline. asyncio's default executor has min(32, CPUs + 4) threads: on a 2-vCPU
#: function, a batch of ten would take two deadlines.
TRIES_AT_ONCE = 10
_tries = ThreadPoolExecutor(max_workers=TRIES_AT_ONCE, thread_name_prefix="webhook-try")


async def try_notice(deliverer: WebhookDeliverer, notice: Notice, receive_count: int, receipt_handle: str) -> None:
    """`deliverer.deliver` in a thread of the batch's own, in the caller's context (the job's logs, trace)."""
    context = contextvars.copy_context()
    await asyncio.get_running_loop().run_in_executor(_tries, context.run, deliverer.deliver, notice, receive_count,
                                                     receipt_handle)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
