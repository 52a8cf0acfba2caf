"""API keys are stored hashed; callback tokens and client webhooks are HMAC-signed."""
import base64
import time

import pytest
import standardwebhooks

from stillhouse.auth import ApiKeyStore, bearer_token, hash_key, new_key
from stillhouse.delivery.signing import SIGNATURE_HEADER, sign, verify_webhook, webhook_headers
from stillhouse.delivery.tenant_secrets import new_secret
from stillhouse.errors import Unauthorized
from stillhouse.runpod.callback_urls import callback_token, verify_callback_token


def test_keys_are_stored_as_digests_never_in_clear(keys_table):
    store = ApiKeyStore(keys_table)
    key = new_key()
    key_id = store.add(key, "acme")
    items = keys_table.scan()["Items"]
    assert items == [{"key_hash": hash_key(key), "key_id": key_id, "tenant_id": "acme", "admin": False,
                      "created_at": items[0]["created_at"]}]
    assert key not in str(items)


def test_a_valid_key_identifies_its_tenant(keys_table):
    store = ApiKeyStore(keys_table)
    key = new_key()
    store.add(key, "acme", admin=True)
    who = store.authenticate(f"Bearer {key}")
    assert (who.tenant_id, who.admin) == ("acme", True)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic abc", "Bearer    "])
def test_missing_or_malformed_authorization_is_refused(header):
    with pytest.raises(Unauthorized) as err:
        bearer_token(header)
    assert err.value.field == "Authorization"


def test_an_unknown_key_is_refused(keys_table):
    with pytest.raises(Unauthorized):
        ApiKeyStore(keys_table).authenticate("Bearer sh_not-a-key")


def test_new_keys_are_unique_and_long():
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100 and all(len(k) > 40 for k in keys)


def test_callback_token_binds_job_attempt_and_endpoint():
    token = callback_token("s3cret", "job1", 2, "east")
    assert verify_callback_token("s3cret", token, "job1", 2, "east")
    assert not verify_callback_token("s3cret", token, "job2", 2, "east")
    assert not verify_callback_token("s3cret", token, "job1", 3, "east")
    assert not verify_callback_token("s3cret", token, "job1", 2, "west")
    assert not verify_callback_token("other", token, "job1", 2, "east")


def test_webhook_signature_verifies_body_and_freshness():
    body, secret = b'{"id":"x"}', new_secret()
    headers = webhook_headers([secret], "msg_x", body)
    assert verify_webhook(secret, body, headers)
    assert not verify_webhook(secret, body + b" ", headers)
    assert not verify_webhook(new_secret(), body, headers)
    stale = webhook_headers([secret], "msg_x", body, int(time.time()) - 3600)
    assert not verify_webhook(secret, body, stale)


def test_the_signature_matches_the_standard_webhooks_test_vector():
    """The spec's published example: this key, id, timestamp and payload give exactly this signature."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    payload = b'{"test": 2432232314}'
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, payload) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_standard_webhooks_library_verifies_our_headers_and_refuses_another_secret():
    body, secret = b'{"id":"j1","status":"COMPLETED"}', new_secret()
    headers = webhook_headers([secret], "msg_j1", body)
    assert standardwebhooks.Webhook(secret).verify(body, headers) == {"id": "j1", "status": "COMPLETED"}
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new_secret()).verify(body, headers)


def test_during_a_rotation_both_secrets_sign_space_separated():
    old, new = new_secret(), new_secret()
    body = b"{}"
    headers = webhook_headers([new, old], "msg_j", body)
    assert len(headers[SIGNATURE_HEADER].split(" ")) == 2
    for secret in (old, new):
        standardwebhooks.Webhook(secret).verify(body, headers)


def test_a_secret_is_whsec_and_32_random_bytes():
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(s.startswith("whsec_") and len(base64.b64decode(s[6:])) == 32 for s in secrets)
