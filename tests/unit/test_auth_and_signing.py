"""API keys are stored hashed; callback tokens and client webhooks are HMAC-signed."""
import time

import pytest

from stillhouse.auth import ApiKeyStore, bearer_token, hash_key, new_key
from stillhouse.delivery.signing import verify_webhook_signature, webhook_signature
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
    body = b'{"id":"x"}'
    header = webhook_signature("k", body)
    assert verify_webhook_signature("k", body, header)
    assert not verify_webhook_signature("k", body + b" ", header)
    stale = webhook_signature("k", body, int(time.time()) - 3600)
    assert not verify_webhook_signature("k", body, stale)
