"""Security of keys and webhooks against the embedded stack: each tenant's webhooks are signed with its
own secret (Standard Webhooks), which the tenant can rotate without losing a delivery."""
import time

import pytest
import requests
import standardwebhooks

from stillhouse import secrets
from stillhouse.container import container
from stillhouse.runpod.callback_urls import Keyring, callback_token
from tests.support.stack import Receiver, settled


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
    # An expiry of digits only to str.isdigit() ('²³'): refused like any bad token, never a 500.
    response = callback(stack, running_job["id"], "k1.\u00b2\u00b3." + "0" * 40,
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


# --- Callers' webhooks: no request forgery (names resolve through a fake resolver) -----------------------

class FakeDns:
    def __init__(self, answers):
        self.answers = answers

    def __call__(self, host, port):
        answer = self.answers.get(host, [])
        return answer() if callable(answer) else answer  # a callable: the answer may change between lookups


@pytest.fixture
def fake_dns(monkeypatch):
    dns = FakeDns({"hooks.example": ["127.0.0.1"], "internal.example": ["10.0.0.7"],
                   "metadata.example": ["169.254.169.254"]})
    monkeypatch.setattr(container().webhook_guard, "resolve", dns)
    return dns


@pytest.mark.parametrize("webhook", [
    "http://169.254.169.254/latest/meta-data/",
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.1/hook",
    "https://192.168.0.1/hook",
    "https://[fd00::1]/hook",
    "https://[::ffff:10.0.0.1]/hook",
    "https://internal.example/hook",
    "https://metadata.example/hook",
    "http://hooks.example/hook",  # http to a public address (set below): https only
    "ftp://hooks.example/hook",
])
def test_a_webhook_to_a_private_or_metadata_address_is_refused_at_submit(api, fake_dns, webhook):
    if webhook == "http://hooks.example/hook":
        fake_dns.answers["hooks.example"] = ["93.184.215.14"]  # a public address over http: not allowed either
    def job_ids():
        return {j["id"] for j in api.get("/v1/jobs", params={"limit": 100}).json()["items"]}

    before = job_ids()
    response = api.post("/v1/jobs", {"task": "echo", "input": {"text": "x"}, "webhook": webhook})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "webhook"
    assert job_ids() == before  # no job was created
    for name in ("internal.example", "metadata.example"):
        if name in webhook:  # a refused name: not where it points (no DNS oracle)
            assert "is not allowed" in response.json()["error"]["message"]
            assert all(ip not in response.text for ip in fake_dns.answers[name]), response.text


def test_the_delivery_connects_to_the_checked_address_and_names_the_host(api, fake_dns, receiver):
    """`hooks.example` exists only in the fake resolver: the POST reached the receiver because it went to
    the address the guard checked, with the URL's name as Host."""
    port = receiver.port
    job_id = api.submit("echo", {"text": "pinned"}, webhook=f"http://hooks.example:{port}{receiver.path}")
    (call,) = receiver.wait_for(1, timeout=20)
    assert call["json"]["id"] == job_id
    assert call["headers"]["Host"] == f"hooks.example:{port}"


def test_a_name_that_turns_private_after_submit_is_not_delivered_to(api, fake_dns, receiver):
    port = receiver.port
    # Loopback until the first try has reached the receiver, the metadata service from then on: the later
    # tries' lookups are the ones that changed, whenever they come.
    fake_dns.answers["rebind.example"] = lambda: ["169.254.169.254"] if receiver.calls else ["127.0.0.1"]
    receiver.fail_next = 1  # the first try fails, so there are more
    job_id = api.submit("echo", {"text": "rebind"}, webhook=f"http://rebind.example:{port}{receiver.path}")
    receiver.wait_for(1, timeout=20)
    # Every try (WebhookMaxTries: 3) happens within the test, while the fake resolver answers: none is left
    # to run after it, when the name would go to the stack's own resolver.
    job = settled(lambda: api.get(f"/v1/jobs/{job_id}").json(), lambda j: len(j["deliveries"]) >= 3, 30)
    for refused in job["deliveries"][1:]:
        assert refused["error"].startswith("refused: webhook: host 'rebind.example' is not allowed")
        assert "169.254" not in refused["error"]  # what the name resolves to is never told
    assert job["deliveries"][-1]["next"] == "stopped: in the dead-letter queue"
    assert len(receiver.calls) == 1


def test_a_redirecting_webhook_is_not_followed(api, receiver):
    with Receiver() as target:
        receiver.redirect_to = target.url
        job_id = api.submit("echo", {"text": "redirect"}, webhook=receiver.url)
        # Every try (WebhookMaxTries: 3) happens within the test: none is left to reach a closed receiver.
        job = settled(lambda: api.get(f"/v1/jobs/{job_id}").json(), lambda j: len(j["deliveries"]) >= 3, 30)
        assert [d.get("error") for d in job["deliveries"]] == ["HTTP 302"] * 3
        assert job["deliveries"][-1]["next"] == "stopped: in the dead-letter queue"
        # A try that followed the redirect would have posted to the target before it was recorded.
        assert len(receiver.calls) == 3 and target.calls == []


# --- Results kept in S3, and what job views show -------------------------------------------------------

def test_an_output_crafted_as_a_kept_result_reference_yields_no_link_to_another_jobs_result(api, stack, running_job):
    """Even with a valid callback (a compromised worker), an output imitating the old in-output marker
    is only an output: the reference to a kept result is a field of its own, keyed by the job's id."""
    victim = api.submit("echo", {"text": "v" * 200_000})  # echoed twice: over the inline limit, kept in S3
    assert api.wait(victim)["output_url"]
    crafted = {"$s3": f"results/{victim}.json", "bytes": 10}
    token = callback_token(keyring(), running_job["id"], 1, "local")
    response = callback(stack, running_job["id"], token,
                        body={"id": running_job["runpod_id"], "status": "COMPLETED", "output": crafted})
    assert response.status_code == 200
    job = api.get(f"/v1/jobs/{running_job['id']}").json()
    assert job["status"] == "COMPLETED" and job["output"] == crafted and job["output_url"] is None


def test_job_views_do_not_show_workflow_execution_arns(api, faults):
    faults("local", error_rate=1.0)  # the recovery workflow takes the job
    job_id = api.submit()
    settled(lambda: container().job_store.get(job_id).execution_arn, bool, 15)
    assert "execution_arn" not in api.get(f"/v1/jobs/{job_id}").json()
    assert "execution_arn" not in api.get(f"/v1/jobs/{job_id}").text
    api.post(f"/v1/jobs/{job_id}/cancel")


def test_an_admin_cannot_make_a_secret_for_a_tenant_that_does_not_exist(api):
    response = api.post("/v1/tenants/no-such-tenant/webhook-secret")
    assert response.status_code == 404
