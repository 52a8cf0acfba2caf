"""The batches' control queue: a batch's `start` and `finish` steps, each run by the batches function."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

STEPS = ("start", "finish")


@dataclass(frozen=True)
class Step:
    batch_id: str
    step: str


class BatchSteps:
    def __init__(self, sqs: Any, url: str) -> None:
        self._sqs = sqs
        self._url = url

    def send(self, batch_id: str, step: str) -> None:
        self._sqs.send_message(QueueUrl=self._url, MessageBody=json.dumps({"batch_id": batch_id, "step": step}))


def read_step(body: str) -> Step:
    """A control message; one we cannot read is poison (it ends in the dead-letter queue)."""
    data = json.loads(body)
    batch_id, step = data.get("batch_id"), data.get("step")
    if not isinstance(batch_id, str) or not batch_id or step not in STEPS:
        raise ValueError("not a batch step")
    return Step(batch_id, step)
