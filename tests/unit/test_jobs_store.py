"""The job store: conditional writes, a timeline per transition, per-tenant listing."""
import json

import boto3
import pytest
from botocore.exceptions import ClientError

from stillhouse.errors import InvalidRequest, JobNotFound, TransitionRefused
from stillhouse.jobs.model import CouncilMember, JobStatus
from stillhouse.jobs.store import INDEX_SHARDS, JobStore, MemberStore, index_shard
from stillhouse.outputs.spill import ResultStore, result_key
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


def spread_ids(count):
    """`count` job ids whose index shards cover every partition (and several share one)."""
    ids = [f"job-{n:03}" for n in range(count)]
    assert len({index_shard(i) for i in ids}) == INDEX_SHARDS
    return ids


def test_a_stale_cursor_of_the_unsharded_index_still_continues_the_listing(store):
    import base64

    for i in range(3):
        store.create(make_job(f"a{i}"))
    newest, _ = store.list("acme", limit=1)
    sk = f"{newest[0].created_at}#{newest[0].id}"
    old = base64.urlsafe_b64encode(json.dumps({"id": newest[0].id, "tenant_id": "acme", "tenant_sk": sk}).encode())
    rest, _ = store.list("acme", limit=5, cursor=old.decode())
    assert newest[0].id not in [j.id for j in rest] and len(rest) == 2


def test_listing_over_every_index_partition_pages_through_each_job_once_newest_first(store, jobs_table):
    ids = spread_ids(40)
    for n, job_id in enumerate(ids):  # created_at in id order, a few sharing a millisecond
        at = f"2026-01-01T00:00:{n // 2:02}.000Z"
        store.create(make_job(job_id).model_copy(update={"created_at": at, "updated_at": at}))
    store.create(make_job("someone-else", tenant="other"))
    shown, cursor, pages = [], None, 0
    while True:
        page, cursor = store.list("acme", limit=7, cursor=cursor)
        assert len(page) <= 7
        shown += [j.id for j in page]
        pages += 1
        if cursor is None:
            break
    assert shown == list(reversed(ids))  # every job once, newest first, across 16 partitions
    assert pages == 6
    parts = {jobs_table.get_item(Key={"id": i})["Item"]["tenant_part"] for i in ids}
    assert parts == {f"acme#{k}" for k in range(INDEX_SHARDS)}


def test_a_status_filtered_listing_pages_through_the_matching_jobs_only(store):
    ids = spread_ids(40)
    for n, job_id in enumerate(ids):
        at = f"2026-01-01T00:01:{n:02}.000Z"
        store.create(make_job(job_id).model_copy(update={"created_at": at, "updated_at": at}))
    cancelled = ids[::3]
    for job_id in cancelled:
        store.transition(job_id, JobStatus.CANCELLED, actor="api")
    shown, cursor = [], None
    while True:
        page, cursor = store.list("acme", status=JobStatus.CANCELLED, limit=4, cursor=cursor)
        assert all(j.status is JobStatus.CANCELLED for j in page)
        shown += [j.id for j in page]
        if cursor is None:
            break
    assert shown == list(reversed(cancelled))


def test_another_tenants_cursor_is_not_found(store):
    from stillhouse.errors import NotFound

    for i in range(3):
        store.create(make_job(f"a{i}"))
    _, cursor = store.list("acme", limit=1)
    with pytest.raises(NotFound):
        store.list("other", cursor=cursor)


def test_due_merges_every_partition_longest_overdue_first_up_to_the_limit(store, jobs_table):
    ids = spread_ids(40)
    for n, job_id in enumerate(ids):
        store.create(make_job(job_id))
        due = f"2026-01-01T00:00:{59 - n:02}.000Z"  # the last created is the longest overdue
        store.annotate(job_id, {"due_at": due})
    store.create(make_job("later"))
    store.annotate("later", {"due_at": "2026-01-02T00:00:00.000Z"})
    by = "2026-01-01T12:00:00.000Z"
    assert store.due(JobStatus.IN_QUEUE, by, limit=10) == list(reversed(ids))[:10]
    assert store.due(JobStatus.IN_QUEUE, by) == list(reversed(ids))  # "later" is not due yet
    store.transition(ids[-1], JobStatus.IN_PROGRESS, actor="dispatch", fields={"due_at": "2026-01-01T00:00:00.000Z"})
    assert store.due(JobStatus.IN_QUEUE, by, limit=1) == [ids[-2]]
    assert store.due(JobStatus.IN_PROGRESS, by) == [ids[-1]]
    assert jobs_table.get_item(Key={"id": ids[-1]})["Item"]["due_part"] == f"IN_PROGRESS#{index_shard(ids[-1])}"


def test_a_finished_job_leaves_the_due_index_unless_its_notice_is_owed(store):
    store.create(make_job("quiet"))
    store.create(make_job("hooked", webhook="https://example.invalid/hook"))
    for job_id in ("quiet", "hooked"):
        store.transition(job_id, JobStatus.COMPLETED, actor="webhook", fields={"output": {}},
                         current=store.get(job_id))
    far = "2999-01-01T00:00:00.000Z"
    assert store.due(JobStatus.COMPLETED, far) == ["hooked"]
    assert store.due(JobStatus.IN_QUEUE, far) == []


def test_the_backfill_gives_jobs_written_before_the_sharded_indexes_their_partitions(store, jobs_table):
    for job_id, status in (("old-q", "IN_QUEUE"), ("old-done", "COMPLETED")):
        jobs_table.put_item(Item={"id": job_id, "tenant_id": "acme", "status": status, "task": "echo",
                                  "input": "{}", "created_at": "2025-01-01T00:00:00.000Z",
                                  "updated_at": "2025-01-01T00:00:00.000Z", "events": [],
                                  "tenant_sk": f"2025-01-01T00:00:00.000Z#{job_id}",
                                  "due_at": "2025-01-01T00:05:00.000Z"})
    store.create(make_job("new"))
    assert [j.id for j in store.list("acme")[0]] == ["new"]  # unseen until backfilled
    assert store.backfill_index_parts() == 2
    assert store.backfill_index_parts() == 0  # nothing left
    assert sorted(j.id for j in store.list("acme")[0]) == ["new", "old-done", "old-q"]
    assert store.due(JobStatus.IN_QUEUE, "2025-01-01T00:10:00.000Z") == ["old-q"]


def test_the_backfill_leaves_a_job_whose_status_moved_since_it_was_read(store, jobs_table):
    jobs_table.put_item(Item={"id": "old", "tenant_id": "acme", "status": "IN_QUEUE", "task": "echo",
                              "input": "{}", "created_at": "2025-01-01T00:00:00.000Z",
                              "updated_at": "2025-01-01T00:00:00.000Z", "events": []})
    real_update = jobs_table.update_item

    class MovesFirst:  # the job moves between the backfill's scan and its write
        meta, name = jobs_table.meta, jobs_table.name

        def update_item(self, **kwargs):
            jobs_table.update_item(Key={"id": "old"}, UpdateExpression="SET #s = :c",
                                   ExpressionAttributeNames={"#s": "status"},
                                   ExpressionAttributeValues={":c": "CANCELLED"})
            return real_update(**kwargs)

    assert JobStore(MovesFirst()).backfill_index_parts() == 0
    assert "due_part" not in jobs_table.get_item(Key={"id": "old"})["Item"]


def test_a_council_member_is_recorded_only_while_the_job_lives(store, jobs_table):
    members = MemberStore(jobs_table)
    store.create(make_job(members={}))
    assert members.put("j1", "answer-0", member("m1", "rp1"))
    assert members.finish("j1", "answer-0") and not members.finish("j1", "answer-0")  # taken once
    store.transition("j1", JobStatus.CANCELLED, actor="api")
    assert not members.put("j1", "answer-1", member("m2", "rp2"))
    assert set(store.get("j1").members) == {"answer-0"}


def test_an_output_that_fits_alone_but_not_beside_the_input_goes_to_s3(jobs_table):
    """DynamoDB's 400 KB is for the whole item: 150 KB of input kept in the item (a store told to keep
    inputs inline) leaves no room for a 300 KB output."""
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="results")
    store = JobStore(jobs_table, ResultStore(s3, "results", input_limit=1_000_000))
    job = store.create(make_job("big").model_copy(update={"input": {"text": "x" * 150_000}}))
    output = {"text": "y" * 300_000}
    done = store.transition("big", JobStatus.COMPLETED, actor="webhook", fields={"output": output}, current=job)
    assert done.status is JobStatus.COMPLETED and done.output is None and done.output_ref
    kept = s3.get_object(Bucket="results", Key=result_key("big"))["Body"].read()
    assert json.loads(kept) == output
    assert store.get("big").output_ref == done.output_ref


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
    assert table.refused == 1 and done.output is None and done.output_ref and done.status is JobStatus.COMPLETED


def test_an_output_crafted_to_look_like_a_kept_result_is_only_an_output(jobs_table):
    """The reference to a kept result is a field of its own, and the S3 key comes from the job id: an
    output that imitates a reference never yields a link, least of all to another job's result."""
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="results")
    results = ResultStore(s3, "results")
    store = JobStore(jobs_table, results)
    store.create(make_job("victim"))
    store.transition("victim", JobStatus.COMPLETED, actor="webhook", fields={"output": {"text": "z" * 400_000}})
    store.create(make_job("attacker", tenant="mallory"))
    crafted = {"$s3": result_key("victim"), "bytes": 10, "key": result_key("victim")}
    done = store.transition("attacker", JobStatus.COMPLETED, actor="webhook", fields={"output": crafted})
    assert done.output == crafted and done.output_ref is None
    assert results.url(done.id, done.output_ref) is None
    assert "victim" in results.url("victim", store.get("victim").output_ref)
