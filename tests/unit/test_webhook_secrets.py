"""Per-tenant webhook secrets: created once and shown once, rotated with a grace period in which the
old secret still signs, and never one tenant's for another."""
import boto3
import pytest

from stillhouse.delivery.tenant_secrets import SecretExists, WebhookSecretStore
from tests.support.tables import create_webhook_secrets_table


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(aws_mock, clock):
    table = create_webhook_secrets_table(boto3.resource("dynamodb", region_name="us-east-1"))
    return WebhookSecretStore(table, grace_s=3600, clock=clock)


def test_a_created_secret_is_the_one_deliveries_are_signed_with(store):
    secret = store.create("acme")
    assert secret.startswith("whsec_")
    assert store.signing_secrets("acme") == [secret]


def test_a_second_create_is_refused_so_a_secret_is_never_shown_twice(store):
    store.create("acme")
    with pytest.raises(SecretExists):
        store.create("acme")


def test_each_tenant_has_its_own_secret(store):
    assert store.create("acme") != store.create("globex")
    assert store.signing_secrets("acme") != store.signing_secrets("globex")
    assert store.signing_secrets("nobody") == []


def test_after_a_rotation_both_secrets_sign_until_the_grace_period_ends(store, clock):
    old = store.create("acme")
    new = store.rotate("acme")
    assert new != old
    assert store.signing_secrets("acme") == [new, old]
    clock.now += 3599
    assert store.signing_secrets("acme") == [new, old]
    clock.now += 2
    assert store.signing_secrets("acme") == [new]


def test_a_second_rotation_drops_the_oldest_secret(store):
    first = store.create("acme")
    second = store.rotate("acme")
    third = store.rotate("acme")
    assert store.signing_secrets("acme") == [third, second]
    assert first not in store.signing_secrets("acme")


def test_rotating_a_tenant_without_a_secret_creates_its_first(store):
    secret = store.rotate("acme")
    assert store.signing_secrets("acme") == [secret]
