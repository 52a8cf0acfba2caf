"""API keys are stored hashed; callback tokens and client webhooks are HMAC-signed."""
import base64
import time

import pytest
import standardwebhooks

from stillhouse.auth import ApiKeyStore, bearer_token, hash_key, new_key
from stillhouse.delivery.signing import SIGNATURE_HEADER, sign, verify_webhook, webhook_headers
from stillhouse.delivery.tenant_secrets import new_secret
from stillhouse.errors import Unauthorized
from stillhouse.runpod.callback_urls import CallbackUrls, Keyring, callback_token, verify_callback_token


def test_keys_are_stored_as_digests_never_in_clear(keys_table):
    store = ApiKeyStore(keys_table)
    key = new_key()
    key_id = store.add(key, "acme")
    items = keys_table.scan()["Items"]
    assert items == [{"key_hash": hash_key(key), "key_id": key_id, "tenant_id": "acme", "admin": False,
                      "scopes": [], "prefix": key[:7], "created_at": items[0]["created_at"]}]
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


KEYS = Keyring.single("s3cret")


def test_callback_token_binds_job_attempt_endpoint_and_member():
    token = callback_token(KEYS, "job1", 2, "east")
    assert verify_callback_token(KEYS, token, "job1", 2, "east")
    assert not verify_callback_token(KEYS, token, "job2", 2, "east")
    assert not verify_callback_token(KEYS, token, "job1", 3, "east")
    assert not verify_callback_token(KEYS, token, "job1", 2, "west")
    assert not verify_callback_token(KEYS, token, "job1", 2, "east", "chair-0")
    assert not verify_callback_token(Keyring.single("other"), token, "job1", 2, "east")


def test_callback_token_names_its_key_and_expires():
    token = callback_token(KEYS, "job1", 1, "east", expires_at=1_000)
    key_id, expiry, _ = token.split(".")
    assert (key_id, expiry) == ("k1", "1000")
    assert verify_callback_token(KEYS, token, "job1", 1, "east", now=999)
    assert not verify_callback_token(KEYS, token, "job1", 1, "east", now=1_001)
    # the expiry is signed: moving it forward breaks the token
    assert not verify_callback_token(KEYS, token.replace(".1000.", ".9999."), "job1", 1, "east", now=999)


@pytest.mark.parametrize("token", ["", "abc", "k1..x", "nokey.99999999999.abc", "k1.99999999999." + "0" * 40,
                                   # digits to str.isdigit() that int() refuses: refused, never a 500
                                   "k1.\u00b2\u00b3." + "0" * 40, "k1.\u0663\u0663." + "0" * 40])
def test_malformed_or_forged_callback_tokens_are_refused(token):
    assert not verify_callback_token(KEYS, token, "job1", 1, "east")


def test_during_a_rotation_tokens_of_both_keys_verify_and_new_ones_use_the_new_key():
    old = Keyring.single("old-key", "k1")
    both = Keyring(current="k2", keys={"k1": "old-key", "k2": "new-key"})
    minted_before = callback_token(old, "j", 1, "east")
    minted_after = callback_token(both, "j", 1, "east")
    assert minted_after.startswith("k2.")
    assert verify_callback_token(both, minted_before, "j", 1, "east")
    assert verify_callback_token(both, minted_after, "j", 1, "east")
    assert not verify_callback_token(Keyring.single("new-key", "k2"), minted_before, "j", 1, "east")


def test_the_keyring_is_read_from_its_secret_and_a_bare_key_is_one_key():
    ring = Keyring.parse('{"current": "k2", "k1": "a", "k2": "b"}')
    assert ring.current == "k2" and dict(ring.keys) == {"k1": "a", "k2": "b"}
    assert Keyring.parse("plain-old-key") == Keyring.single("plain-old-key", "k0")
    with pytest.raises(ValueError):
        Keyring.parse('{"current": "k9", "k1": "a"}')


def test_a_token_of_a_key_this_process_has_not_seen_makes_it_reread_the_keyring_once():
    """A Lambda that cached the keyring before a rotation still verifies tokens minted with the new key;
    forged key ids do not turn into a secret read each."""
    cached, rotated = '{"current": "k1", "k1": "a"}', '{"current": "k2", "k1": "a", "k2": "b"}'
    reads = []

    def keyring(refresh=False):  # the 5-minute cache still holds the keyring from before the rotation
        reads.append(refresh)
        return rotated if refresh else cached

    now = [100.0]
    urls = CallbackUrls(keyring, lambda: "https://api.example", clock=lambda: now[0])
    fresh = callback_token(Keyring.parse(rotated), "j", 1, "east")  # minted by a process that saw the rotation
    assert urls.verify(fresh, "j", 1, "east")
    assert reads == [False, True]
    reads.clear()
    assert not urls.verify("k7.99999999999." + "0" * 40, "j", 1, "east")
    assert reads == [False]  # within the refresh interval: no second read


def test_a_callback_url_carries_attempt_endpoint_and_a_token_for_them():
    from types import SimpleNamespace
    from urllib.parse import parse_qs, urlsplit

    urls = CallbackUrls(lambda refresh=False: '{"current": "k1", "k1": "a"}', lambda: "https://api.example",
                        ttl_s=60, clock=lambda: 1_000.0)
    url = urls.for_attempt(SimpleNamespace(id="j1", trace_id="ab" * 16), 3, SimpleNamespace(name="east"))
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert parts.path == "/callbacks/runpod/j1" and query["attempt"] == "3" and query["endpoint"] == "east"
    assert query["token"].startswith("k1.1060.")
    assert urls.verify(query["token"], "j1", 3, "east")
    assert query["traceparent"].split("-")[1] == "ab" * 16  # the job's trace, for the callback's log lines


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
