"""SQS event source mappings, emulated: long-poll, batch as the template says, honour partial failures.

moto's own mapping invokes the function inside SendMessage, one message at a time, and ignores
BatchSize and `batchItemFailures`; these pollers behave like Lambda's instead.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from stillhouse_local.lambdas import FunctionRegistry

log = logging.getLogger(__name__)


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str = "us-east-1") -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {name: _event_attribute(value)
                                      for name, value in m.get("MessageAttributes", {}).items()},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


def _event_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """ReceiveMessage's shape of a message attribute -> the Lambda SQS event's (camelCase, list fields)."""
    return {"stringValue": value.get("StringValue"), "binaryValue": value.get("BinaryValue"),
            "stringListValues": value.get("StringListValues", []), "binaryListValues": value.get("BinaryListValues", []),
            "dataType": value["DataType"]}


class QueuePoller:
    def __init__(self, sqs: Any, queue_url: str, function: str, functions: FunctionRegistry, *,
                 batch_size: int, report_batch_item_failures: bool, wait_s: int = 1) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.function = function
        self.functions = functions
        self.batch_size = max(1, min(int(batch_size), 10))  # SQS hands out at most 10 per receive
        self.partial = report_batch_item_failures
        self.wait_s = wait_s
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"poller-{function}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.wait_s + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - a poller keeps polling, as Lambda's does
                log.exception("poller %s failed", self.function)
                self._stop.wait(0.5)

    def poll_once(self) -> int:
        received = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=self.batch_size, WaitTimeSeconds=self.wait_s,
            AttributeNames=["All"], MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not received:
            return 0
        try:
            result = self.functions.get(self.function).invoke(sqs_event(received, self.queue_arn))
        except Exception:  # noqa: BLE001 - the whole batch becomes visible again, as on Lambda
            log.exception("function %s failed a batch of %d", self.function, len(received))
            return len(received)
        failed = set()
        if self.partial and isinstance(result, dict):
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures") or []}
        done = [m for m in received if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        return len(received)
