"""Faults in AWS itself (stillhouse_local.aws_faults, on the clients factory every function uses): an
accepted job (202) is never lost, a refused submission (503 + Retry-After) leaves nothing behind, and no
job is written terminal twice."""
import itertools
import time
import uuid

import pytest
from botocore.exceptions import ClientError
from stillhouse_local.aws_faults import AwsFaults

from stillhouse import aws
from stillhouse.config import get_settings
from stillhouse.jobs.status import TERMINAL
from stillhouse.tenants.quotas import SHARDS_MAX, shard_key
from tests.support.stack import Api, settled

TERMINAL_NAMES = {s.value for s in TERMINAL}
_tenants = itertools.count()


@pytest.fixture
def aws_faults(stack):
    faults = AwsFaults(seed=23).install()
    yield faults
    faults.uninstall()


@pytest.fixture
def tenant(stack):
    """An API client of a tenant of its own: its quota item holds only this test's jobs."""
    name = f"awsfaults-{next(_tenants)}-{uuid.uuid4().hex[:6]}"
    return name, Api(stack.url, stack.create_api_key(name))


def in_flight(tenant_id):
    """The places the tenant's jobs hold, over all its quota shards."""
    table = aws.table(get_settings().tenants_table)
    items = (table.get_item(Key={"tenant_id": shard_key(tenant_id, k)}, ConsistentRead=True).get("Item") or {}
             for k in range(SHARDS_MAX))
    return sum(int(item.get("held") or 0) for item in items)


def job_ids(api):
    return {job["id"] for job in api.get("/v1/jobs?limit=100").json()["items"]}


def sweep(stack, ahead_s=0):
    return stack.functions.get("SweeperFunction").invoke({"ahead_s": ahead_s})


def terminal_events(job):
    return [e for e in job["events"] if e["status"] in TERMINAL_NAMES]


def test_a_submission_refused_by_a_dynamodb_throttle_is_503_with_retry_after_and_leaves_nothing(
        tenant, aws_faults):
    tenant_id, api = tenant
    before_jobs, before_quota = job_ids(api), in_flight(tenant_id)
    aws_faults.set_rates({("dynamodb", "PutItem"): 1.0})  # the job's item is never written
    refused = api.post("/v1/jobs", {"task": "echo", "input": {"text": "hi"}})
    aws_faults.clear()
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "unavailable"
    assert any(kind.startswith("dynamodb.PutItem/") for kind in aws_faults.counts())
    # Nothing behind: no job, and the in-flight place its admission took was given back.
    assert job_ids(api) == before_jobs
    assert in_flight(tenant_id) == before_quota


def kept_inputs():
    listing = aws.client("s3").list_objects_v2(Bucket=get_settings().results_bucket, Prefix="inputs/")
    return {o["Key"] for o in listing.get("Contents", [])}


@pytest.mark.parametrize("refused", [("s3", "PutObject"), ("dynamodb", "PutItem")])
def test_a_large_input_refused_at_either_write_is_503_and_leaves_neither_job_nor_kept_input(
        tenant, aws_faults, refused):
    """An input over a few KB is written to S3 before the job's item: whichever write AWS refuses, the
    caller is told 503, and neither the job nor its kept input stays behind."""
    tenant_id, api = tenant
    before_jobs, before_quota, before_inputs = job_ids(api), in_flight(tenant_id), kept_inputs()
    aws_faults.set_rates({refused: 1.0})
    answer = api.post("/v1/jobs", {"task": "echo", "input": {"text": "x" * 50_000}})
    aws_faults.clear()
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "unavailable"
    assert job_ids(api) == before_jobs
    assert in_flight(tenant_id) == before_quota
    assert kept_inputs() == before_inputs


def test_a_refused_keyed_submission_leaves_no_record_and_the_same_request_then_makes_one_job(tenant, aws_faults):
    _, api = tenant
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"task": "echo", "input": {"text": "again"}}
    aws_faults.set_rates({("dynamodb", "PutItem"): 1.0})
    refused = api.post("/v1/jobs", body, headers=key)
    aws_faults.clear()
    assert refused.status_code == 503 and "Retry-After" in refused.headers
    # No record replays the failure: the same request, sent again, is a job of its own, which completes.
    accepted = api.post("/v1/jobs", body, headers=key)
    assert accepted.status_code == 202, accepted.text
    assert api.post("/v1/jobs", body, headers=key).json()["id"] == accepted.json()["id"]
    assert api.wait(accepted.json()["id"])["status"] == "COMPLETED"


def test_a_job_whose_queue_message_failed_is_accepted_and_the_sweeper_sends_it(stack, tenant, aws_faults):
    tenant_id, api = tenant
    aws_faults.set_rates({("sqs", "SendMessage"): 1.0})
    accepted = api.post("/v1/jobs", {"task": "echo", "input": {"text": "late"}})
    aws_faults.clear()
    assert accepted.status_code == 202, accepted.text  # stored is accepted: never a 503 for a job that exists
    job_id = accepted.json()["id"]
    assert any(kind.startswith("sqs.SendMessage/") for kind in aws_faults.counts())
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "IN_QUEUE"
    assert in_flight(tenant_id) == 1  # the tenant's one job holds its place until it ends
    # Due at once: the sweeper's next ordinary round (nothing ahead) sends its message again.
    assert settled(lambda: sweep(stack).get("requeued", 0), lambda n: n >= 1, timeout=10, interval=0.5) >= 1
    job = api.wait(job_id)
    assert job["status"] == "COMPLETED"
    assert len(terminal_events(job)) == 1
    # Its end gave its place back (the terminal write's give-back, tenants.quotas).
    assert settled(lambda: in_flight(tenant_id), lambda n: n == 0, timeout=10, interval=0.2) == 0


def test_openai_routes_and_batch_creation_answer_503_with_retry_after_in_openais_shape(stack, tenant, aws_faults):
    _, api = tenant
    aws_faults.set_rates({("dynamodb", "*"): 1.0})
    chat = api.post("/v1/chat/completions", {"model": "echo", "messages": [{"role": "user", "content": "hi"}]})
    batch = api.post("/v1/batches", {"input_file_id": "file-x", "endpoint": "/v1/chat/completions",
                                     "completion_window": "24h"})
    aws_faults.clear()
    for answer in (chat, batch):
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["Retry-After"]) >= 1
        error = answer.json()["error"]
        assert error["type"] == "server_error" and error["code"] == "unavailable"


def test_with_faults_across_aws_every_accepted_job_completes_once(stack, tenant, aws_faults):
    _, api = tenant
    aws_faults.set_rates({("dynamodb", "*"): 0.05, ("sqs", "SendMessage"): 0.2, ("sqs", "DeleteMessage"): 0.2,
                          ("s3", "PutObject"): 0.5, ("stepfunctions", "StartExecution"): 0.5})
    accepted, refused = [], 0
    for n in range(20):
        key = {"Idempotency-Key": f"aws-faults-{uuid.uuid4().hex}"}
        body = {"task": "echo", "input": {"text": f"job {n}"}}
        for _ in range(20):  # a caller that honours Retry-After, sending the same request again
            answer = api.post("/v1/jobs", body, headers=key)
            if answer.status_code != 503:
                break
            refused += 1
            assert "Retry-After" in answer.headers
            time.sleep(0.05)  # a short Retry-After: the test's faults are drawn per call, not per second
        assert answer.status_code == 202, answer.text
        accepted.append(answer.json()["id"])
    assert len(set(accepted)) == len(accepted)

    def unfinished():
        try:
            sweep(stack, ahead_s=3600)  # as the schedule's rounds would, in time: the faults stay on
        except ClientError:
            pass  # a round AWS throttled fails as a whole, as a scheduled run would: the next one runs
        # A read may itself be throttled (503): that job is looked at again.
        return [i for i in accepted if api.get(f"/v1/jobs/{i}").json().get("status") not in TERMINAL_NAMES]

    left = settled(unfinished, lambda ids: not ids, timeout=90, interval=1.0)
    faults = aws_faults.counts()
    aws_faults.clear()
    assert left == [], f"not finished: {left}; faults injected: {faults}"
    jobs = [api.get(f"/v1/jobs/{i}").json() for i in accepted]
    assert [j["status"] for j in jobs] == ["COMPLETED"] * len(jobs), (faults, [j.get("error") for j in jobs])
    assert all(len(terminal_events(j)) == 1 for j in jobs)
    assert aws_faults.total() > 0
