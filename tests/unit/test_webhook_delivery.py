"""A finished job reaches its caller's webhook durably: queued by whoever finished it, tried by the
delivery function, retried on the schedule's delays, kept on the job, stopped in the DLQ after the last try."""
import json
import random

import pytest
import requests

from stillhouse.delivery.signing import ID_HEADER, verify_webhook
from stillhouse.delivery.tenant_secrets import new_secret
from stillhouse.delivery.webhooks import CallerNotifier, DeliveryFailed, WebhookDeliverer
from stillhouse.jobs.model import JobStatus
from stillhouse.jobs.store import JobStore
from tests.support.jobs import make_job

SECRET = new_secret()


class Queue:
    def __init__(self):
        self.sent, self.delays = [], []

    def send(self, job_id, trace_id=None):
        self.sent.append(job_id)

    def retry_after(self, receipt_handle, delay_s):
        self.delays.append((receipt_handle, delay_s))


class NoLinks:
    def url(self, output):
        return None


class Caller:
    """The caller's endpoint: answers each try with the next status (or raises a connection error)."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), []

    def __call__(self, url, body, headers, timeout_s):
        self.calls.append((url, body, headers))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if answer >= 300:
            raise DeliveryFailed(f"HTTP {answer}")
        return answer


@pytest.fixture
def finished(jobs_table):
    store = JobStore(jobs_table)
    store.create(make_job("j1", webhook="https://caller.example/hook"))
    store.transition("j1", JobStatus.COMPLETED, actor="webhook", fields={"output": {"text": "hi"}})
    return store


def deliverer(store, caller, queue, schedule=(5.0, 300.0), secrets=None):
    tenant_secrets = {"acme": [SECRET]} if secrets is None else secrets
    return WebhookDeliverer(store, NoLinks(), lambda tenant: tenant_secrets.get(tenant, []), queue, schedule_s=schedule, send=caller,
                            rng=random.Random(0))


def test_a_notice_is_queued_only_for_a_job_with_a_webhook():
    queue = Queue()
    notify = CallerNotifier(queue)
    assert notify(make_job("with", webhook="https://caller.example/hook")) is True
    assert notify(make_job("without")) is False
    assert queue.sent == ["with"]


def test_a_notice_that_cannot_be_queued_does_not_fail_whoever_finished_the_job():
    class Down(Queue):
        def send(self, job_id, trace_id=None):
            raise ConnectionError("SQS unreachable")

    assert CallerNotifier(Down())(make_job("j", webhook="https://caller.example/hook")) is False


def test_a_delivered_notice_is_signed_and_kept_on_the_job(finished):
    caller, queue = Caller(200), Queue()
    deliverer(finished, caller, queue).deliver("j1", 1, "rh")
    ((url, body, headers),) = caller.calls
    assert url == "https://caller.example/hook" and json.loads(body)["status"] == "COMPLETED"
    assert verify_webhook(SECRET, body, headers) and headers[ID_HEADER] == "msg_j1"
    assert not verify_webhook(new_secret(), body, headers)
    (delivery,) = finished.get("j1").deliveries
    assert delivery.try_ == 1 and delivery.status_code == 200 and delivery.error is None
    assert queue.delays == []


def test_a_failed_try_comes_back_after_the_schedules_next_delay(finished):
    caller, queue = Caller(503), Queue()
    with pytest.raises(DeliveryFailed):
        deliverer(finished, caller, queue).deliver("j1", 1, "rh")
    ((handle, delay),) = queue.delays
    assert handle == "rh" and 5.0 * 0.8 <= delay <= 5.0 * 1.2  # jittered around the first delay
    (delivery,) = finished.get("j1").deliveries
    assert delivery.error == "HTTP 503" and delivery.next == "retry"


def test_after_the_last_try_the_notice_stops_in_the_dead_letter_queue_and_says_so(finished):
    caller, queue = Caller(requests.ConnectionError("refused")), Queue()
    with pytest.raises(DeliveryFailed):
        deliverer(finished, caller, queue).deliver("j1", 3, "rh")  # 2 delays: the 3rd try is the last
    assert queue.delays == []  # nothing brings it back: SQS moves it to the DLQ
    (delivery,) = finished.get("j1").deliveries
    assert delivery.try_ == 3 and delivery.next.startswith("stopped")


def test_a_notice_for_a_job_that_no_longer_exists_is_done_with(jobs_table):
    caller, queue = Caller(), Queue()
    deliverer(JobStore(jobs_table), caller, queue).deliver("expired", 1, "rh")
    assert caller.calls == [] and queue.delays == []


def test_a_tenant_without_a_webhook_secret_is_never_sent_an_unsigned_notice(finished):
    caller, queue = Caller(), Queue()
    with pytest.raises(DeliveryFailed):
        deliverer(finished, caller, queue, secrets={}).deliver("j1", 1, "rh")
    assert caller.calls == []
    (delivery,) = finished.get("j1").deliveries
    assert "no webhook secret" in delivery.error and delivery.next == "retry"
