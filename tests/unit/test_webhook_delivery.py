"""A finished job reaches its caller's webhook durably: queued by whoever finished it, tried by the
delivery function, retried on the schedule's delays, kept on the job, stopped in the DLQ after the last try.
The notice carries what a try posts, so the delivery function does not read the job, except for a body
too big for a message or an output kept in S3 (its link is made afresh at each try)."""
import json
import random

import boto3
import pytest
import requests

from stillhouse.delivery.signing import ID_HEADER, verify_webhook
from stillhouse.delivery.tenant_secrets import new_secret
from stillhouse.delivery.webhooks import (
    NOTICE_MAX_BYTES,
    CallerNotifier,
    DeliveryFailed,
    DeliveryQueue,
    Notice,
    WebhookDeliverer,
    read_notice,
    webhook_body,
)
from stillhouse.jobs.model import JobStatus
from stillhouse.jobs.store import JobStore
from stillhouse.telemetry import tracing
from tests.support.jobs import make_job

SECRET = new_secret()
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class Queue:
    def __init__(self):
        self.sent, self.delays = [], []

    def send(self, notice):
        self.sent.append(notice)

    def retry_after(self, receipt_handle, delay_s):
        self.delays.append((receipt_handle, delay_s))


class NoLinks:
    def url(self, job_id, ref):
        return None


class S3Links:
    """Presigned links to outputs kept in S3: a new one each time (each expires)."""

    def __init__(self):
        self.made = 0

    def url(self, job_id, ref):
        if not ref:
            return None
        self.made += 1
        return f"https://results.example/{job_id}?link={self.made}"


class NoReads:
    """The job store seen by a deliverer that must not read the job: tries are still kept on it."""

    def __init__(self, store):
        self.store = store

    def get(self, job_id):
        raise AssertionError(f"job {job_id} was read")

    def record_delivery(self, job_id, entry):
        return self.store.record_delivery(job_id, entry)


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
    store.create(make_job("j1", webhook="https://caller.example/hook", trace_id=TRACE))
    store.transition("j1", JobStatus.COMPLETED, actor="webhook", fields={"output": {"text": "hi"}})
    return store


def deliverer(store, caller, queue, schedule=(5.0, 300.0), secrets=None, links=None):
    tenant_secrets = {"acme": [SECRET]} if secrets is None else secrets
    return WebhookDeliverer(store, links or NoLinks(), lambda tenant: tenant_secrets.get(tenant, []), queue,
                            schedule_s=schedule, send=caller, rng=random.Random(0))


def queued(job, links=None):
    """The notice `job`'s finisher queues, as the delivery function reads it from its message."""
    queue = Queue()
    assert CallerNotifier(queue, links or NoLinks())(job) is True
    (notice,) = queue.sent
    return read_notice(notice.message())


def ended(job_id, **fields):
    """A COMPLETED job with a webhook, as its finisher has it (not stored)."""
    return make_job(job_id, webhook="https://caller.example/hook", trace_id=TRACE).model_copy(
        update={"status": JobStatus.COMPLETED, **fields})


ONLY_THE_ID = Notice(job_id="j1")  # a message from before notices carried more


def test_a_notice_is_queued_only_for_a_job_with_a_webhook():
    queue = Queue()
    notify = CallerNotifier(queue, NoLinks())
    assert notify(make_job("with", webhook="https://caller.example/hook")) is True
    assert notify(make_job("without")) is False
    assert [notice.job_id for notice in queue.sent] == ["with"]


def test_a_notice_that_cannot_be_queued_does_not_fail_whoever_finished_the_job():
    class Down(Queue):
        def send(self, notice):
            raise ConnectionError("SQS unreachable")

    assert CallerNotifier(Down(), NoLinks())(make_job("j", webhook="https://caller.example/hook")) is False


def test_a_notice_carries_what_its_try_posts_and_the_delivery_does_not_read_the_job(finished):
    job = finished.get("j1")
    notice = queued(job)
    assert (notice.webhook, notice.tenant_id, notice.trace_id) == ("https://caller.example/hook", "acme", TRACE)
    caller = Caller(200)
    deliverer(NoReads(finished), caller, Queue()).deliver(notice, 1, "rh")
    ((url, body, headers),) = caller.calls
    assert url == "https://caller.example/hook" and body == webhook_body(job)
    assert json.loads(body)["output"] == {"text": "hi"}
    assert verify_webhook(SECRET, body, headers) and headers[ID_HEADER] == "msg_j1"
    assert tracing.TraceContext.parse(headers[tracing.HEADER]).trace_id == TRACE
    (delivery,) = finished.get("j1").deliveries  # the try is still kept on the job
    assert delivery.try_ == 1 and delivery.status_code == 200


def test_every_try_of_a_notice_posts_the_same_body_under_the_same_id(finished):
    notice, caller, queue = queued(finished.get("j1")), Caller(503, 200), Queue()
    with pytest.raises(DeliveryFailed):
        deliverer(NoReads(finished), caller, queue).deliver(notice, 1, "rh")
    deliverer(NoReads(finished), caller, queue).deliver(notice, 2, "rh")
    (_, first, first_headers), (_, second, second_headers) = caller.calls
    assert first == second and first_headers[ID_HEADER] == second_headers[ID_HEADER] == "msg_j1"
    assert [d.status_code for d in finished.get("j1").deliveries] == [None, 200]


def test_a_body_too_big_for_a_message_is_made_from_the_job_at_each_try(jobs_table):
    store = JobStore(jobs_table)
    store.create(make_job("j1", webhook="https://caller.example/hook"))
    big = {"text": "x" * NOTICE_MAX_BYTES}
    store.transition("j1", JobStatus.COMPLETED, actor="webhook", fields={"output": big})
    notice = queued(store.get("j1"))
    assert notice.body is None and len(notice.message()) < 1000  # the job id (and trace) only
    caller = Caller(200)
    deliverer(store, caller, Queue()).deliver(notice, 1, "rh")
    ((_, body, _),) = caller.calls
    assert json.loads(body)["output"] == big


def test_an_output_kept_in_s3_is_linked_afresh_at_each_try(jobs_table):
    """A presigned link expires (in an hour), and a retry can come hours later: no link is queued."""
    links = S3Links()
    job = ended("j1", output_ref={"bytes": 500_000})
    notice = queued(job, links)
    assert notice.body is None

    class Kept:
        def get(self, job_id):
            return job

        def record_delivery(self, job_id, entry):
            return True

    caller = Caller(503, 200)
    with pytest.raises(DeliveryFailed):
        deliverer(Kept(), caller, Queue(), links=links).deliver(notice, 1, "rh")
    deliverer(Kept(), caller, Queue(), links=links).deliver(notice, 2, "rh")
    urls = [json.loads(body)["output_url"] for _, body, _ in caller.calls]
    assert urls == [f"https://results.example/j1?link={n}" for n in (2, 3)]  # made at each try, not when queued


def test_a_message_of_only_the_job_id_is_still_delivered_from_the_job(finished):
    notice = read_notice(json.dumps({"job_id": "j1"}))
    caller = Caller(200)
    deliverer(finished, caller, Queue()).deliver(notice, 1, "rh")
    ((url, body, headers),) = caller.calls
    assert url == "https://caller.example/hook" and body == webhook_body(finished.get("j1"))
    assert verify_webhook(SECRET, body, headers) and headers[ID_HEADER] == "msg_j1"


@pytest.mark.parametrize("message", ['{"id": "j1"}', '{"job_id": ""}', '{"job_id": "j1", "body": 3}', "j1"])
def test_a_message_that_is_not_a_notice_is_refused(message):
    with pytest.raises(ValueError):  # the record fails, and its message ends in the dead-letter queue
        read_notice(message)


def test_a_notice_goes_through_the_queue_as_it_was_sent(aws_mock):
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="deliveries")["QueueUrl"]
    notice = CallerNotifier(Queue(), NoLinks()).notice(ended("j1", output={"text": "é\n\"x\""}))
    DeliveryQueue(sqs, url).send(notice)
    (message,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"])["Messages"]
    assert read_notice(message["Body"]) == notice and notice.full
    assert message["MessageAttributes"][tracing.HEADER]["StringValue"].split("-")[1] == TRACE


def test_a_notice_is_still_tried_after_its_job_has_expired(jobs_table):
    """The notice has all it needs; the try is kept on the job only while the job is there."""
    notice = queued(ended("gone"))
    caller = Caller(200)
    deliverer(JobStore(jobs_table), caller, Queue()).deliver(notice, 1, "rh")
    assert len(caller.calls) == 1


def test_a_delivered_notice_is_signed_and_kept_on_the_job(finished):
    caller, queue = Caller(200), Queue()
    deliverer(finished, caller, queue).deliver(ONLY_THE_ID, 1, "rh")
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
        deliverer(finished, caller, queue).deliver(ONLY_THE_ID, 1, "rh")
    ((handle, delay),) = queue.delays
    assert handle == "rh" and 5.0 * 0.8 <= delay <= 5.0 * 1.2  # jittered around the first delay
    (delivery,) = finished.get("j1").deliveries
    assert delivery.error == "HTTP 503" and delivery.next == "retry"


def test_after_the_last_try_the_notice_stops_in_the_dead_letter_queue_and_says_so(finished):
    caller, queue = Caller(requests.ConnectionError("refused")), Queue()
    with pytest.raises(DeliveryFailed):
        deliverer(finished, caller, queue).deliver(ONLY_THE_ID, 3, "rh")  # 2 delays: the 3rd try is the last
    assert queue.delays == []  # nothing brings it back: SQS moves it to the DLQ
    (delivery,) = finished.get("j1").deliveries
    assert delivery.try_ == 3 and delivery.next.startswith("stopped")


def test_a_notice_for_a_job_that_no_longer_exists_is_done_with(jobs_table):
    caller, queue = Caller(), Queue()
    deliverer(JobStore(jobs_table), caller, queue).deliver(Notice(job_id="expired"), 1, "rh")
    assert caller.calls == [] and queue.delays == []


def test_a_tenant_without_a_webhook_secret_is_never_sent_an_unsigned_notice(finished):
    caller, queue = Caller(), Queue()
    with pytest.raises(DeliveryFailed):
        deliverer(finished, caller, queue, secrets={}).deliver(ONLY_THE_ID, 1, "rh")
    assert caller.calls == []
    (delivery,) = finished.get("j1").deliveries
    assert "no webhook secret" in delivery.error and delivery.next == "retry"
