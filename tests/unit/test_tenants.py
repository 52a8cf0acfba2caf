"""Tenants and their quotas, and API keys with ids, expiry and revocation (moto in memory, a settable clock)."""
import pytest

from stillhouse.auth import ApiKeyStore, KeyNotFound, hash_key
from stillhouse.config import TenantLimits
from stillhouse.errors import Conflict, Forbidden, QuotaExceeded, Unauthorized, Unprocessable
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


class Jobs:
    """Which jobs still run, as the jobs table would say."""

    def __init__(self):
        self.running = set()

    def live(self, job_ids):
        return {j for j in job_ids if j in self.running}


@pytest.fixture
def jobs():
    return Jobs()


@pytest.fixture
def quotas(tenants, jobs, clock):
    return Quotas(tenants, jobs.live, now=clock)


def submit(quotas, jobs, tenant="acme", n=1, **kw):
    for _ in range(n):
        job_id = f"job{len(jobs.running)}-{id(object())}"
        quotas.admit(tenant, job_id, **kw)
        jobs.running.add(job_id)


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


# --- quotas -------------------------------------------------------------------------------------------

def test_requests_per_minute_is_a_token_bucket_with_retry_after(quotas, jobs, tenants, clock):
    tenants.create("Acme", LimitsPatch(requests_per_minute=3, max_in_flight=100), tenant_id="acme")
    submit(quotas, jobs, n=3)
    with pytest.raises(QuotaExceeded) as refused:
        submit(quotas, jobs)
    assert refused.value.field == "requests_per_minute" and refused.value.retry_after_s == 20
    clock.advance(20)  # one token back (3 a minute)
    submit(quotas, jobs)
    with pytest.raises(QuotaExceeded):
        submit(quotas, jobs)


def test_two_processes_share_one_bucket(tables, tenants, jobs, clock):
    tenants.create("Acme", LimitsPatch(requests_per_minute=4, max_in_flight=100), tenant_id="acme")
    here, there = Quotas(tenants, jobs.live, now=clock), Quotas(tenants, jobs.live, now=clock)
    admitted = 0
    for quotas in (here, there, here, there, here, there):
        try:
            submit(quotas, jobs)
            admitted += 1
        except QuotaExceeded:
            pass
    assert admitted == 4
    item = tables[0].get_item(Key={"tenant_id": "acme#in_flight"})["Item"]
    assert item["rate_tokens"] == 0 and len(item["live"]) == 4


def test_an_admitted_submission_is_one_write_a_token_and_a_place_together(quotas, jobs, tenants, tables):
    tenants.create("Acme", LimitsPatch(requests_per_minute=60, max_in_flight=5), tenant_id="acme")
    submit(quotas, jobs)  # the tenant's limits are read (and cached) once
    writes: list[str] = []
    tables[0].meta.client.meta.events.register("before-call.dynamodb", lambda model, **kw: writes.append(model.name))
    submit(quotas, jobs, n=2)
    assert writes == ["UpdateItem", "UpdateItem"]
    item = tables[0].get_item(Key={"tenant_id": "acme#in_flight"})["Item"]
    assert len(item["live"]) == 3 and item["rate_tokens"] < 58


def test_a_submission_refused_for_max_in_flight_takes_no_token(quotas, jobs, tenants, clock):
    tenants.create("Acme", LimitsPatch(requests_per_minute=4, max_in_flight=2), tenant_id="acme")
    submit(quotas, jobs, n=2)
    for _ in range(3):
        with pytest.raises(QuotaExceeded) as refused:
            submit(quotas, jobs)
        assert refused.value.field == "max_in_flight"
    jobs.running.clear()  # both end: the two tokens the refusals did not take are still there
    submit(quotas, jobs, n=2)


def test_max_in_flight_counts_jobs_that_have_not_ended(quotas, jobs):
    submit(quotas, jobs, n=3)
    with pytest.raises(QuotaExceeded) as refused:
        submit(quotas, jobs)
    assert refused.value.field == "max_in_flight" and refused.value.retry_after_s > 0
    jobs.running.pop()  # one ends (in any function): the next submission finds room
    submit(quotas, jobs)
    with pytest.raises(QuotaExceeded):
        submit(quotas, jobs)


def test_a_job_that_was_never_stored_does_not_hold_a_place(quotas, jobs):
    for i in range(3):
        quotas.admit("acme", f"lost{i}")  # admitted, then its submission failed before the job was written
    submit(quotas, jobs)


def test_high_priority_and_council_size_follow_the_tenants_limits(quotas, jobs, tenants):
    with pytest.raises(Forbidden) as refused:
        submit(quotas, jobs, high_priority=True)
    assert refused.value.field == "priority" and "allow_high_priority" in refused.value.message
    with pytest.raises(Unprocessable) as refused:
        submit(quotas, jobs, council_models=4)
    assert refused.value.field == "input.models" and "max_council_models" in refused.value.message
    tenants.create("Acme", LimitsPatch(allow_high_priority=True, max_council_models=4, max_in_flight=10),
                   tenant_id="acme")
    submit(quotas, jobs, high_priority=True, council_models=4, gpu_jobs=5)


def test_a_council_counts_its_gpu_jobs_against_the_rate_and_the_in_flight_limit(quotas, jobs, tenants, tables):
    tenants.create("Acme", LimitsPatch(requests_per_minute=60, max_in_flight=8), tenant_id="acme")
    submit(quotas, jobs, council_models=3, gpu_jobs=7)  # 3 members who rank, and the chair
    with pytest.raises(QuotaExceeded) as refused:
        submit(quotas, jobs, council_models=2, gpu_jobs=3)  # 7 + 3 > 8
    assert refused.value.field == "max_in_flight" and "runs 3" in refused.value.message
    submit(quotas, jobs)  # a plain job still fits: 7 + 1
    item = tables[0].get_item(Key={"tenant_id": "acme#in_flight"})["Item"]
    assert item["held"] == 8 and len(item["live"]) == 2  # one entry per job, not one per GPU job
    assert item["rate_tokens"] == 60 - 8


def test_the_rate_bucket_refuses_a_council_it_has_too_few_tokens_for(quotas, jobs, tenants, clock):
    tenants.create("Acme", LimitsPatch(requests_per_minute=6, max_in_flight=100), tenant_id="acme")
    submit(quotas, jobs, n=2)
    with pytest.raises(QuotaExceeded) as refused:
        submit(quotas, jobs, council_models=2, gpu_jobs=5)  # 4 tokens left, it needs 5
    assert refused.value.field == "requests_per_minute" and refused.value.retry_after_s == 10
    clock.advance(10)
    submit(quotas, jobs, council_models=2, gpu_jobs=5)


def test_a_job_costing_more_than_a_limit_allows_at_all_is_422_not_429(quotas, jobs, tenants):
    tenants.create("Acme", LimitsPatch(max_in_flight=4, max_council_models=4), tenant_id="acme")
    with pytest.raises(Unprocessable) as refused:
        submit(quotas, jobs, council_models=2, gpu_jobs=5)  # waiting would never make room for 5 of 4
    assert refused.value.field == "input.models" and "max_in_flight" in refused.value.message


def test_an_ended_council_gives_back_the_weight_it_took(quotas, jobs, tenants, tables):
    tenants.create("Acme", LimitsPatch(requests_per_minute=1000, max_in_flight=7), tenant_id="acme")
    submit(quotas, jobs, council_models=3, gpu_jobs=7)
    with pytest.raises(QuotaExceeded):
        submit(quotas, jobs)
    jobs.running.clear()  # the council ends (in whichever function): healing releases all 7
    submit(quotas, jobs, n=7)
    item = tables[0].get_item(Key={"tenant_id": "acme#in_flight"})["Item"]
    assert item["held"] == 7 and len(item["live"]) == 7


def test_two_processes_healing_at_once_release_a_weight_once(quotas, jobs, tenants, tables):
    tenants.create("Acme", LimitsPatch(requests_per_minute=1000, max_in_flight=10), tenant_id="acme")
    submit(quotas, jobs, council_models=2, gpu_jobs=5)
    quotas.admit("acme", "ended-council", council_models=2, gpu_jobs=5)  # never running: to be healed
    first = Quotas(tenants, jobs.live)
    real_live = jobs.live

    def live_while_another_heals(job_ids):
        found = real_live(job_ids)
        if not getattr(live_while_another_heals, "done", False):
            live_while_another_heals.done = True
            first._heal("acme")  # heals between this process's read and its write
        return found

    Quotas(tenants, live_while_another_heals)._heal("acme")
    item = tables[0].get_item(Key={"tenant_id": "acme#in_flight"})["Item"]
    assert item["held"] == 5 and len(item["live"]) == 1


def test_an_in_flight_set_from_before_weights_is_counted_once_and_then_weighed(quotas, jobs, tenants, tables):
    tenants.create("Acme", LimitsPatch(requests_per_minute=1000, max_in_flight=4), tenant_id="acme")
    tables[0].put_item(Item={"tenant_id": "acme#in_flight", "live": {"old1", "old2"}})  # no `held`
    jobs.running.update({"old1", "old2"})
    submit(quotas, jobs)
    with pytest.raises(QuotaExceeded):
        submit(quotas, jobs, council_models=2, gpu_jobs=3)  # 2 old + 1 new + 3 > 4
    assert tables[0].get_item(Key={"tenant_id": "acme#in_flight"})["Item"]["held"] == 3


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


def test_two_processes_share_one_poll_count(tables, tenants, jobs, clock):
    tenants.create("Acme", LimitsPatch(stream_polls_per_minute=4), tenant_id="acme")
    here, there = Quotas(tenants, jobs.live, now=clock), Quotas(tenants, jobs.live, now=clock)
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


def test_the_in_flight_set_holds_the_running_jobs_and_few_ended_ones(quotas, jobs, tenants, tables):
    tenants.create("Acme", LimitsPatch(requests_per_minute=1000, max_in_flight=1000), tenant_id="acme")
    for i in range(120):
        quotas.admit("acme", f"done{i}")  # each ends at once: never in jobs.running
    submit(quotas, jobs, n=3)
    item = tables[0].get_item(Key={"tenant_id": "acme#in_flight"})["Item"]
    assert set(jobs.running) <= item["live"] and len(item["live"]) <= 3 + 2 * 25
