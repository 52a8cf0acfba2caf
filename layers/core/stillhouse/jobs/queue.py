"""Job queue: one SQS queue per priority; a message carries only the job id."""
from __future__ import annotations

import json
from typing import Any

from stillhouse.jobs.model import Priority


class JobQueue:
    def __init__(self, sqs: Any, urls: dict[Priority, str]) -> None:
        self._sqs = sqs
        self._urls = urls

    def send(self, job_id: str, priority: Priority) -> None:
        self._sqs.send_message(QueueUrl=self._urls[priority], MessageBody=json.dumps({"job_id": job_id}))


def job_id_of(body: str) -> str:
    """Read a queue message; a message we cannot read is poison (it ends in the DLQ)."""
    data = json.loads(body)
    job_id = data["job_id"]
    if not isinstance(job_id, str) or not job_id:
        raise ValueError("message has no job_id")
    return job_id
