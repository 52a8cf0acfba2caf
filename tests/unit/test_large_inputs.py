"""Inputs over a few KB are kept in S3, written once at submission: the job's item, written on every
transition, stays about 1 KB whatever the input weighs, and every read of the job gives the input back."""
import json

import boto3
import pytest
from botocore.exceptions import ClientError

from stillhouse.jobs.model import JobStatus
from stillhouse.jobs.store import JobStore
from stillhouse.outputs.spill import INPUT_INLINE_LIMIT, ResultStore, input_key
from tests.support.jobs import make_job

#: What a job's item may weigh beside an input kept in S3 (a fresh job's fields, a short timeline).
ITEM_BOUND = 1_500


@pytest.fixture
def s3(aws_mock):
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="results")
    return client


@pytest.fixture
def store(jobs_table, s3):
    return JobStore(jobs_table, ResultStore(s3, "results"))


def stored_item_bytes(jobs_table, job_id):
    item = jobs_table.get_item(Key={"id": job_id}, ConsistentRead=True)["Item"]
    return len(json.dumps(item, separators=(",", ":"), default=str))


def with_input(job_id, value):
    return make_job(job_id).model_copy(update={"input": value})


def big_input(kb):
    return {"prompt": "word " * (kb * 1024 // 5), "max_new_tokens": 8}


@pytest.mark.parametrize("kb", [10, 100, 250])
def test_the_items_size_does_not_grow_with_the_input_and_every_transition_keeps_it_so(store, jobs_table, s3, kb):
    value = big_input(kb)
    store.create(with_input("big", value))
    assert stored_item_bytes(jobs_table, "big") < ITEM_BOUND
    kept = s3.get_object(Bucket="results", Key=input_key("big"))["Body"].read()
    assert json.loads(kept) == value
    claimed = store.claim_attempt("big", 0)
    started = store.transition("big", JobStatus.IN_PROGRESS, actor="dispatch", endpoint="local", attempt=1,
                               fields={"runpod_id": "rp1"})
    done = store.transition("big", JobStatus.COMPLETED, actor="webhook", endpoint="local", attempt=1,
                            fields={"runpod_id": "rp1", "output": {"text": "short"}},
                            expect_runpod_id="rp1", expect_attempts=1, expect_uncached=True, expect_room=True)
    assert stored_item_bytes(jobs_table, "big") < ITEM_BOUND
    # Each read of the job has its input: what dispatch sends, what the GET view shows.
    assert claimed.input == started.input == done.input == store.get("big").input == value
    assert done.status is JobStatus.COMPLETED and done.output == {"text": "short"}


def test_a_small_input_stays_in_the_item_and_nothing_goes_to_s3(store, jobs_table, s3):
    small = {"text": "x" * (INPUT_INLINE_LIMIT - 20)}
    store.create(with_input("small", small))
    item = jobs_table.get_item(Key={"id": "small"})["Item"]
    assert json.loads(item["input"]) == small and "input_ref" not in item
    assert s3.list_objects_v2(Bucket="results").get("KeyCount") == 0


def test_a_fresh_process_reads_the_input_from_s3(jobs_table, s3):
    value = big_input(50)
    JobStore(jobs_table, ResultStore(s3, "results")).create(with_input("big", value))
    elsewhere = JobStore(jobs_table, ResultStore(s3, "results"))  # another function: nothing in memory
    assert elsewhere.get("big").input == value


def test_an_input_that_s3_refuses_stores_no_job(jobs_table, s3):
    class Refusing:
        exceptions = s3.exceptions

        def put_object(self, **kw):
            raise ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}},
                              "PutObject")

    store = JobStore(jobs_table, ResultStore(Refusing(), "results"))
    with pytest.raises(ClientError):
        store.create(with_input("big", big_input(20)))
    assert "Item" not in jobs_table.get_item(Key={"id": "big"})


def test_discarding_a_refused_submission_removes_its_kept_input(store, s3):
    store.create(with_input("big", big_input(20)))
    assert store.discard("big")
    assert s3.list_objects_v2(Bucket="results").get("KeyCount") == 0


def test_a_finished_job_whose_input_has_expired_is_still_shown(jobs_table, s3):
    store = JobStore(jobs_table, ResultStore(s3, "results"))
    store.create(with_input("big", big_input(20)))
    store.transition("big", JobStatus.COMPLETED, actor="webhook", fields={"output": {"n": 1}})
    s3.delete_object(Bucket="results", Key=input_key("big"))  # what the bucket's lifecycle does
    fresh = JobStore(jobs_table, ResultStore(s3, "results"))
    job = fresh.get("big")
    assert job.status is JobStatus.COMPLETED and job.output == {"n": 1} and job.input == {}


def test_a_live_job_whose_input_cannot_be_read_is_not_run_without_it(jobs_table, s3):
    store = JobStore(jobs_table, ResultStore(s3, "results"))
    store.create(with_input("big", big_input(20)))
    s3.delete_object(Bucket="results", Key=input_key("big"))
    with pytest.raises(ClientError):
        JobStore(jobs_table, ResultStore(s3, "results")).get("big")
