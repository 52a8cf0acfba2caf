"""The delivery function tries a batch's notices concurrently: a slow caller endpoint does not hold the
other callers' notices of the same batch. A failed try, and a message that is not a notice, are the
batch's failures: only they stay on the queue (partial batch failure). Every try of a batch runs at once
and ends by its deadline, so a batch of receivers that never finish answering ends long before the
function's timeout (which would return every notice of the batch, and cost each a try)."""
import importlib.util
import json
import random
import threading
import time
from pathlib import Path

import pytest
from stillhouse_local.lambdas import LambdaContext
from stillhouse_local.pollers import sqs_event
from stillhouse_local.template import load_sam

import stillhouse.container
from stillhouse.config import Settings
from stillhouse.delivery.destinations import WebhookGuard, loopback_only_resolver
from stillhouse.delivery.tenant_secrets import new_secret
from stillhouse.delivery.webhooks import TRIES_AT_ONCE, DeliveryFailed, GuardedPost, Notice, WebhookDeliverer
from tests.support.receivers import Dripping
from tests.support.stack import Receiver

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


def load_handler(monkeypatch, deliverer):
    """functions/delivery/app.py's handler, its container holding only `deliverer`."""

    class Container:
        settings = object()

    Container.deliverer = deliverer
    monkeypatch.setattr(stillhouse.container, "container", lambda: Container())
    spec = importlib.util.spec_from_file_location("delivery_app_under_test", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


@pytest.fixture
def delivery_function(monkeypatch):
    callers = Callers()
    return load_handler(monkeypatch, callers), callers


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


class Tries:
    """Where the deliverer keeps each try (the job store) and sets a failed notice's next delay (the queue)."""

    def __init__(self):
        self.kept, self.delayed = {}, []

    def record_delivery(self, job_id, entry):
        self.kept.setdefault(job_id, []).append(entry)
        return True

    def retry_after(self, receipt_handle, delay_s):
        self.delayed.append(receipt_handle)


def test_a_batch_of_dripping_receivers_ends_at_one_tries_deadline_and_costs_another_tenant_nothing(monkeypatch):
    """Nine tenants' receivers drip their answers a byte at a time; a tenth answers. Every try runs at
    once and ends by its deadline, so the batch ends long before the function's timeout, and only the nine
    notices stay on the queue: the tenth tenant's notice went through on its first try."""
    deadline_s = 1.5
    dripping, answering, tries = Dripping(every_s=0.3), Receiver(), Tries()
    deliverer = WebhookDeliverer(tries, links=None, secrets_for=lambda tenant: [new_secret()], queue=tries,
                                 schedule_s=[1.0], timeout_s=deadline_s, rng=random.Random(0),
                                 send=GuardedPost(WebhookGuard(allow_loopback=True, resolve=loopback_only_resolver)))
    handler = load_handler(monkeypatch, deliverer)
    notices = [Notice(job_id=f"slow{n}", webhook=dripping.url, tenant_id=f"t{n}", body="{}") for n in range(9)]
    notices.insert(4, Notice(job_id="other", webhook=answering.url, tenant_id="other", body='{"id":"other"}'))
    event = sqs_event([message(n, notice.message()) for n, notice in enumerate(notices)],
                      "arn:aws:sqs:us-east-1:123456789012:deliveries")
    try:
        started = time.monotonic()
        result = handler(event, LambdaContext("DeliveryFunction"))
        took = time.monotonic() - started
    finally:
        dripping.stop()
        answering.close()
    assert took < deadline_s + 5  # the old code waited for the dripping to end (30 s), the function's timeout
    assert dripping.most_at_once == 9  # all at once: not in rounds of the default executor's few threads
    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == sorted(
        f"m{n}" for n, notice in enumerate(notices) if notice.job_id != "other")
    assert tries.kept["other"] == [{"at": tries.kept["other"][0]["at"], "try": 1, "status_code": 200}]
    assert all("deadline" in tries.kept[f"slow{n}"][0]["error"] for n in range(9))


def test_a_batch_of_tries_at_their_longest_ends_well_within_the_functions_timeout():
    """Every notice of a batch gets a thread (BatchSize <= TRIES_AT_ONCE), and a try's deadline may be set
    no longer than this: a batch never runs into the timeout, which would return all of it to the queue
    and cost every notice in it a try."""
    function = load_sam(APP.parents[2] / "template.yaml")["Resources"]["DeliveryFunction"]["Properties"]
    assert function["Events"]["Notices"]["Properties"]["BatchSize"] <= TRIES_AT_ONCE
    assert "ReportBatchItemFailures" in function["Events"]["Notices"]["Properties"]["FunctionResponseTypes"]
    longest = Settings.model_fields["webhook_timeout_s"].metadata
    assert max(m.le for m in longest if hasattr(m, "le")) * 1.5 <= function["Timeout"]
