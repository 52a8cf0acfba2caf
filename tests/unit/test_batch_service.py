"""The Batch API's service on moto: a batch is planned once, its chunks are jobs, and finishing writes every
line to exactly one file once, however often a step runs or whichever way its chunks ended."""
import json

import boto3
import pytest

from stillhouse.auth import Principal
from stillhouse.batches.chunks import ChunkJobs, ChunkObjects
from stillhouse.batches.files import FileStore
from stillhouse.batches.model import BatchCreate
from stillhouse.batches.service import BatchService
from stillhouse.batches.store import BatchStore, chunk_job_id
from stillhouse.config import BatchSettings, InputLimits
from stillhouse.jobs.model import JobStatus
from stillhouse.jobs.store import JobStore
from tests.support.tables import create_batches_table

WHO = Principal(tenant_id="acme", key_id="k1")
CHAT = "/v1/chat/completions"


class Steps:
    def __init__(self):
        self.sent = []

    def send(self, batch_id, step):
        self.sent.append((batch_id, step))


class Lane:
    def __init__(self):
        self.sent = []

    def send_many(self, jobs):
        self.sent += [j.id for j in jobs]


@pytest.fixture
def world(jobs_table):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="results")
    batches_table = create_batches_table(boto3.resource("dynamodb", region_name="us-east-1"))
    jobs = JobStore(jobs_table)
    settings = BatchSettings(chunk_lines=2)
    steps, lane, cancelled = Steps(), Lane(), []

    def cancel(job):
        cancelled.append(job.id)
        jobs.transition(job.id, JobStatus.CANCELLED, actor="batch")

    service = BatchService(files=FileStore(batches_table, s3, "results", settings), batches=BatchStore(batches_table),
                           chunk_jobs=ChunkJobs(jobs_table), chunk_objects=ChunkObjects(s3, "results"), steps=steps,
                           lane=lane, settings=settings, limits=InputLimits(), served=lambda model: True,
                           cancel_job=cancel)
    jobs.on_finished = service.chunk_ended
    return service, jobs, steps, lane, cancelled


def submit(service, n=5):
    rows = [{"custom_id": f"r{i}", "method": "POST", "url": CHAT,
             "body": {"model": "echo-a", "messages": [{"role": "user", "content": f"q{i}"}]}} for i in range(n)]
    file = service.files.create("acme", "in.jsonl", "batch", "".join(json.dumps(r) + "\n" for r in rows).encode())
    return service.create(WHO, BatchCreate(input_file_id=file.id, endpoint=CHAT, completion_window="24h"))


def answer(jobs, job_id, worker_lines):
    jobs.transition(job_id, JobStatus.IN_PROGRESS, actor="dispatch", fields={"runpod_id": "rp"})
    jobs.transition(job_id, JobStatus.COMPLETED, actor="webhook", fields={"output": {"lines": worker_lines}})


def echo_lines(service, batch_id, index):
    chunk = service.chunk_objects.get(batch_id, index)
    return [{"custom_id": ln["custom_id"], "output": {"text": "ok", "prompt_tokens": 1, "completion_tokens": 1}}
            for ln in chunk["lines"]]


def test_a_batch_is_planned_once_into_chunk_jobs_queued_on_the_lane(world):
    service, jobs, steps, lane, _ = world
    batch = submit(service)
    assert batch.status == "validating" and steps.sent == [(batch.id, "start")]
    assert service.start(batch.id) == "started"
    assert service.start(batch.id) == "started already"  # a redelivered step changes nothing
    assert lane.sent == [chunk_job_id(batch.id, i) for i in range(3)]
    chunk = jobs.get(lane.sent[0])
    assert chunk.task.value == "batch" and chunk.priority.value == "batch" and chunk.input["lines"] == 2
    got = service.get(WHO, batch.id)
    assert got.status == "in_progress" and got.request_counts.total == 5 and got.stillhouse["chunks"] == 3


def test_the_last_chunk_to_end_queues_the_finish_which_writes_each_line_once(world):
    service, jobs, steps, lane, _ = world
    batch = submit(service)
    service.start(batch.id)
    for index, job_id in enumerate(lane.sent):
        assert service.finish(batch.id) == "chunks running"  # not before every chunk has ended
        answer(jobs, job_id, echo_lines(service, batch.id, index))
    assert steps.sent[-1] == (batch.id, "finish")
    assert service.get(WHO, batch.id).request_counts.completed == 5  # progress, counted as chunks ended
    assert service.finish(batch.id) == "completed"
    assert service.finish(batch.id) == "ended already"
    done = service.get(WHO, batch.id)
    out = service.files.content("acme", done.output_file_id).decode().splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in out) == [f"r{i}" for i in range(5)]
    assert done.error_file_id is None and (done.request_counts.completed, done.request_counts.failed) == (5, 0)


def test_a_chunk_whose_job_failed_puts_its_lines_in_the_error_file(world):
    service, jobs, _, lane, _ = world
    batch = submit(service, n=3)
    service.start(batch.id)
    answer(jobs, lane.sent[0], echo_lines(service, batch.id, 0))
    jobs.transition(lane.sent[1], JobStatus.FAILED, actor="dispatch", fields={"error": "no endpoint took it"})
    assert service.finish(batch.id) == "completed"
    done = service.get(WHO, batch.id)
    errors = [json.loads(line) for line in service.files.content("acme", done.error_file_id).decode().splitlines()]
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("r2", "request_failed")]
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)


def test_cancel_stops_the_chunks_not_yet_ended_and_keeps_the_rest(world):
    service, jobs, _, lane, cancelled = world
    batch = submit(service)
    service.start(batch.id)
    answer(jobs, lane.sent[0], echo_lines(service, batch.id, 0))
    assert service.cancel(WHO, batch.id).status == "cancelling"
    assert service.finish(batch.id) == "cancelled"
    assert cancelled == lane.sent[1:]
    done = service.get(WHO, batch.id)
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 3)
    errors = service.files.content("acme", done.error_file_id).decode().splitlines()
    codes = {json.loads(line)["error"]["code"] for line in errors}
    assert codes == {"batch_cancelled"}


def test_a_cancel_that_lands_while_the_chunks_are_written_stops_them_all(world, monkeypatch):
    service, _, _, lane, cancelled = world
    batch = submit(service)
    write = service.chunk_jobs.create_many

    def cancelled_meanwhile(new_jobs):
        service.cancel(WHO, batch.id)
        write(new_jobs)

    monkeypatch.setattr(service.chunk_jobs, "create_many", cancelled_meanwhile)
    assert service.start(batch.id) == "cancelled while starting"
    assert lane.sent == [] and cancelled == [chunk_job_id(batch.id, i) for i in range(3)]
    assert service.finish(batch.id) == "cancelled"


def test_chunks_a_start_planned_but_did_not_write_are_written_by_the_finish(world, monkeypatch):
    service, jobs, _, lane, _ = world
    batch = submit(service)
    monkeypatch.setattr(service.chunk_jobs, "create_many", lambda new_jobs: None)  # the step stopped here
    monkeypatch.setattr(service.lane, "send_many", lambda new_jobs: None)
    service.start(batch.id)
    monkeypatch.undo()
    assert service.finish(batch.id) == "chunks recreated"
    assert lane.sent == [chunk_job_id(batch.id, i) for i in range(3)]
    assert jobs.get(lane.sent[2]).status is JobStatus.IN_QUEUE


def test_a_start_whose_file_read_aws_throttles_raises_and_the_batch_goes_on(world, monkeypatch):
    # An AWS "not now" is nobody's fault: the step is tried again (its message comes back), the batch
    # is not failed as if its file were unreadable.
    from botocore.exceptions import ClientError

    service, _, _, lane, _ = world
    batch = submit(service)
    real = service.files.record

    def throttled(*args, **kwargs):
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"},
                           "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetItem")

    monkeypatch.setattr(service.files, "record", throttled)
    with pytest.raises(ClientError):
        service.start(batch.id)
    assert service.batches.item(batch.id)["status"] == "validating"
    monkeypatch.setattr(service.files, "record", real)
    assert service.start(batch.id) == "started" and lane.sent
