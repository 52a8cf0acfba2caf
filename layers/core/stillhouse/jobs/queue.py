"""Job queue: one SQS queue per priority; a message carries only the job id."""
from __future__ import annotations

import json
from typing import Any

from stillhouse.jobs.model import Priority


class JobQueue:
    def __init__(self, sqs: Any, urls: dict[Priority, str], dlqs: dict[Priority, str] | None = None) -> None:
        self._sqs = sqs
        self._urls = urls
        self._dlqs = dlqs or {}  # each priority's dead-letter queue

    def send(self, job_id: str, priority: Priority) -> None:
        self._sqs.send_message(QueueUrl=self._urls[priority], MessageBody=json.dumps({"job_id": job_id}))


    def redrive_dlqs(self) -> int:
        """Send what the dead-letter queues hold back to their queues; how many messages moved."""
        return sum(redrive(self._sqs, dlq, self._urls[priority])
                   for priority, dlq in self._dlqs.items() if dlq and self._urls.get(priority))


def job_id_of(body: str) -> str:
    """Read a queue message; a message we cannot read is poison (it ends in the DLQ)."""
    data = json.loads(body)
    job_id = data["job_id"]
    if not isinstance(job_id, str) or not job_id:
        raise ValueError("message has no job_id")
    return job_id


def redrive(sqs: Any, dlq_url: str, queue_url: str, limit: int = 1000) -> int:
    """Move up to `limit` messages from a DLQ back to its queue (send first, then delete: at least once)."""
    moved = 0
    while moved < limit:
        messages = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            break
        for message in messages:
            sqs.send_message(QueueUrl=queue_url, MessageBody=message["Body"])
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    return moved
