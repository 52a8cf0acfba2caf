"""Tenants, their stream-poll quota, and API keys with ids, expiry and revocation (moto in memory, a settable clock)."""
import pytest

from stillhouse.auth import ApiKeyStore, KeyNotFound, hash_key
from stillhouse.config import TenantLimits
from stillhouse.errors import Conflict, QuotaExceeded, Unauthorized
from stillhouse.tenants.quotas import Quotas
from stillhouse.tenants.store import LimitsPatch, TenantNotFound, TenantStore
from tests.support.clock import Clock
from tests.support.tables import create_keys_table, create_tenants_table

DEFAULTS = TenantLimits(requests_per_minute=60, max_in_flight=3, max_council_models=3)


@pytest.fixture(scope="module")
def _tables(module_dynamodb):
    return create_tenants_table(module_dynamodb, "tenants"), create_keys_table(module_dynamodb, "keys")


@pytest.fixture
def tables(_tables):
    for table, key in zip(_tables, ("tenant_id", "key_hash")):
        for item in table.scan(ProjectionExpression=key)["Items"]:
            table.delete_item(Key=item)
    return _tables


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def tenants(tables, clock):
    return TenantStore(tables[0], DEFAULTS, cache_ttl_s=30, now=clock)


@pytest.fixture
def quotas(tenants, clock):
    return Quotas(tenants, now=clock)


# --- tenants ------------------------------------------------------------------------------------------

def test_a_tenant_has_the_default_limits_except_those_it_overrides(tenants):
    made = tenants.create("Acme", LimitsPatch(max_in_flight=10))
    assert made.tenant_id.startswith("t_") and made.name == "Acme"
    assert made.limits == DEFAULTS.model_copy(update={"max_in_flight": 10})
    changed = tenants.set_limits(made.tenant_id, LimitsPatch(allow_high_priority=True))
    assert changed.limits.max_in_flight == 10 and changed.limits.allow_high_priority
    assert tenants.get(made.tenant_id) == changed


def test_limits_of_an_unknown_tenant_cannot_be_set_and_a_tenant_is_made_once(tenants):
    with pytest.raises(TenantNotFound):
        tenants.set_limits("t_nobody", LimitsPatch(max_in_flight=1))
    tenants.create("dev", tenant_id="dev")
    with pytest.raises(Conflict):
        tenants.create("dev", tenant_id="dev")


def test_a_limit_change_reaches_other_processes_within_the_cache_ttl(tables, tenants, clock):
    made = tenants.create("Acme")
    elsewhere = TenantStore(tables[0], DEFAULTS, cache_ttl_s=30, now=clock)
    assert elsewhere.limits(made.tenant_id).max_in_flight == 3
    tenants.set_limits(made.tenant_id, LimitsPatch(max_in_flight=7))
    assert tenants.limits(made.tenant_id).max_in_flight == 7  # at once where it was changed
    assert elsewhere.limits(made.tenant_id).max_in_flight == 3
    clock.advance(31)
    assert elsewhere.limits(made.tenant_id).max_in_flight == 7


# --- stream polls ---------------------------------------------------------------------------------------

def test_stream_polls_are_counted_per_tenant_per_minute_with_retry_after(quotas, tenants, clock):
    tenants.create("Acme", LimitsPatch(stream_polls_per_minute=3), tenant_id="acme")
    clock.advance(60 - clock() % 60 + 15)  # 15 s into a minute
    for _ in range(3):
        quotas.poll("acme")
    with pytest.raises(QuotaExceeded) as refused:
        quotas.poll("acme")
    assert refused.value.field == "stream_polls_per_minute" and refused.value.retry_after_s == 45
    quotas.poll("other")  # another tenant has its own count
    clock.advance(45)  # the next minute
    for _ in range(3):
        quotas.poll("acme")
    with pytest.raises(QuotaExceeded):
        quotas.poll("acme")


def test_two_processes_share_one_poll_count(tables, tenants, clock):
    tenants.create("Acme", LimitsPatch(stream_polls_per_minute=4), tenant_id="acme")
    here, there = Quotas(tenants, now=clock), Quotas(tenants, now=clock)
    answered = 0
    for quotas in (here, there) * 3:
        try:
            quotas.poll("acme")
            answered += 1
        except QuotaExceeded:
            pass
    assert answered == 4


# --- API keys -----------------------------------------------------------------------------------------

def test_a_key_has_an_id_and_is_stored_only_as_a_digest(tables, clock):
    keys = ApiKeyStore(tables[1], now=clock)
    issued = keys.issue("acme")
    assert issued.key_id.startswith("key_") and issued.api_key.startswith("sh_")
    [item] = tables[1].scan()["Items"]
    assert item["key_hash"] == hash_key(issued.api_key) and issued.api_key not in str(item)
    who = keys.authenticate(f"Bearer {issued.api_key}")
    assert (who.tenant_id, who.admin, who.key_id) == ("acme", False, issued.key_id)


def test_an_expired_key_is_refused_from_its_expiry_on(tables, clock):
    keys = ApiKeyStore(tables[1], now=clock)
    issued = keys.issue("acme", expires_at=clock() + 60)
    assert keys.authenticate(f"Bearer {issued.api_key}").tenant_id == "acme"
    clock.advance(60)
    with pytest.raises(Unauthorized) as refused:
        keys.authenticate(f"Bearer {issued.api_key}")
    assert "expired" in refused.value.message


def test_a_revoked_key_stops_at_once_here_and_within_the_cache_ttl_elsewhere(tables, clock):
    here = ApiKeyStore(tables[1], cache_ttl_s=30, now=clock)
    elsewhere = ApiKeyStore(tables[1], cache_ttl_s=30, now=clock)
    issued = here.issue("acme")
    header = f"Bearer {issued.api_key}"
    elsewhere.authenticate(header)
    here.revoke(issued.key_id)
    with pytest.raises(Unauthorized):
        here.authenticate(header)
    assert elsewhere.authenticate(header).tenant_id == "acme"  # its cached copy, for at most the TTL
    clock.advance(30)
    with pytest.raises(Unauthorized):
        elsewhere.authenticate(header)


def test_a_tenant_cannot_revoke_another_tenants_key(tables, clock):
    keys = ApiKeyStore(tables[1], now=clock)
    issued = keys.issue("acme")
    with pytest.raises(KeyNotFound):
        keys.revoke(issued.key_id, tenant_id="other")
    with pytest.raises(KeyNotFound):
        keys.revoke("key_unknown")
    assert keys.authenticate(f"Bearer {issued.api_key}").tenant_id == "acme"
