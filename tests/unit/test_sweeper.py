"""The sweeper settles every stale job it can; one it cannot settle is counted and does not stop the rest."""
import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from stillhouse.jobs.deadlines import SettleDeadlines
from stillhouse.jobs.model import JobStatus, Priority, Task
from stillhouse.jobs.queue import JobQueue
from stillhouse.jobs.store import JobStore
from stillhouse.jobs.sweeper import Sweeper
from tests.support.callbacks import recorder
from tests.support.jobs import make_job


def test_a_job_that_cannot_be_settled_is_counted_and_the_sweep_goes_on(jobs_table):
    store = JobStore(jobs_table)
    for job_id, runpod_id in (("j1", "rp-broken"), ("j2", "rp-done")):
        store.create(make_job(job_id))
        store.transition(job_id, JobStatus.IN_PROGRESS, actor="dispatch", endpoint="a", attempt=1,
                         fields={"runpod_id": runpod_id, "attempts": 1})

    def fetch_status(endpoint, runpod_id):
        if runpod_id == "rp-broken":
            raise ValueError("a body nobody expected")  # a bug, not a RunPod fault: not a RunPodError
        return {"id": runpod_id, "status": "COMPLETED", "output": {"text": "late"}}

    callbacks, notified, _ = recorder(store)
    sweeper = Sweeper(store=store, callbacks=callbacks, fetch_status=fetch_status,
                      execution_status=lambda arn: "RUNNING", notify=notified.append, deadlines=SettleDeadlines())
    counts = sweeper.sweep(now=datetime.now(UTC) + timedelta(hours=1))
    assert counts == {"errors": 1, "settled": 1}
    assert store.get("j2").status is JobStatus.COMPLETED
    assert store.get("j1").status is JobStatus.IN_PROGRESS  # left for the next sweep, not lost


@pytest.fixture
def queues(aws_mock):
    sqs = boto3.client("sqs", region_name="us-east-1")
    urls = {name: sqs.create_queue(QueueName=name)["QueueUrl"] for name in ("normal", "normal-dlq")}
    return sqs, JobQueue(sqs, {Priority.NORMAL: urls["normal"]}, {Priority.NORMAL: urls["normal-dlq"]}), urls


def bodies(sqs, url):
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    return [json.loads(m["Body"]) if m["Body"].startswith("{") else m["Body"] for m in messages]


def queue_sweeper(store, queue, give_up_s=3600):
    callbacks, notified, _ = recorder(store)
    return Sweeper(store=store, callbacks=callbacks, fetch_status=None, execution_status=lambda arn: "RUNNING",
                   notify=notified.append, deadlines=SettleDeadlines(), queue=queue, in_queue_give_up_s=give_up_s), notified


def test_a_queued_job_whose_message_was_lost_is_queued_again(jobs_table, queues):
    sqs, queue, urls = queues
    store = JobStore(jobs_table)
    store.create(make_job("lost"))
    sweeper, _ = queue_sweeper(store, queue)
    assert sweeper.sweep(now=datetime.now(UTC) + timedelta(minutes=10)) == {"requeued": 1}
    assert bodies(sqs, urls["normal"]) == [{"job_id": "lost", "attempts": 0, "task": "echo"}]  # what dispatch claims with
    assert store.get("lost").status is JobStatus.IN_QUEUE
    assert sweeper.sweep(now=datetime.now(UTC) + timedelta(seconds=1)) == {}  # news now: not stale again at once


def test_a_job_never_dispatched_within_the_give_up_time_ends_failed_and_its_caller_is_told(jobs_table, queues):
    _, queue, _ = queues
    store = JobStore(jobs_table)
    store.create(make_job("stuck"))
    sweeper, notified = queue_sweeper(store, queue, give_up_s=600)
    assert sweeper.sweep(now=datetime.now(UTC) + timedelta(minutes=11)) == {"failed": 1}
    job = store.get("stuck")
    assert job.status is JobStatus.FAILED and "not dispatched within 600 s" in job.error
    assert [j.id for j in notified] == ["stuck"]


def test_a_batch_chunk_waits_in_its_lane_past_the_give_up_time_and_is_queued_there_again(jobs_table, aws_mock):
    sqs = boto3.client("sqs", region_name="us-east-1")
    lane = sqs.create_queue(QueueName="batch")["QueueUrl"]
    store = JobStore(jobs_table)
    store.create(make_job("batch_1-c00000", task=Task.BATCH, priority=Priority.BATCH))
    sweeper, notified = queue_sweeper(store, JobQueue(sqs, {Priority.BATCH: lane}), give_up_s=600)
    # Its batch's window bounds it (the batch's expiry cancels it), not the give-up time of a single job.
    assert sweeper.sweep(now=datetime.now(UTC) + timedelta(minutes=11)) == {"requeued": 1}
    assert bodies(sqs, lane) == [{"job_id": "batch_1-c00000", "attempts": 0, "task": "batch"}]
    assert store.get("batch_1-c00000").status is JobStatus.IN_QUEUE and notified == []


def test_dead_letters_of_waiting_jobs_go_back_and_the_rest_are_dropped(jobs_table, queues):
    sqs, queue, urls = queues
    store = JobStore(jobs_table)
    store.create(make_job("waiting"))
    store.create(make_job("done"))
    store.transition("done", JobStatus.FAILED, actor="dispatch", fields={"error": "dispatch failed"})
    for body in ('{"job_id": "waiting"}', '{"job_id": "done"}', "not json", '{"job_id": "gone"}'):
        sqs.send_message(QueueUrl=urls["normal-dlq"], MessageBody=body)
    sweeper, _ = queue_sweeper(store, queue)
    assert sweeper.sweep() == {"dlq_redriven": 1, "dlq_dropped": 3}
    assert bodies(sqs, urls["normal"]) == [{"job_id": "waiting"}]
    assert bodies(sqs, urls["normal-dlq"]) == []


def test_with_the_dlq_policy_off_the_dead_letters_stay_for_an_operator(jobs_table, queues):
    sqs, queue, urls = queues
    sqs.send_message(QueueUrl=urls["normal-dlq"], MessageBody='{"job_id": "gone"}')
    sweeper, _ = queue_sweeper(JobStore(jobs_table), queue)
    sweeper.settle_dlqs = False
    assert sweeper.sweep() == {}
    assert bodies(sqs, urls["normal-dlq"]) == [{"job_id": "gone"}]
