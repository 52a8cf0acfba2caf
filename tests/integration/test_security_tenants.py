"""Security of tenants, keys, quotas and input bounds, through the embedded stack's HTTP API
(docs/security.md's table names these tests)."""
import json
import os
import time
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from tests.support.stack import Api, settled


def new_tenant(api, **limits):
    """A tenant made through the admin API: (its Api client, the answer that made it)."""
    body = {"name": f"tenant-{uuid.uuid4().hex[:8]}", **({"limits": limits} if limits else {})}
    response = api.post("/v1/tenants", body)
    assert response.status_code == 201, response.text
    made = response.json()
    return Api(api.url, made["api_key"]), made


@pytest.fixture
def tenant_a(api):
    return new_tenant(api)[0]


@pytest.fixture
def tenant_b(api):
    return new_tenant(api)[0]


def error_of(response):
    return response.json()["error"]


# --- keys -----------------------------------------------------------------------------------------------

def test_no_key_a_bad_key_a_revoked_key_and_an_expired_key_are_401(api, stack):
    tenant, made = new_tenant(api)
    assert tenant.get("/v1/jobs").status_code == 200
    assert requests.get(stack.url + "/v1/jobs", timeout=5).status_code == 401
    assert Api(stack.url, "sh_" + "x" * 43).get("/v1/jobs").status_code == 401

    second = tenant.post(f"/v1/tenants/{made['tenant']['tenant_id']}/keys", {}).json()
    assert api.delete(f"/v1/keys/{second['key_id']}").status_code == 200
    revoked = Api(stack.url, second["api_key"]).get("/v1/jobs")
    assert revoked.status_code == 401 and error_of(revoked)["field"] == "Authorization"

    minted = time.monotonic()
    short = tenant.post(f"/v1/tenants/{made['tenant']['tenant_id']}/keys", {"expires_in_s": 4}).json()
    assert short["expires_at"]
    before = Api(stack.url, short["api_key"]).get("/v1/jobs")
    if time.monotonic() - minted < 3:  # a busy machine may reach this past the key's life: then only expiry is shown
        assert before.status_code == 200, before.text
    expired = settled(lambda: Api(stack.url, short["api_key"]).get("/v1/jobs"), lambda r: r.status_code == 401, 10)
    assert expired.status_code == 401 and "expired" in error_of(expired)["message"]
    assert tenant.get("/v1/jobs").status_code == 200  # the tenant's other keys are untouched


def test_creating_a_tenant_needs_an_admin_key_and_shows_its_key_and_webhook_secret_once(api, tenant_a):
    assert tenant_a.post("/v1/tenants", {"name": "mine"}).status_code == 403
    tenant, made = new_tenant(api, max_in_flight=7)
    assert made["api_key"].startswith("sh_") and made["key_id"].startswith("key_")
    assert made["webhook_secret"].startswith("whsec_")
    tenant_id = made["tenant"]["tenant_id"]
    shown = tenant.get(f"/v1/tenants/{tenant_id}").json()
    assert shown["limits"]["max_in_flight"] == 7 and "api_key" not in shown and "webhook_secret" not in shown


def test_a_tenant_cannot_see_or_manage_another_tenant_or_its_keys(api, stack):
    a, made_a = new_tenant(api)
    b, _ = new_tenant(api)
    a_id = made_a["tenant"]["tenant_id"]
    assert b.get(f"/v1/tenants/{a_id}").status_code == 404
    assert b.post(f"/v1/tenants/{a_id}/keys", {}).status_code == 404
    assert b.delete(f"/v1/keys/{made_a['key_id']}").status_code == 404
    assert b.put(f"/v1/tenants/{a_id}/limits", {"max_in_flight": 5000}).status_code == 403
    assert a.get("/v1/jobs").status_code == 200  # A's key still works


@pytest.mark.parametrize("token", ["not-a-key", "sh_short", "sh_" + "!" * 43, "sh_" + "a" * 44])
def test_a_malformed_key_is_401_with_the_usual_body(stack, token):
    response = Api(stack.url, token).get("/v1/jobs")
    assert response.status_code == 401
    assert error_of(response) == {"code": "unauthorized", "message": "invalid API key", "field": "Authorization"}


def test_only_keys_with_keys_manage_mint_list_and_revoke_a_tenants_keys(api, stack):
    manager, made = new_tenant(api)
    tenant_id = made["tenant"]["tenant_id"]
    keys_path = f"/v1/tenants/{tenant_id}/keys"

    [first] = manager.get(keys_path).json()["keys"]  # the first key, shown on POST /v1/tenants, manages keys
    assert first["key_id"] == made["key_id"] and first["scopes"] == ["keys:manage"]
    assert first["prefix"] == made["api_key"][:7] and first["created_at"] and first["last_used_at"]

    plain = manager.post(keys_path, {}).json()  # not asked for: a key that runs jobs and nothing else
    assert plain["scopes"] == []
    worker = Api(stack.url, plain["api_key"])
    assert worker.get("/v1/jobs").status_code == 200
    for refused in (worker.post(keys_path, {}), worker.get(keys_path), worker.delete(f"/v1/keys/{made['key_id']}"),
                    worker.post(keys_path, {"scopes": ["keys:manage"]})):
        assert refused.status_code == 403 and error_of(refused)["field"] == "Authorization", refused.text

    second = manager.post(keys_path, {"scopes": ["keys:manage"]}).json()
    assert Api(stack.url, second["api_key"]).get(keys_path).status_code == 200
    listed = api.get(keys_path)  # and an admin
    assert listed.status_code == 200 and len(listed.json()["keys"]) == 3
    for secret in (made["api_key"], plain["api_key"], second["api_key"]):
        assert secret not in listed.text and secret[7:] not in listed.text

    assert worker.delete(f"/v1/keys/{plain['key_id']}").status_code == 200  # any key may retire itself
    assert worker.get("/v1/jobs").status_code == 401
    assert plain["key_id"] not in manager.get(keys_path).text


def test_a_tenant_holds_at_most_max_keys_per_tenant_live_keys(api):
    manager, made = new_tenant(api)
    keys_path = f"/v1/tenants/{made['tenant']['tenant_id']}/keys"
    minted = [manager.post(keys_path, {}) for _ in range(19)]  # the default cap, 20, with the first key
    assert all(r.status_code == 201 for r in minted)
    over = manager.post(keys_path, {})
    assert over.status_code == 409 and error_of(over)["field"] == "max_keys_per_tenant"
    assert manager.delete(f"/v1/keys/{minted[0].json()['key_id']}").status_code == 200
    assert manager.post(keys_path, {}).status_code == 201


def test_limits_are_changed_in_part_by_an_admin(api):
    _, made = new_tenant(api, requests_per_minute=50)
    tenant_id = made["tenant"]["tenant_id"]
    changed = api.put(f"/v1/tenants/{tenant_id}/limits", {"allow_high_priority": True})
    assert changed.status_code == 200
    assert changed.json()["limits"]["requests_per_minute"] == 50
    assert changed.json()["limits"]["allow_high_priority"] is True
    refused = api.put(f"/v1/tenants/{tenant_id}/limits", {"max_in_flight": 0})
    assert refused.status_code == 422 and error_of(refused)["field"] == "max_in_flight"
    assert api.put("/v1/tenants/t_nobody/limits", {"max_in_flight": 2}).status_code == 404


# --- isolation ----------------------------------------------------------------------------------------

def test_another_tenants_job_its_stream_its_listing_and_its_cursor_are_404(tenant_a, tenant_b):
    big = "x" * 200_000  # echoed twice: the output is kept in S3, the job carries a presigned URL
    first = tenant_a.submit("echo", {"text": big})
    tenant_a.submit("echo", {"text": "second"})
    job = tenant_a.wait(first, timeout=30)
    assert job["status"] == "COMPLETED" and job["output_url"]
    for path in (f"/v1/jobs/{first}", f"/v1/jobs/{first}/stream"):
        response = tenant_b.get(path)
        assert response.status_code == 404, path
        assert big[:100] not in response.text and "output_url" not in response.text
    assert tenant_b.post(f"/v1/jobs/{first}/cancel").status_code == 404
    assert first not in {item["id"] for item in tenant_b.get("/v1/jobs").json()["items"]}
    cursor = tenant_a.get("/v1/jobs", params={"limit": 1}).json()["cursor"]
    assert cursor
    response = tenant_b.get("/v1/jobs", params={"limit": 1, "cursor": cursor})
    assert response.status_code == 404 and error_of(response)["field"] == "cursor"


def test_tenants_see_the_models_available_and_admins_the_fleet(api, tenant_a):
    rows = tenant_a.get("/v1/endpoints").json()
    assert rows and all(set(row) == {"model", "available"} for row in rows)
    text = json.dumps(rows)
    assert "base_url" not in text and "endpoint_id" not in text and "secret_ref" not in text
    fleet = api.get("/v1/endpoints").json()
    assert {"name", "base_url", "endpoint_id", "last_error"} <= set(fleet[0])


def test_an_endpoint_cannot_be_pointed_at_another_host_or_secret(api, stack):
    before = {row["name"]: row for row in api.get("/v1/endpoints").json()}["west"]
    standin = urlsplit(stack.standin.api_base()).netloc
    for body, field in (({"base_url": "https://attacker.example/v2"}, "base_url"),
                        ({"base_url": "http://169.254.169.254/latest"}, "base_url"),
                        # requests would connect to evil.example, and send our RunPod key there
                        ({"base_url": f"http://evil.example\\@{standin}/v2"}, "base_url"),
                        ({"base_url": f"http://{standin}@evil.example/v2"}, "base_url"),
                        ({"secret_ref": "prod/database-password"}, "secret_ref"),
                        # sent as a Bearer token, the keyring would let its receiver forge any job's result
                        ({"secret_ref": os.environ["STILLHOUSE_CALLBACK_KEY_SECRET"]}, "secret_ref"),
                        ({"secret_ref": os.environ["STILLHOUSE_RUNPOD_API_KEY_SECRET"]}, "secret_ref")):
        response = api.put("/v1/endpoints/west", body)
        assert response.status_code == 400 and error_of(response)["field"] == field, response.text
    after = {row["name"]: row for row in api.get("/v1/endpoints").json()}["west"]
    assert after["base_url"] == before["base_url"] == stack.standin.api_base()


# --- quotas -------------------------------------------------------------------------------------------

def test_over_requests_per_minute_is_429_with_retry_after_naming_the_limit(api):
    tenant, _ = new_tenant(api, requests_per_minute=2)
    tenant.submit()
    tenant.submit()
    response = tenant.post("/v1/jobs", {"task": "echo", "input": {"text": "third"}})
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert error_of(response)["field"] == "requests_per_minute" and error_of(response)["code"] == "quota_exceeded"
    assert len(tenant.get("/v1/jobs").json()["items"]) == 2


def test_over_max_in_flight_is_429_until_a_job_ends(api):
    tenant, _ = new_tenant(api, max_in_flight=1)
    running = tenant.submit("sleep", {"seconds": 1.5})
    response = tenant.post("/v1/jobs", {"task": "echo", "input": {}})
    assert response.status_code == 429 and error_of(response)["field"] == "max_in_flight"
    assert response.headers["Retry-After"]
    assert tenant.wait(running)["status"] == "COMPLETED"
    tenant.submit()


def test_a_council_counts_as_the_gpu_jobs_it_runs(api):
    tenant, _ = new_tenant(api, max_in_flight=3, max_council_models=2)
    council = {"prompt": "hi", "models": ["a", "b"]}
    response = tenant.post("/v1/jobs", {"task": "council", "input": {**council, "rank": True}})
    assert response.status_code == 422 and error_of(response)["field"] == "input.models"  # 5 GPU jobs of 3
    assert "max_in_flight" in error_of(response)["message"]
    job = tenant.submit("council", council)  # 2 answers and the chair: all 3 places
    response = tenant.post("/v1/jobs", {"task": "echo", "input": {}})
    assert response.status_code == 429 and error_of(response)["field"] == "max_in_flight"
    assert tenant.post(f"/v1/jobs/{job}/cancel").status_code == 200


def test_stream_polls_are_limited_per_tenant_with_retry_after(api):
    tenant, _ = new_tenant(api, stream_polls_per_minute=2)
    job = tenant.submit("echo", {"text": "hi"})
    answers = [tenant.get(f"/v1/jobs/{job}/stream") for _ in range(5)]  # 2 a minute: some are refused
    refused = [r for r in answers if r.status_code == 429]
    assert refused and error_of(refused[0])["field"] == "stream_polls_per_minute"
    assert 1 <= int(refused[0].headers["Retry-After"]) <= 60
    assert new_tenant(api)[0].get(f"/v1/jobs/{job}/stream").status_code == 404  # others poll on their own count


def test_high_priority_and_council_size_follow_the_tenants_limits(api):
    tenant, made = new_tenant(api, max_council_models=2)
    response = tenant.post("/v1/jobs", {"task": "echo", "input": {}, "priority": "high"})
    assert response.status_code == 403 and error_of(response)["field"] == "priority"
    council = {"prompt": "hi", "models": ["a", "b", "c"]}
    response = tenant.post("/v1/jobs", {"task": "council", "input": council})
    assert response.status_code == 422 and error_of(response)["field"] == "input.models"
    assert "max_council_models" in error_of(response)["message"]
    api.put(f"/v1/tenants/{made['tenant']['tenant_id']}/limits", {"allow_high_priority": True})
    tenant.submit("echo", {}, priority="high")


# --- input at the edge --------------------------------------------------------------------------------

def test_json_nested_deeper_than_the_bound_is_400_not_500(tenant_a):
    deep = {"task": "echo", "input": {"x": json.loads("[" * 40 + "]" * 40)}}
    response = tenant_a.post("/v1/jobs", deep)
    assert response.status_code == 400 and error_of(response)["field"] == "body"
    very_deep = '{"task": "echo", "input": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    response = requests.post(tenant_a.url + "/v1/jobs", data=very_deep, headers=tenant_a.headers, timeout=10)
    assert response.status_code == 400
    assert tenant_a.get("/v1/jobs").json()["items"] == []


def test_an_oversized_body_is_413(tenant_a):
    body = '{"task": "echo", "input": {"text": "' + "x" * (1024 * 1024 + 1) + '"}}'
    response = requests.post(tenant_a.url + "/v1/jobs", data=body, headers=tenant_a.headers, timeout=10)
    assert response.status_code == 413 and error_of(response)["field"] == "body"


@pytest.mark.parametrize(("task", "input", "field"), [
    ("generate", {"prompt": "hi", "max_new_tokens": 100_000}, "input.max_new_tokens"),
    ("generate", {"prompt": "x" * 40_000}, "input.prompt"),
    ("embed", {"texts": ["a"] * 513}, "input.texts"),
    ("sleep", {"seconds": 3600}, "input.seconds"),
    ("council", {"prompt": "hi", "models": ["a", "b"], "max_new_tokens": 100_000}, "input.max_new_tokens"),
])
def test_a_job_over_a_per_task_bound_is_422_naming_the_field_and_not_stored(tenant_a, task, input, field):
    response = tenant_a.post("/v1/jobs", {"task": task, "input": input})
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field
    assert tenant_a.get("/v1/jobs").json()["items"] == []


# --- the CLI ------------------------------------------------------------------------------------------

def test_the_cli_makes_a_tenant_changes_its_limits_and_revokes_a_key(stack):
    from stillhouse_local.cli import app
    from typer.testing import CliRunner

    runner = CliRunner()
    env = {"STILLHOUSE_API_URL": stack.url, "STILLHOUSE_API_KEY": stack.dev_api_key, "COLUMNS": "160"}

    def cli(*args):
        return runner.invoke(app, ["tenants", *args], env=env)

    made = cli("create", "cli-tenant", "--set", "max_in_flight=3", "--json")
    assert made.exit_code == 0, made.output
    made = json.loads(made.stdout)
    tenant_id = made["tenant"]["tenant_id"]
    assert made["tenant"]["limits"]["max_in_flight"] == 3

    changed = cli("limits", tenant_id, "--set", "allow_high_priority=true", "--json")
    assert json.loads(changed.stdout)["limits"]["allow_high_priority"] is True
    assert "max_in_flight" in cli("show", tenant_id).output

    issued = json.loads(cli("key", tenant_id, "--json").stdout)
    assert Api(stack.url, issued["api_key"]).get("/v1/jobs").status_code == 200
    assert cli("revoke", issued["key_id"]).exit_code == 0
    assert Api(stack.url, issued["api_key"]).get("/v1/jobs").status_code == 401

    listed = json.loads(cli("keys", tenant_id, "--json").stdout)["keys"]
    assert [k["key_id"] for k in listed] == [made["key_id"]]
    assert "keys:manage" in cli("keys", tenant_id).output

    refused = cli("limits", tenant_id, "--set", "max_in_flight=0")
    assert refused.exit_code == 1 and "max_in_flight" in refused.output
    assert cli("limits", tenant_id, "--set", "oops").exit_code == 2


def test_the_first_admin_key_is_made_by_a_command_and_revoked_like_any_other(stack, api):
    from stillhouse_local.cli import app
    from typer.testing import CliRunner

    made = CliRunner().invoke(app, ["admin-key", "create", "--table", stack.resources["ApiKeysTable"], "--json"],
                              env={"COLUMNS": "160"})
    assert made.exit_code == 0, made.output
    issued = json.loads(made.stdout)
    assert issued["admin"] is True and issued["tenant_id"] == "ops" and issued["key_id"].startswith("key_")
    admin = Api(stack.url, issued["api_key"])
    assert admin.put("/v1/tenants/t_nobody/limits", {"max_in_flight": 2}).status_code == 404  # admin: past 403
    assert [k["key_id"] for k in api.get("/v1/tenants/ops/keys").json()["keys"]] == [issued["key_id"]]

    assert api.delete(f"/v1/keys/{issued['key_id']}").status_code == 200
    assert admin.get("/v1/jobs").status_code == 401
