"""Security of keys and webhooks against the embedded stack: each tenant's webhooks are signed with its
own secret (Standard Webhooks), which the tenant can rotate without losing a delivery."""
import pytest
import standardwebhooks


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
