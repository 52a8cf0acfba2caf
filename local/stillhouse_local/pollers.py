"""SQS event source mappings, emulated: long-poll, batch as the template says, honour partial failures.

moto's own mapping invokes the function inside SendMessage, one message at a time, and ignores
BatchSize and `batchItemFailures`; these pollers behave like Lambda's instead.

A mapping runs up to `concurrency` batches at once, as Lambda's runs up to its
`ScalingConfig.MaximumConcurrency`: one thread receives while fewer than that many batches are being
processed, and each batch is invoked on a thread of its own. The function hands each concurrent
invocation a loaded instance of its own (lambdas.InProcessFunction, `per_instance`), so module state (a
Powertools batch processor) is never shared between two batches in flight. At 1 (the embedded stack's
default) the poller receives, invokes and deletes on its one thread, one batch after another.
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
                 batch_size: int, report_batch_item_failures: bool, wait_s: int = 1, concurrency: int = 1) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.function = function
        self.functions = functions
        self.batch_size = max(1, min(int(batch_size), 10))  # SQS hands out at most 10 per receive
        self.partial = report_batch_item_failures
        self.wait_s = wait_s
        self.concurrency = max(1, int(concurrency))
        self._slots = threading.BoundedSemaphore(self.concurrency)  # batches being processed at once
        self._batches: set[threading.Thread] = set()  # concurrency > 1: the batches' threads in flight
        self._batches_lock = threading.Lock()
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"poller-{function}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.wait_s + 5)
        with self._batches_lock:
            in_flight = list(self._batches)
        for thread in in_flight:  # batches already received finish, as the one-thread poller's does
            thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.concurrency == 1:
                    self.poll_once()
                else:
                    self._poll_concurrently()
            except Exception:  # noqa: BLE001 - a poller keeps polling, as Lambda's does
                log.exception("poller %s failed", self.function)
                self._stop.wait(0.5)

    def poll_once(self) -> int:
        """Receive one batch and process it on this thread; the number of messages received."""
        received = self._receive()
        return self._process(received) if received else 0

    def _receive(self) -> list[dict[str, Any]]:
        return self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=self.batch_size, WaitTimeSeconds=self.wait_s,
            AttributeNames=["All"], MessageAttributeNames=["All"],
        ).get("Messages", [])

    def _poll_concurrently(self) -> None:
        """Wait for a free slot, receive one batch, process it on a thread of its own."""
        while not self._slots.acquire(timeout=0.5):
            if self._stop.is_set():
                return
        try:
            received = self._receive()
        except BaseException:
            self._slots.release()
            raise
        if not received:
            self._slots.release()
            return
        thread = threading.Thread(target=self._process_and_release, args=(received,),
                                  name=f"poller-{self.function}-batch", daemon=True)
        with self._batches_lock:
            self._batches.add(thread)
        thread.start()

    def _process_and_release(self, received: list[dict[str, Any]]) -> None:
        try:
            self._process(received)
        except Exception:  # noqa: BLE001 - e.g. the delete failed: the messages come back, as on Lambda
            log.exception("poller %s failed a batch", self.function)
        finally:
            with self._batches_lock:
                self._batches.discard(threading.current_thread())
            self._slots.release()

    def _process(self, received: list[dict[str, Any]]) -> int:
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
