"""The job store: conditional writes, a timeline per transition, per-tenant listing."""
import json

import boto3
import pytest
from botocore.exceptions import ClientError

from stillhouse.errors import InvalidRequest, JobNotFound, TransitionRefused
from stillhouse.jobs.model import CouncilMember, JobStatus
from stillhouse.jobs.store import JobStore, MemberStore
from stillhouse.outputs.spill import ResultStore, is_spilled
from tests.support.jobs import make_job


def member(model, runpod_id):
    return CouncilMember(model=model, stage="answer", endpoint="e1", runpod_id=runpod_id, task_token="tt",
                         started_ms=0)


@pytest.fixture
def store(jobs_table):
    return JobStore(jobs_table)


def test_a_created_job_reads_back_the_same_floats_included(store):
    store.create(make_job())
    job = store.get("j1")
    assert job.input == {"text": "hi", "x": 1.5}
    assert job.status is JobStatus.IN_QUEUE


def test_creating_the_same_id_twice_is_refused(store):
    store.create(make_job())
    with pytest.raises(TransitionRefused):
        store.create(make_job())


def test_another_tenants_job_looks_missing(store):
    store.create(make_job())
    with pytest.raises(JobNotFound):
        store.get("j1", tenant_id="other")


def test_each_transition_appends_an_event_with_actor_and_endpoint(store):
    store.create(make_job())
    store.transition("j1", JobStatus.IN_PROGRESS, actor="dispatch", endpoint="local", attempt=1,
                     fields={"runpod_id": "rp1"})
    job = store.transition("j1", JobStatus.COMPLETED, actor="webhook", endpoint="local", attempt=1,
                           fields={"output": {"embedding": [0.25, -1.0]}})
    assert [e.status for e in job.events] == [JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS, JobStatus.COMPLETED]
    assert [e.actor for e in job.events] == ["api", "dispatch", "webhook"]
    assert job.events[-1].endpoint == "local" and job.endpoint == "local"
    assert job.output == {"embedding": [0.25, -1.0]} and job.runpod_id == "rp1"


def test_a_terminal_job_never_changes_again(store):
    store.create(make_job())
    store.transition("j1", JobStatus.COMPLETED, actor="webhook", fields={"output": {"n": 1}})
    with pytest.raises(TransitionRefused):
        store.transition("j1", JobStatus.COMPLETED, actor="webhook", fields={"output": {"n": 2}})
    with pytest.raises(TransitionRefused):
        store.transition("j1", JobStatus.CANCELLED, actor="api")
    job = store.get("j1")
    assert job.output == {"n": 1} and len(job.events) == 2


def test_transition_can_demand_the_runpod_job_it_expects(store):
    store.create(make_job())
    store.transition("j1", JobStatus.IN_PROGRESS, actor="dispatch", fields={"runpod_id": "rp1"})
    with pytest.raises(TransitionRefused):
        store.transition("j1", JobStatus.COMPLETED, actor="webhook", expect_runpod_id="rp-other")


def test_only_one_of_two_deliveries_claims_an_attempt(store):
    store.create(make_job())
    first = store.claim_attempt("j1", 0)
    second = store.claim_attempt("j1", 0)
    assert first is not None and first.attempts == 1
    assert second is None


def test_no_attempt_is_claimed_on_a_running_or_finished_job(store):
    store.create(make_job())
    store.transition("j1", JobStatus.CANCELLED, actor="api")
    assert store.claim_attempt("j1", 0) is None


def test_a_claim_writes_only_the_attempt_so_no_index_entry_moves(store):
    created = store.create(make_job())
    claimed = store.claim_attempt("j1", 0)
    assert claimed.updated_at == created.updated_at and claimed.status is JobStatus.IN_QUEUE


def test_a_queued_only_claim_leaves_a_job_the_recovery_workflow_holds(store):
    store.create(make_job())
    store.transition("j1", JobStatus.RETRYING, actor="recovery")
    assert store.claim_attempt("j1", 0, queued_only=True) is None
    assert store.claim_attempt("j1", 0) is not None  # the workflow's own claim


def test_listing_is_per_tenant_newest_first_and_paginated(store):
    for i in range(5):
        store.create(make_job(f"a{i}"))
    store.create(make_job("b0", tenant="other"))
    page1, cursor = store.list("acme", limit=2)
    page2, cursor2 = store.list("acme", limit=2, cursor=cursor)
    page3, cursor3 = store.list("acme", limit=2, cursor=cursor2)
    ids = [j.id for j in page1 + page2 + page3]
    assert sorted(ids) == ["a0", "a1", "a2", "a3", "a4"]
    assert len(set(ids)) == 5


def test_listing_filters_by_status(store):
    store.create(make_job("a"))
    store.create(make_job("b"))
    store.transition("b", JobStatus.CANCELLED, actor="api")
    jobs, _ = store.list("acme", status=JobStatus.CANCELLED)
    assert [j.id for j in jobs] == ["b"]


def test_a_forged_cursor_is_a_clear_400(store):
    with pytest.raises(InvalidRequest) as err:
        store.list("acme", cursor="not-base64!")
    assert err.value.field == "cursor"


def test_a_council_member_is_recorded_only_while_the_job_lives(store, jobs_table):
    members = MemberStore(jobs_table)
    store.create(make_job(members={}))
    assert members.put("j1", "answer-0", member("m1", "rp1"))
    assert members.finish("j1", "answer-0") and not members.finish("j1", "answer-0")  # taken once
    store.transition("j1", JobStatus.CANCELLED, actor="api")
    assert not members.put("j1", "answer-1", member("m2", "rp2"))
    assert set(store.get("j1").members) == {"answer-0"}


def test_an_output_that_fits_alone_but_not_beside_the_input_goes_to_s3(jobs_table):
    """DynamoDB's 400 KB is for the whole item: 150 KB of input leaves no room for a 300 KB output."""
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="results")
    store = JobStore(jobs_table, ResultStore(s3, "results"))
    job = store.create(make_job("big").model_copy(update={"input": {"text": "x" * 150_000}}))
    output = {"text": "y" * 300_000}
    done = store.transition("big", JobStatus.COMPLETED, actor="webhook", fields={"output": output}, current=job)
    assert done.status is JobStatus.COMPLETED and is_spilled(done.output)
    kept = s3.get_object(Bucket="results", Key=done.output["$s3"])["Body"].read()
    assert json.loads(kept) == output
    assert store.get("big").output == done.output


def test_when_dynamodb_refuses_the_items_size_the_output_goes_to_s3_and_the_write_is_made_again(jobs_table):
    """The room is estimated; DynamoDB has the last word (a real refusal changes nothing, so one retry)."""
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="results")

    class RefusesFirstBigWrite:
        def __init__(self, table):
            self.table, self.refused = table, 0

        def __getattr__(self, name):
            return getattr(self.table, name)

        def update_item(self, **request):
            if not self.refused and any(len(str(v)) > 1000 for v in request["ExpressionAttributeValues"].values()):
                self.refused += 1
                raise ClientError({"Error": {"Code": "ValidationException",
                                             "Message": "Item size has exceeded the maximum allowed size"}}, "UpdateItem")
            return self.table.update_item(**request)

    table = RefusesFirstBigWrite(jobs_table)
    store = JobStore(table, ResultStore(s3, "results"))
    store.create(make_job("j1"))
    done = store.transition("j1", JobStatus.COMPLETED, actor="webhook", fields={"output": {"text": "y" * 5000}})
    assert table.refused == 1 and is_spilled(done.output) and done.status is JobStatus.COMPLETED
