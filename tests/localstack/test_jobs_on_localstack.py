"""The jobs API end to end with LocalStack as AWS: HTTP -> API Lambda -> DynamoDB Local / LocalStack SQS ->
dispatch -> RunPod stand-in running the real GPU handler -> webhook -> caller's signed webhook, S3, cache."""
import json
import time
import uuid

import pytest
import requests

from stillhouse import aws
from stillhouse.config import get_settings
from stillhouse.delivery.signing import verify_webhook
from tests.support.stack import Api


def test_the_stack_runs_on_localstack_not_moto(stack):
    settings = get_settings()
    assert settings.localstack and not settings.aws_endpoint_url
    tables = aws.client("dynamodb").list_tables()["TableNames"]
    assert settings.jobs_table in tables and stack.moto.stack_name in settings.jobs_table
    assert aws.client("dynamodb").meta.endpoint_url == stack.moto.url  # localstack-client's session, its port
    assert settings.normal_queue_url.startswith(stack.moto.url + "/queue/")


def test_an_echo_job_completes_through_the_real_worker_and_is_pushed_signed(api, receiver, stack):
    job_id = api.submit("echo", {"text": "ping"}, webhook=receiver.url)
    job = api.wait(job_id, timeout=30)
    assert job["status"] == "COMPLETED", job.get("error")
    assert job["output"]["text"] == "ping"
    assert job["endpoint"] == "local" and job["attempts"] == 1
    assert job["events"][0]["status"] == "IN_QUEUE" and job["events"][-1]["actor"] == "webhook"
    (call,) = receiver.wait_for(1)
    assert call["json"]["id"] == job_id and call["json"]["output"]["text"] == "ping"
    assert verify_webhook(stack.dev_webhook_secret, call["body"], call["headers"])


def test_a_handler_error_fails_the_job_with_the_message(api):
    # Within the API's bounds, refused by the worker: its schemas take no unknown field.
    job = api.wait(api.submit("sleep", {"seconds": 1, "snooze": True}), timeout=30)
    assert job["status"] == "FAILED" and "snooze" in job["error"] and job["error_class"] == "terminal"


def test_listing_pages_newest_first_per_tenant_on_dynamodb_local(api, other_tenant):
    mine = [api.submit() for _ in range(3)]
    other_tenant.submit()
    page = api.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["items"]] == mine[::-1][:2] and page["cursor"]
    rest = api.get("/v1/jobs", params={"limit": 2, "cursor": page["cursor"]}).json()
    assert rest["items"][0]["id"] == mine[0]
    assert not {j["id"] for j in other_tenant.get("/v1/jobs").json()["items"]} & set(mine)


def test_the_same_idempotency_key_returns_the_same_job(api):
    key = f"k-{uuid.uuid4().hex[:8]}"
    first = api.post("/v1/jobs", {"task": "echo", "input": {"text": "once"}}, headers={"Idempotency-Key": key})
    second = api.post("/v1/jobs", {"task": "echo", "input": {"text": "once"}}, headers={"Idempotency-Key": key})
    assert first.status_code == second.status_code == 202 and first.json()["id"] == second.json()["id"]
    changed = api.post("/v1/jobs", {"task": "echo", "input": {"text": "twice"}}, headers={"Idempotency-Key": key})
    assert changed.status_code == 409 and changed.json()["error"]["field"] == "Idempotency-Key"


def test_cancel_stops_a_running_job(api, stack):
    job_id = api.submit("sleep", {"seconds": 2})
    running = api.wait(job_id, statuses={"IN_PROGRESS"})
    response = api.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "CANCELLED"
    assert stack.standin.job_status(running["runpod_id"])["status"] == "CANCELLED"


@pytest.mark.parametrize(("body", "status", "field"), [
    ('{"task": "echo", "input": ', 400, "body"),
    ('{"task": "paint", "input": {}}', 422, "task"),
    ('{"task": "echo"}', 422, "input"),
    ('{"task": "echo", "input": {}, "webhook": "not a url"}', 422, "webhook"),
])
def test_bad_input_is_refused_naming_the_field_and_nothing_is_written(stack, body, status, field):
    api = Api(stack.url, stack.create_api_key(f"bad-input-{uuid.uuid4().hex[:8]}"))
    response = requests.post(api.url + "/v1/jobs", data=body, headers=api.headers, timeout=10)
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field
    assert api.get("/v1/jobs", params={"limit": 100}).json()["items"] == []


def test_no_key_is_401_and_another_tenants_job_is_404(stack, api, other_tenant):
    assert requests.get(stack.url + "/v1/jobs", timeout=10).status_code == 401
    job_id = api.submit()
    assert other_tenant.get(f"/v1/jobs/{job_id}").status_code == 404


def test_a_result_too_big_for_dynamodb_is_spilled_to_localstack_s3(api, receiver):
    text = "x" * 250_000  # the echo output carries it twice: ~500 KB, over DynamoDB's 400 KB item limit
    job = api.wait(api.submit("echo", {"text": text}, webhook=receiver.url), timeout=30)
    assert job["status"] == "COMPLETED", job.get("error")
    assert job["output"] is None and job["output_url"]
    bucket = get_settings().results_bucket
    assert aws.client("s3").list_objects_v2(Bucket=bucket)["KeyCount"] >= 1
    fetched = requests.get(job["output_url"], timeout=10)  # a presigned LocalStack URL
    assert fetched.status_code == 200 and fetched.json()["text"] == text
    (call,) = receiver.wait_for(1)
    assert call["json"]["output_url"] and call["json"]["output"] is None


def test_the_same_cached_request_is_answered_from_the_first_result(api, stack):
    body = {"text": f"cache me {uuid.uuid4().hex[:6]}"}
    first = api.wait(api.submit("echo", body, cache=True), timeout=30)
    assert first["status"] == "COMPLETED"
    runs_before = stack.standin.stats("local").get("COMPLETED", 0)
    response = api.post("/v1/jobs", {"task": "echo", "input": body, "cache": True})
    assert response.status_code == 202 and response.json()["status"] == "COMPLETED"
    second = api.get(f"/v1/jobs/{response.json()['id']}").json()
    assert second["output"] == first["output"] and second["cached_from"] == first["id"]
    assert stack.standin.stats("local").get("COMPLETED", 0) == runs_before  # the worker never saw it


@pytest.mark.skip(reason="LocalStack runs Lambda only in Docker, which these machines lack: the workflows' "
                         "Lambda tasks cannot run (tests/integration/test_council.py and test_recovery.py run them on moto)")
def test_council_and_recovery_workflows():
    """Placeholder that carries the reason into the tier's report."""


def test_a_batch_runs_its_chunks_through_localstack_s3_sqs_and_dynamodb(api):
    """The Batch API's own calls (multipart upload to S3, BatchWriteItem, SendMessageBatch, BatchGetItem) on
    LocalStack, end to end: every line back once."""
    rows = "".join(json.dumps({"custom_id": f"ls-{i}", "method": "POST", "url": "/v1/chat/completions",
                               "body": {"model": "echo-a", "messages": [{"role": "user", "content": f"q{i}"}]}}) + "\n"
                   for i in range(5))
    uploaded = requests.post(f"{api.url}/v1/files", headers=api.headers, timeout=30,
                             files={"file": ("in.jsonl", rows.encode(), "application/jsonl")}, data={"purpose": "batch"})
    assert uploaded.status_code == 200, uploaded.text
    batch = api.post("/v1/batches", {"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions",
                                     "completion_window": "24h"}).json()
    deadline = time.monotonic() + 60
    while (batch := api.get(f"/v1/batches/{batch['id']}").json())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.3)
    assert batch["status"] == "completed" and batch["stillhouse"]["chunks"] == 3
    out = api.get(f"/v1/files/{batch['output_file_id']}/content").text.splitlines()
    answers = {json.loads(line)["custom_id"]: json.loads(line)["response"]["body"]["choices"][0]["message"]["content"]
               for line in out}
    assert answers == {f"ls-{i}": f"echo-a says: q{i}" for i in range(5)}
