"""Job queue: one SQS queue per priority. A message carries the job id and what dispatch needs to claim
the job without reading it first (its attempts and task when sent): the claim is a conditional write,
so a message that is out of date (the job moved on, was cancelled) only costs the read it saved."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stillhouse.telemetry import tracing

if TYPE_CHECKING:  # annotations only: the functions that read a message do not load the job model
    from stillhouse.jobs.model import Priority


@dataclass(frozen=True)
class Queued:
    """A read job message. `attempts`/`task` are None in a message from before they were carried."""

    job_id: str
    attempts: int | None = None
    task: str | None = None


class JobQueue:
    def __init__(self, sqs: Any, urls: dict[Priority, str], dlqs: dict[Priority, str] | None = None) -> None:
        self._sqs = sqs
        self._urls = urls
        self._dlqs = dlqs or {}  # each priority's dead-letter queue

    def send(self, job_id: str, priority: Priority, *, attempts: int | None = None, task: str | None = None) -> None:
        self._sqs.send_message(QueueUrl=self._urls[priority], MessageBody=message_body(job_id, attempts, task),
                               **trace_attributes())

    def send_many(self, jobs: list[Any]) -> None:
        """Queue many new jobs (stillhouse.jobs.model.Job), ten to a SendMessageBatch call, each on its
        priority's queue. A message SQS did not take is sent again; one it still refuses raises."""
        bodies: dict[str, list[str]] = {}
        for job in jobs:
            bodies.setdefault(self._urls[job.priority], []).append(message_body(job.id, job.attempts, job.task.value))
        for url, messages in bodies.items():
            for start in range(0, len(messages), 10):  # SendMessageBatch's limit
                batch = [{"Id": str(i), "MessageBody": body, **trace_attributes()}
                         for i, body in enumerate(messages[start:start + 10])]
                for _ in range(3):
                    answer = self._sqs.send_message_batch(QueueUrl=url, Entries=batch)
                    failed = {f["Id"] for f in answer.get("Failed", [])}
                    batch = [entry for entry in batch if entry["Id"] in failed]
                    if not batch:
                        break
                else:
                    raise RuntimeError(f"SQS refused {len(batch)} messages of a batch")

    def defer(self, priority: Priority, receipt_handle: str, seconds: int) -> None:
        """Have a received message come back in `seconds` (not after the queue's whole visibility timeout)."""
        self._sqs.change_message_visibility(QueueUrl=self._urls[priority], ReceiptHandle=receipt_handle,
                                            VisibilityTimeout=seconds)

    def depths(self) -> dict[str, dict[str, int]]:
        """Per priority: messages waiting, being handled (received, not yet deleted) and dead-lettered.
        SQS's counts are approximate (eventually consistent, ~1 minute), which a dashboard can live with."""
        depths: dict[str, dict[str, int]] = {}
        for priority, url in self._urls.items():
            if not url:
                continue
            attrs = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
            dead = 0
            if self._dlqs.get(priority):
                dead = int(self._sqs.get_queue_attributes(QueueUrl=self._dlqs[priority], AttributeNames=[
                    "ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"])
            depths[priority.value] = {"waiting": int(attrs["ApproximateNumberOfMessages"]),
                                      "in_flight": int(attrs["ApproximateNumberOfMessagesNotVisible"]),
                                      "dead_letter": dead}
        return depths

    def redrive_dlqs(self) -> int:
        """Send everything the dead-letter queues hold back to their queues (send first, then delete: at least
        once); how many messages moved. By hand, after an operator fixed the cause."""
        return sum(self.settle_dlqs(lambda job_id: True, limit=1000).values())

    def settle_dlqs(self, back: Callable[[str | None], bool], limit: int = 100) -> Counter[str]:
        """Each dead-letter message goes `back` to its queue or is dropped, as `back(job id)` says (the job
        id is None for a message that cannot be read)."""
        counts: Counter[str] = Counter()
        for priority, dlq in self._dlqs.items():
            if dlq and self._urls.get(priority):
                counts += settle_dead_letters(self._sqs, dlq, self._urls[priority], back, limit)
        return counts


def message_body(job_id: str, attempts: int | None = None, task: str | None = None) -> str:
    """A job's queue message: its id, and what dispatch needs to claim it without reading it (read_message)."""
    body: dict[str, Any] = {"job_id": job_id}
    if attempts is not None:
        body["attempts"] = attempts
    if task is not None:
        body["task"] = task
    return json.dumps(body)


def settle_dead_letters(sqs: Any, dlq_url: str, queue_url: str, back: Callable[[str | None], bool],
                        limit: int = 100) -> Counter[str]:
    """Up to `limit` messages of a dead-letter queue: back to `queue_url` where `back(job id)` says so (send
    first, then delete: at least once), else dropped."""
    counts: Counter[str] = Counter()
    for message in _receive(sqs, dlq_url, limit):
        try:
            job_id = job_id_of(message["Body"])
        except (ValueError, KeyError, TypeError):
            job_id = None
        if back(job_id):
            kept = message.get("MessageAttributes", {}).get(tracing.HEADER, {}).get("StringValue")
            sqs.send_message(QueueUrl=queue_url, MessageBody=message["Body"], **trace_attributes(kept))
            counts["dlq_redriven"] += 1
        else:
            counts["dlq_dropped"] += 1
        sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
    return counts


def _receive(sqs: Any, url: str, limit: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while len(messages) < limit:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                    MessageAttributeNames=[tracing.HEADER]).get("Messages", [])
        if not batch:
            break
        messages += batch
    return messages


def trace_attributes(traceparent: str | None = None) -> dict[str, Any]:
    """SQS MessageAttributes carrying the trace of the job being worked on (or `traceparent`)."""
    value = traceparent or tracing.outgoing()
    if not value:
        return {}
    return {"MessageAttributes": {tracing.HEADER: {"DataType": "String", "StringValue": value}}}


def traceparent_of(record: Any) -> str | None:
    """The trace an SQS record carries (a Powertools SQSRecord), if any."""
    attribute = record.message_attributes[tracing.HEADER]
    return attribute.string_value if attribute else None


def job_id_of(body: str) -> str:
    """Read a queue message's job id; a message we cannot read is poison (it ends in the DLQ)."""
    return read_message(body).job_id


def read_message(body: str) -> Queued:
    """Read a queue message; a message we cannot read is poison (it ends in the DLQ). Extra facts that do
    not parse are ignored: dispatch then reads the job, as it would for an old message."""
    data = json.loads(body)
    job_id = data["job_id"]
    if not isinstance(job_id, str) or not job_id:
        raise ValueError("message has no job_id")
    attempts, task = data.get("attempts"), data.get("task")
    return Queued(job_id, attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else None,
                  task if isinstance(task, str) else None)
