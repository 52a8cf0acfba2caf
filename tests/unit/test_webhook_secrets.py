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


class CountedReads:
    """The secrets table, counting the reads that reach it."""

    def __init__(self, table):
        self.table, self.reads = table, 0

    def get_item(self, **kwargs):
        self.reads += 1
        return self.table.get_item(**kwargs)

    def __getattr__(self, name):
        return getattr(self.table, name)


@pytest.fixture
def table(aws_mock):
    return CountedReads(create_webhook_secrets_table(boto3.resource("dynamodb", region_name="us-east-1")))


def test_a_tenants_secrets_are_read_once_a_minute_by_the_process_that_signs(table, clock):
    other = WebhookSecretStore(table, grace_s=3600, clock=clock)  # the API function, say
    secret = other.create("acme")
    signer = WebhookSecretStore(table, grace_s=3600, cache_ttl_s=60, clock=clock)
    reads = table.reads
    assert [signer.signing_secrets("acme") for _ in range(5)] == [[secret]] * 5
    assert table.reads == reads + 1
    new = other.rotate("acme")  # elsewhere: this process learns of it within the TTL
    clock.now += 59
    assert signer.signing_secrets("acme") == [secret]
    clock.now += 2
    assert signer.signing_secrets("acme") == [new, secret] and table.reads == reads + 3  # + the rotation's read


def test_a_tenant_without_a_secret_is_not_remembered_so_a_new_secret_signs_the_next_try(table, clock):
    signer = WebhookSecretStore(table, grace_s=3600, cache_ttl_s=60, clock=clock)
    assert signer.signing_secrets("acme") == []
    secret = WebhookSecretStore(table, grace_s=3600, clock=clock).create("acme")  # in another process
    assert signer.signing_secrets("acme") == [secret]


def test_the_process_that_rotates_a_secret_signs_with_the_new_one_at_once(table, clock):
    store = WebhookSecretStore(table, grace_s=3600, cache_ttl_s=60, clock=clock)
    old = store.create("acme")
    assert store.signing_secrets("acme") == [old]
    new = store.rotate("acme")
    assert store.signing_secrets("acme") == [new, old]


def test_a_remembered_previous_secret_stops_signing_when_its_grace_period_ends(table, clock):
    store = WebhookSecretStore(table, grace_s=30, cache_ttl_s=60, clock=clock)
    store.create("acme")
    new = store.rotate("acme")
    assert len(store.signing_secrets("acme")) == 2
    clock.now += 31  # within the TTL, past the grace period
    assert store.signing_secrets("acme") == [new]
