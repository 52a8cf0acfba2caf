"""Security of keys and webhooks against the embedded stack: each tenant's webhooks are signed with its
own secret (Standard Webhooks), which the tenant can rotate without losing a delivery."""
import time

import pytest
import requests
import standardwebhooks

from stillhouse import secrets
from stillhouse.runpod.callback_urls import Keyring, callback_token
from tests.support.stack import settled


def verify(secret, call):
    return standardwebhooks.Webhook(secret).verify(call["body"], call["headers"])


def test_a_delivery_verifies_with_its_tenants_secret_and_not_with_another_tenants(api, stack, other_tenant,
                                                                                    receiver):
    job_id = other_tenant.submit("echo", {"text": "mine"}, webhook=receiver.url)
    assert other_tenant.wait(job_id)["status"] == "COMPLETED"
    (call,) = receiver.wait_for(1)
    assert verify(stack.webhook_secrets["other-tenant"], call)["id"] == job_id
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verify(stack.dev_webhook_secret, call)


def test_a_tenant_rotates_its_own_secret_and_both_sign_during_the_grace_period(stack, receiver):
    from tests.support.stack import Api

    tenant = Api(stack.url, stack.create_api_key("rotating-tenant"))
    old = stack.webhook_secrets["rotating-tenant"]
    response = tenant.post("/v1/tenants/rotating-tenant/webhook-secret")
    assert response.status_code == 200, response.text
    new = response.json()["webhook_secret"]
    assert new.startswith("whsec_") and new != old and response.json()["previous_valid_until"]
    job_id = tenant.submit("echo", {"text": "rotated"}, webhook=receiver.url)
    tenant.wait(job_id)
    (call,) = receiver.wait_for(1)
    assert verify(new, call)["id"] == job_id and verify(old, call)["id"] == job_id


def test_a_tenant_cannot_rotate_another_tenants_secret(stack, other_tenant):
    response = other_tenant.post("/v1/tenants/dev/webhook-secret")
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "tenant_id"


def test_an_admin_rotates_any_tenants_secret(api, stack):
    stack.create_api_key("managed-tenant")
    response = api.post("/v1/tenants/managed-tenant/webhook-secret")
    assert response.status_code == 200 and response.json()["tenant_id"] == "managed-tenant"


# --- RunPod callbacks: only tokens minted with the callback key, for this job, attempt and time ----------

def callback(stack, job_id, token, *, attempt=1, endpoint="local", body=None):
    return requests.post(f"{stack.url}/callbacks/runpod/{job_id}",
                         params={"attempt": attempt, "endpoint": endpoint, "token": token},
                         json=body or {"id": "rp-forged", "status": "COMPLETED", "output": {"text": "forged"}},
                         timeout=10)


def keyring():
    return Keyring.parse(secrets.callback_keyring())


@pytest.fixture
def running_job(api):
    """A job whose RunPod job is in progress (it sleeps), with its RunPod id."""
    job_id = api.submit("sleep", {"seconds": 3})
    job = settled(lambda: api.get(f"/v1/jobs/{job_id}").json(), lambda j: j["status"] == "IN_PROGRESS", 15)
    return job


def assert_unchanged(api, job):
    now = api.get(f"/v1/jobs/{job['id']}").json()
    assert now["status"] == job["status"] and now["output"] == job["output"], now
    assert now["events"] == job["events"]


def test_a_forged_callback_token_is_refused_and_changes_nothing(api, stack, running_job):
    response = callback(stack, running_job["id"], "k1.99999999999." + "0" * 40,
                        body={"id": running_job["runpod_id"], "status": "FAILED", "error": "forged"})
    assert response.status_code == 401 and response.json()["error"]["field"] == "token"
    assert_unchanged(api, running_job)
    assert api.wait(running_job["id"])["status"] == "COMPLETED"  # the real result still lands


def test_a_tenants_webhook_secret_cannot_mint_callback_tokens(api, stack, running_job):
    """The hole this closes: a caller held the key that signs callbacks, and could end any job."""
    as_caller = Keyring.single(stack.dev_webhook_secret)
    token = callback_token(as_caller, running_job["id"], 1, "local")
    response = callback(stack, running_job["id"], token,
                        body={"id": running_job["runpod_id"], "status": "FAILED", "error": "forged"})
    assert response.status_code == 401
    assert_unchanged(api, running_job)


def test_an_expired_callback_token_is_refused(api, stack, running_job):
    token = callback_token(keyring(), running_job["id"], 1, "local", expires_at=int(time.time()) - 1)
    response = callback(stack, running_job["id"], token,
                        body={"id": running_job["runpod_id"], "status": "FAILED", "error": "late"})
    assert response.status_code == 401
    assert_unchanged(api, running_job)


def test_another_attempts_or_jobs_token_is_refused(api, stack, running_job):
    body = {"id": running_job["runpod_id"], "status": "FAILED", "error": "wrong attempt"}
    for_attempt_1 = callback_token(keyring(), running_job["id"], 1, "local")
    assert callback(stack, running_job["id"], for_attempt_1, attempt=2, body=body).status_code == 401
    other_job = callback_token(keyring(), "some-other-job", 1, "local")
    assert callback(stack, running_job["id"], other_job, body=body).status_code == 401
    assert_unchanged(api, running_job)


def test_a_valid_token_with_another_runpod_jobs_result_is_a_conflict(api, stack, running_job):
    token = callback_token(keyring(), running_job["id"], 1, "local")
    response = callback(stack, running_job["id"], token, body={"id": "rp-someone-else", "status": "COMPLETED",
                                                               "output": {"text": "substituted"}})
    assert response.status_code == 409 and response.json()["error"]["field"] == "body.id"
    assert_unchanged(api, running_job)


def test_a_replayed_callback_with_another_output_changes_nothing(api, stack):
    job_id = api.submit("echo", {"text": "original"})
    job = api.wait(job_id)
    # The stand-in logs a delivery once our answer is back, which can be just after the job shows COMPLETED.
    urls = settled(lambda: {d["url"] for d in stack.standin.webhook_deliveries
                            if f"/callbacks/runpod/{job_id}?" in d["url"]}, bool, 10)
    (real_url,) = urls
    replay = requests.post(real_url, json={"id": job["runpod_id"], "status": "COMPLETED",
                                           "output": {"text": "tampered"}}, timeout=10)
    assert replay.status_code == 200 and replay.json()["recorded"] is False  # RunPod must not retry a duplicate
    assert_unchanged(api, job)
