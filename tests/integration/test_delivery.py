"""At-least-once delivery made harmless: duplicate SQS messages and webhooks leave one result;
a message that keeps failing ends in the DLQ, and its job still gets a terminal status."""
import json
import time
from collections import Counter

from stillhouse import aws
from tests.support.stack import settled


def send_raw(stack, body, queue="JobsNormalQueue"):
    aws.client("sqs").send_message(QueueUrl=stack.queue_url(queue), MessageBody=body)


def dlq_job_ids(stack, expect, queue="JobsNormalDLQ", timeout=15.0):
    """Drain the DLQ until a message of job `expect` shows up (or time runs out); every job id seen."""
    sqs = aws.client("sqs")
    deadline, bodies = time.monotonic() + timeout, []
    while time.monotonic() < deadline and expect not in bodies:
        got = sqs.receive_message(QueueUrl=stack.queue_url(queue), MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in got.get("Messages", []):
            bodies.append(json.loads(message["Body"])["job_id"])
            sqs.delete_message(QueueUrl=stack.queue_url(queue), ReceiptHandle=message["ReceiptHandle"])
    return bodies


def dispatches_of(monkeypatch):
    """job id -> how many deliveries of its queue messages the dispatch function has handled so far."""
    from stillhouse.container import container

    handled = Counter()
    dispatch = container().dispatcher.dispatch

    def counting(job_id, receive_count=1, message=None, receipt_handle=None):
        try:
            return dispatch(job_id, receive_count, message, receipt_handle)
        finally:
            handled[job_id] += 1

    monkeypatch.setattr(container().dispatcher, "dispatch", counting)
    return handled


def runpod_jobs_for(stack, job_id):
    """The RunPod jobs that reported back for one of our jobs (each carries our callback URL)."""
    return {d["job_id"] for d in stack.standin.webhook_deliveries if f"/callbacks/runpod/{job_id}?" in d["url"]}


def test_a_duplicated_queue_message_runs_the_job_once(api, stack, monkeypatch):
    handled = dispatches_of(monkeypatch)
    job_id = api.submit("sleep", {"seconds": 0.5})
    send_raw(stack, json.dumps({"job_id": job_id}))  # the same job delivered twice
    send_raw(stack, json.dumps({"job_id": job_id}))
    api.wait(job_id)
    assert settled(lambda: handled[job_id], lambda n: n >= 3, 15) >= 3  # the message and both copies were handled
    job = api.get(f"/v1/jobs/{job_id}").json()
    # One GPU run: one IN_PROGRESS with a RunPod id (a first /run refused under load may be tried again).
    runs = {e["runpod_id"] for e in job["events"] if e["status"] == "IN_PROGRESS" and e.get("runpod_id")}
    assert job["status"] == "COMPLETED" and len(runs) == 1, job["events"]
    assert [e["status"] for e in job["events"]].count("COMPLETED") == 1
    # The stand-in logs a webhook once our answer is back, which may be after the job shows COMPLETED.
    assert settled(lambda: len(runpod_jobs_for(stack, job_id)), lambda n: n >= 1, 10) == 1


def test_a_duplicated_webhook_leaves_one_result_and_one_notification(api, stack, faults, receiver):
    faults("local", duplicate_webhook_rate=1.0)
    job_id = api.submit("echo", {"text": "dup"}, webhook=receiver.url)
    receiver.wait_for(1, timeout=20)  # the notice's delivery, however busy the machine
    # Both copies of RunPod's webhook reached us and were answered: a notice of the second copy, if it
    # made one, was queued before that answer.
    accepted = settled(lambda: [d for d in stack.standin.webhook_deliveries
                                if f"/callbacks/runpod/{job_id}?" in d["url"] and d.get("status_code") == 200],
                       lambda found: len(found) >= 2, 20)
    assert {d["copy"] for d in accepted} == {1, 2}
    # A negative, so a deliberate wait: the delivery poller takes a queued notice within its 1-s long
    # poll and posts it in milliseconds, so a second notice would have arrived within 2 s.
    time.sleep(2.0)
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "COMPLETED"
    assert [e["status"] for e in job["events"]].count("COMPLETED") == 1
    assert len(receiver.calls) == 1 and len(job["deliveries"]) == 1


def test_a_message_that_always_fails_lands_in_the_dlq_after_max_receive_count(stack, monkeypatch):
    from stillhouse.container import container

    deliveries = []
    dispatch = container().dispatcher.dispatch

    def counting(job_id, receive_count=1, message=None, receipt_handle=None):
        if job_id == "no-such-job":
            deliveries.append(receive_count)
        return dispatch(job_id, receive_count, message, receipt_handle)

    monkeypatch.setattr(container().dispatcher, "dispatch", counting)
    poison = json.dumps({"job_id": "no-such-job"})
    send_raw(stack, poison)
    assert "no-such-job" in dlq_job_ids(stack, "no-such-job")
    max_receive_count = int(stack.options.parameters["MaxReceiveCount"])
    assert deliveries == list(range(1, max_receive_count + 1))  # every delivery tried, then the DLQ


def test_a_message_whose_job_cannot_be_handed_on_ends_the_job_and_reaches_the_dlq(api, stack, monkeypatch):
    from stillhouse.container import container

    def broken_start(job_id, attempt):
        raise RuntimeError("Step Functions unavailable")

    monkeypatch.setattr(container().workflows, "start_recovery", broken_start)
    monkeypatch.setattr(container().workflows, "start_council", broken_start)
    container().registry.update("local", enabled=False)  # nothing takes it: it must go to recovery
    try:
        job_id = api.submit()
        job = api.wait(job_id, timeout=20)
    finally:
        container().registry.update("local", enabled=True)
    assert job["status"] == "FAILED"
    assert "2 deliveries" in job["error"]
    assert job_id in dlq_job_ids(stack, job_id)


def test_a_callers_webhook_that_is_down_is_tried_again_and_every_try_is_on_the_job(api, receiver):
    """The notice is queued, not posted inline: the function that finished the job is not held, and a
    failed try comes back after the schedule's delay (1 s here) until the caller answers."""
    receiver.fail_next = 2
    job_id = api.submit("echo", {"text": "knock knock"}, webhook=receiver.url)
    calls = receiver.wait_for(3, timeout=30)
    assert len(calls) == 3 and all(c["json"]["id"] == job_id for c in calls)
    job = settled(lambda: api.get(f"/v1/jobs/{job_id}").json(), lambda j: len(j["deliveries"]) >= 3, 10)
    assert [(d.get("status_code"), d.get("error"), d.get("next")) for d in job["deliveries"]] == [
        (None, "HTTP 503", "retry"), (None, "HTTP 503", "retry"), (200, None, None)]
