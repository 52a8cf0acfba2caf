"""The jobs API end to end: HTTP -> API Lambda -> DynamoDB/SQS -> dispatch -> RunPod stand-in -> webhook."""

import requests
import standardwebhooks


def test_an_echo_job_completes_with_its_output_and_a_timeline(api):
    job_id = api.submit("echo", {"text": "hi"})
    job = api.wait(job_id)
    assert job["status"] == "COMPLETED"
    assert job["output"]["text"] == "hi"
    assert job["endpoint"] == "local" and job["attempts"] == 1
    statuses = [e["status"] for e in job["events"]]
    assert statuses == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"] or statuses == ["IN_QUEUE", "COMPLETED"]
    assert job["events"][-1]["actor"] == "webhook"


def test_a_sleep_job_is_seen_in_progress_before_it_completes(api):
    job_id = api.submit("sleep", {"seconds": 1})
    running = api.wait(job_id, statuses={"IN_PROGRESS", "COMPLETED"})
    assert running["status"] == "IN_PROGRESS"
    assert api.wait(job_id)["status"] == "COMPLETED"


def test_a_handler_error_fails_the_job_with_the_message(api):
    # Within the API's bounds, refused by the worker: its schemas take no unknown field.
    job = api.wait(api.submit("sleep", {"seconds": 1, "snooze": True}))
    assert job["status"] == "FAILED"
    assert "snooze" in job["error"]
    assert job["error_class"] == "terminal"


def test_listing_shows_the_tenants_jobs_newest_first_in_pages(api, other_tenant):
    mine = [api.submit() for _ in range(3)]
    other_tenant.submit()
    page = api.get("/v1/jobs", params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["cursor"]
    assert [j["id"] for j in page["items"]] == mine[::-1][:2]
    rest = api.get("/v1/jobs", params={"limit": 2, "cursor": page["cursor"]}).json()
    assert rest["items"][0]["id"] == mine[0]
    seen = {j["id"] for j in other_tenant.get("/v1/jobs").json()["items"]}
    assert not seen & set(mine)


def test_listing_filters_by_status(api):
    job_id = api.submit()
    api.wait(job_id)
    items = api.get("/v1/jobs", params={"status": "COMPLETED", "limit": 100}).json()["items"]
    assert job_id in {j["id"] for j in items} and {j["status"] for j in items} == {"COMPLETED"}


def test_cancel_stops_a_running_job_and_nothing_overwrites_it(api, stack):
    job_id = api.submit("sleep", {"seconds": 2})
    running = api.wait(job_id, statuses={"IN_PROGRESS"})
    response = api.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "CANCELLED"
    assert stack.standin.job_status(running["runpod_id"])["status"] == "CANCELLED"
    import time
    time.sleep(2.5)  # past the handler's own finish: its late result must not land
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "CANCELLED" and job["output"] is None


def test_cancelling_a_finished_job_is_a_conflict(api):
    job_id = api.submit()
    api.wait(job_id)
    response = api.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


def test_a_finished_job_is_pushed_to_the_callers_signed_webhook(api, stack, receiver):
    job_id = api.submit("echo", {"text": "ping"}, webhook=receiver.url)
    assert api.wait(job_id)["status"] == "COMPLETED"
    (call,) = receiver.wait_for(1)
    assert call["json"]["id"] == job_id and call["json"]["output"]["text"] == "ping"
    verified = standardwebhooks.Webhook(stack.dev_webhook_secret).verify(call["body"], call["headers"])
    assert verified["id"] == job_id


def test_the_same_idempotency_key_returns_the_same_job(api):
    body = {"task": "echo", "input": {"text": "once"}}
    first = api.post("/v1/jobs", body, headers={"Idempotency-Key": "k-1"})
    second = api.post("/v1/jobs", body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    changed = api.post("/v1/jobs", {"task": "echo", "input": {"text": "twice"}}, headers={"Idempotency-Key": "k-1"})
    assert changed.status_code == 409 and changed.json()["error"]["field"] == "Idempotency-Key"


def test_health_and_openapi_are_served(api):
    assert api.get("/health").json() == {"status": "ok"}
    spec = api.get("/openapi.json").json()
    assert "/v1/jobs" in spec["paths"] and "/v1/jobs/{job_id}/cancel" in spec["paths"]


def test_endpoints_are_listed_with_their_stand_in_base_url(api, stack):
    endpoints = {e["name"]: e for e in api.get("/v1/endpoints").json()}
    assert endpoints["local"]["base_url"] == stack.standin.api_base()
    assert endpoints["local"]["endpoint_id"] == "local"


def test_a_result_too_big_for_dynamodb_is_served_from_s3(api, receiver):
    text = "x" * 250_000  # the echo output carries it twice: ~500 KB, over DynamoDB's 400 KB item limit
    job = api.wait(api.submit("echo", {"text": text}, webhook=receiver.url), timeout=30)
    assert job["status"] == "COMPLETED", job.get("error")
    assert job["output"] is None and job["output_url"]
    fetched = requests.get(job["output_url"], timeout=10)
    assert fetched.status_code == 200 and fetched.json()["text"] == text
    (call,) = receiver.wait_for(1)
    assert call["json"]["output_url"] and call["json"]["output"] is None


def test_a_result_too_large_for_the_item_is_served_from_s3_and_the_input_is_shown_whole(api):
    """200 KB of input (kept in S3 from submission), ~400 KB of output (echo returns it twice): more than
    a DynamoDB item holds, so the result is kept in S3 too. (An output that fits alone but not beside an
    input kept in the item: tests/unit/test_jobs_store.py.)"""
    text = "x" * 200_000
    job = api.wait(api.submit("echo", {"text": text}), timeout=30)
    assert job["status"] == "COMPLETED", job.get("error")
    assert job["output"] is None and job["output_url"], "a completed job must carry its result"
    fetched = requests.get(job["output_url"], timeout=10)
    assert fetched.status_code == 200 and fetched.json()["text"] == text
    assert job["input"] == {"text": text}


def test_curl_style_form_encoded_json_is_accepted(api):
    """`curl -d '{...}'` sends Content-Type: application/x-www-form-urlencoded."""
    response = requests.post(api.url + "/v1/jobs", data='{"task":"echo","input":{"text":"hi"}}',
                             headers={**api.headers, "Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    assert response.status_code == 202 and response.json()["status"] == "IN_QUEUE"


def _seconds_between(start, end):
    from datetime import datetime

    return (datetime.fromisoformat(end.replace("Z", "+00:00"))
            - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()


def test_a_job_carries_its_deadline_its_own_or_its_tenants(api):
    import uuid

    from tests.support.stack import Api

    own = api.get(f"/v1/jobs/{api.submit('echo', {'text': 'soon'}, deadline_s=90, ttl_s=30)}").json()
    assert _seconds_between(own["created_at"], own["deadline_at"]) == 90
    assert _seconds_between(own["created_at"], own["start_by"]) == 30
    # The tier's default (STILLHOUSE_TENANT_LIMITS__DEADLINE_S); a deployed stack's is 24 h.
    default = api.get(f"/v1/jobs/{api.submit('echo', {'text': 'whenever'})}").json()
    assert _seconds_between(default["created_at"], default["deadline_at"]) == 120 and default.get("start_by") is None
    made = api.post("/v1/tenants", {"name": f"deadline-{uuid.uuid4().hex[:8]}", "limits": {"deadline_s": 600}})
    assert made.status_code == 201, made.text
    tenant = Api(api.url, made.json()["api_key"])
    theirs = tenant.get(f"/v1/jobs/{tenant.submit('echo', {'text': 'theirs'})}").json()
    assert _seconds_between(theirs["created_at"], theirs["deadline_at"]) == 600


def test_a_deadline_out_of_bounds_is_refused_naming_the_field(api):
    answer = api.post("/v1/jobs", {"task": "echo", "input": {"text": "x"}, "deadline_s": 86_401})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "deadline_s", answer.text
