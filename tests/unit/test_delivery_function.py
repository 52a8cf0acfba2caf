"""The delivery function tries a batch's notices concurrently: a slow caller endpoint does not hold the
other callers' notices of the same batch. A failed try, and a message that is not a notice, are the
batch's failures: only they stay on the queue (partial batch failure)."""
import importlib.util
import json
import threading
from pathlib import Path

import pytest
from stillhouse_local.lambdas import LambdaContext
from stillhouse_local.pollers import sqs_event

import stillhouse.container
from stillhouse.delivery.webhooks import DeliveryFailed

APP = Path(__file__).resolve().parents[2] / "functions" / "delivery" / "app.py"


class Callers:
    """The callers' endpoints of one batch: `slow` answers only once `fast` has had its notice (or gives
    up after a while, which is what a one-at-a-time batch would make it do); `down` always fails."""

    def __init__(self):
        self.fast_delivered = threading.Event()
        self.delivered = []

    def deliver(self, notice, receive_count, receipt_handle):
        if notice.job_id == "down":
            raise DeliveryFailed("HTTP 503")
        if notice.job_id == "slow" and not self.fast_delivered.wait(timeout=10):
            raise DeliveryFailed("timed out waiting for the rest of the batch")
        self.delivered.append(notice.job_id)
        if notice.job_id == "fast":
            self.fast_delivered.set()


@pytest.fixture
def delivery_function(monkeypatch):
    """functions/delivery/app.py's handler, its container holding only the deliverer."""
    callers = Callers()

    class Container:
        settings = object()
        deliverer = callers

    monkeypatch.setattr(stillhouse.container, "container", lambda: Container())
    spec = importlib.util.spec_from_file_location("delivery_app_under_test", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler, callers


def message(n, body):
    return {"MessageId": f"m{n}", "ReceiptHandle": f"rh{n}", "Body": body,
            "Attributes": {"ApproximateReceiveCount": "1"}}


def test_a_slow_caller_does_not_hold_the_other_notices_of_its_batch(delivery_function):
    handler, callers = delivery_function
    event = sqs_event([message(0, json.dumps({"job_id": "slow"})), message(1, json.dumps({"job_id": "fast"})),
                       message(2, json.dumps({"job_id": "down"})), message(3, "not a notice")],
                      "arn:aws:sqs:us-east-1:123456789012:deliveries")
    result = handler(event, LambdaContext("DeliveryFunction"))
    assert callers.delivered == ["fast", "slow"]  # the first record waited on the second: both went through
    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == ["m2", "m3"]
