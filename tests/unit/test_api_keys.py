"""API keys against abuse (issue 22, items 5 and 7): bad keys are refused cheaply, a tenant's keys are
listed, capped, may expire by default, and only a key with `keys:manage` hands on that power.
(moto in memory, a settable clock; a counting wrapper shows what reaches DynamoDB.)"""
import pytest

from stillhouse.auth import (
    KEYS_MANAGE,
    ApiKeyStore,
    Principal,
    TooManyKeys,
    new_key,
    require_key_manager,
    well_formed,
)
from stillhouse.errors import Forbidden, Unauthorized
from tests.support.clock import Clock
from tests.support.tables import create_keys_table


class CountingTable:
    """The table as the store sees it, counting the reads and writes that reach it."""

    def __init__(self, table):
        self._table = table
        self.meta = table.meta
        self.calls: list[str] = []

    def __getattr__(self, name):
        method = getattr(self._table, name)

        def counted(*args, **kwargs):
            self.calls.append(name)
            return method(*args, **kwargs)
        return counted

    def count(self, name):
        return self.calls.count(name)


@pytest.fixture(scope="module")
def _table(module_dynamodb):
    return create_keys_table(module_dynamodb, "api-keys")


@pytest.fixture
def table(_table):
    for item in _table.scan(ProjectionExpression="key_hash")["Items"]:
        _table.delete_item(Key=item)
    return CountingTable(_table)


@pytest.fixture
def clock():
    return Clock()


def refused(keys, token):
    with pytest.raises(Unauthorized) as error:
        keys.authenticate(f"Bearer {token}")
    assert error.value.field == "Authorization"
    return error.value


# --- item 7: bad keys are cheap ------------------------------------------------------------------------

@pytest.mark.parametrize("token", [
    "sh_short",                                   # too short
    "sh_" + "a" * 44,                             # too long
    "xx_" + "a" * 43,                             # another prefix
    "sh_" + "a" * 42 + "!",                       # outside base64url
    "sh_" + "é" * 43,                             # not even ASCII
    "a" * 4000,                                   # anything at all
])
def test_a_malformed_key_is_refused_without_reading_the_table(table, clock, token):
    keys = ApiKeyStore(table, now=clock)
    assert refused(keys, token).message == "invalid API key"  # as for an unknown key: nothing more to learn
    assert table.calls == []


def test_every_key_we_mint_is_well_formed():
    assert all(well_formed(new_key()) for _ in range(200))


def test_an_unknown_well_formed_key_costs_one_read_per_negative_ttl(table, clock):
    keys = ApiKeyStore(table, cache_ttl_s=30, negative_ttl_s=10, now=clock)
    guess = new_key()
    for _ in range(50):
        refused(keys, guess)
    assert table.count("get_item") == 1
    clock.advance(10)
    for _ in range(50):
        refused(keys, guess)
    assert table.count("get_item") == 2
    refused(keys, new_key())  # another guess is another read: one per distinct key per TTL
    assert table.count("get_item") == 3


def test_unknown_keys_do_not_push_good_keys_out_of_the_cache(table, clock):
    keys = ApiKeyStore(table, cache_ttl_s=30, negative_ttl_s=10, now=clock)
    good = keys.issue("acme").api_key
    keys.authenticate(f"Bearer {good}")
    reads = table.count("get_item")
    for _ in range(100):
        refused(keys, new_key())
    keys.authenticate(f"Bearer {good}")
    assert table.count("get_item") == reads + 100  # the good key was still remembered


def test_a_key_added_here_is_known_at_once_even_if_it_was_refused_a_moment_ago(table, clock):
    keys = ApiKeyStore(table, negative_ttl_s=10, now=clock)
    key = new_key()
    refused(keys, key)
    keys.add(key, "acme")
    assert keys.authenticate(f"Bearer {key}").tenant_id == "acme"


def test_a_malformed_key_cannot_be_stored(table, clock):
    with pytest.raises(ValueError):
        ApiKeyStore(table, now=clock).add("devkey", "dev", admin=True)


# --- item 5: a tenant's keys are listed, capped, expire by default -------------------------------------

def test_a_tenants_live_keys_are_listed_without_the_key_or_its_digest(table, clock):
    keys = ApiKeyStore(table, now=clock)
    first = keys.issue("acme", scopes=[KEYS_MANAGE])
    clock.advance(1)
    second = keys.issue("acme", expires_at=clock() + 3600)
    revoked = keys.issue("acme")
    keys.issue("other")
    keys.revoke(revoked.key_id)

    listed = keys.live_keys("acme")
    assert [k.key_id for k in listed] == [first.key_id, second.key_id]
    assert listed[0].scopes == [KEYS_MANAGE] and listed[1].scopes == []
    assert listed[0].prefix == first.api_key[:7] and listed[0].created_at and listed[0].last_used_at is None
    assert listed[1].expires_at == second.expires_at
    shown = str([k.model_dump() for k in listed])
    assert first.api_key not in shown and "key_hash" not in shown and first.api_key[7:] not in shown
    clock.advance(3600)
    assert [k.key_id for k in keys.live_keys("acme")] == [first.key_id]  # an expired key is not live


def test_last_use_is_recorded_at_most_once_per_cache_period(table, clock):
    keys = ApiKeyStore(table, cache_ttl_s=30, now=clock)
    issued = keys.issue("acme")
    for _ in range(20):
        keys.authenticate(f"Bearer {issued.api_key}")
    assert table.count("update_item") == 1
    [info] = keys.live_keys("acme")
    assert info.last_used_at is not None
    elsewhere = ApiKeyStore(table, cache_ttl_s=30, now=clock)  # another process, same period: no new write
    elsewhere.authenticate(f"Bearer {issued.api_key}")
    assert table.count("update_item") == 1
    clock.advance(30)
    keys.authenticate(f"Bearer {issued.api_key}")
    assert table.count("update_item") == 2
    [info] = keys.live_keys("acme")
    assert info.last_used_at > info.created_at


def test_a_tenant_holds_at_most_max_keys_per_tenant_live_keys(table, clock):
    keys = ApiKeyStore(table, max_keys_per_tenant=3, now=clock)
    made = [keys.issue("acme") for _ in range(3)]
    with pytest.raises(TooManyKeys) as error:
        keys.issue("acme")
    assert error.value.field == "max_keys_per_tenant"
    keys.issue("other")  # per tenant
    keys.revoke(made[0].key_id)
    keys.issue("acme")  # a revoked key makes room


def test_a_minted_key_expires_after_the_default_lifetime_unless_told_otherwise(table, clock):
    keys = ApiKeyStore(table, default_lifetime_s=3600, now=clock)
    by_default = keys.issue("acme")
    chosen = keys.issue("acme", expires_at=clock() + 60)
    assert by_default.expires_at is not None and chosen.expires_at < by_default.expires_at
    clock.advance(3600)
    refused(keys, by_default.api_key)
    assert ApiKeyStore(table, now=clock).issue("acme").expires_at is None  # no default: never expires


def test_scopes_are_stored_and_come_back_on_the_principal(table, clock):
    keys = ApiKeyStore(table, now=clock)
    manager = keys.issue("acme", scopes=[KEYS_MANAGE])
    plain = keys.issue("acme")
    assert keys.authenticate(f"Bearer {manager.api_key}").scopes == {KEYS_MANAGE}
    assert keys.authenticate(f"Bearer {plain.api_key}").scopes == set()


def test_only_admins_and_keys_with_keys_manage_manage_keys_and_grant_only_what_they_hold():
    require_key_manager(Principal(tenant_id="ops", admin=True), [KEYS_MANAGE])
    require_key_manager(Principal(tenant_id="acme", scopes=frozenset({KEYS_MANAGE})), [KEYS_MANAGE])
    with pytest.raises(Forbidden) as error:
        require_key_manager(Principal(tenant_id="acme"))
    assert KEYS_MANAGE in error.value.message
