"""A tenant's rate and in-flight quotas, split over small shard items (moto in memory, a settable clock).

The spec: a limit is never passed; an admitted job is one write of one small item, whatever the number of
jobs in flight; an ended job gives its places back; a give-back that was lost is recounted by the sweeper;
a shard DynamoDB throttles is stepped around."""
import pytest
from botocore.exceptions import ClientError

from stillhouse.config import TenantLimits
from stillhouse.errors import AwsUnavailable, Forbidden, QuotaExceeded, Unprocessable
from stillhouse.tenants.quotas import QUIET_S, SHARDS_MAX, Quotas, shard_count, shard_key
from stillhouse.tenants.store import LimitsPatch, TenantStore
from tests.support.clock import Clock
from tests.support.tables import create_tenants_table

DEFAULTS = TenantLimits(requests_per_minute=60, max_in_flight=3, max_council_models=3)


@pytest.fixture(scope="module")
def _table(module_dynamodb):
    return create_tenants_table(module_dynamodb, "quota-tenants")


@pytest.fixture
def table(_table):
    for item in _table.scan(ProjectionExpression="tenant_id")["Items"]:
        _table.delete_item(Key=item)
    return _table


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def tenants(table, clock):
    return TenantStore(table, DEFAULTS, cache_ttl_s=30, now=clock)


class Jobs:
    """The tenant's jobs that have not ended, each with the hold admit gave it (as the jobs table keeps it)."""

    def __init__(self):
        self.running: dict[str, tuple[str, str]] = {}  # job id -> (tenant, hold)

    def submit(self, quotas, tenant="acme", n=1, **kw):
        for _ in range(n):
            job_id = f"job{len(self.running)}-{id(object())}"
            self.running[job_id] = (tenant, quotas.admit(tenant, job_id, **kw))

    def end(self, quotas, n=1):
        """`n` jobs end: the terminal write's give-back (JobStore.on_finished)."""
        for job_id in list(self.running)[:n]:
            tenant, hold = self.running.pop(job_id)
            quotas.release_finished(tenant, hold)

    def holds(self):
        return list(self.running.values())


@pytest.fixture
def jobs():
    return Jobs()


@pytest.fixture
def quotas(tenants, clock):
    return Quotas(tenants, now=clock)


def shards_of(table, tenant="acme"):
    items = table.scan()["Items"]
    return {item["tenant_id"]: item for item in items if item["tenant_id"].startswith(f"{tenant}#in_flight#")}


# --- the rate ---------------------------------------------------------------------------------------------

def test_requests_per_minute_is_a_token_bucket_with_retry_after(quotas, jobs, tenants, clock):
    tenants.create("Acme", LimitsPatch(requests_per_minute=3, max_in_flight=100), tenant_id="acme")
    jobs.submit(quotas, n=3)
    with pytest.raises(QuotaExceeded) as refused:
        jobs.submit(quotas)
    assert refused.value.field == "requests_per_minute" and refused.value.retry_after_s == 20
    clock.advance(20)  # one token back (3 a minute)
    jobs.submit(quotas)
    with pytest.raises(QuotaExceeded):
        jobs.submit(quotas)


def test_two_processes_share_one_bucket(table, tenants, jobs, clock):
    tenants.create("Acme", LimitsPatch(requests_per_minute=4, max_in_flight=100), tenant_id="acme")
    here, there = Quotas(tenants, now=clock), Quotas(tenants, now=clock)
    admitted = 0
    for quotas in (here, there, here, there, here, there):
        try:
            jobs.submit(quotas)
            admitted += 1
        except QuotaExceeded:
            pass
    assert admitted == 4
    [item] = shards_of(table).values()
    assert item["rate_tokens"] == 0 and item["held"] == 4


def test_the_rate_bucket_refuses_a_council_it_has_too_few_tokens_for(quotas, jobs, tenants, clock):
    tenants.create("Acme", LimitsPatch(requests_per_minute=6, max_in_flight=100), tenant_id="acme")
    jobs.submit(quotas, n=2)
    with pytest.raises(QuotaExceeded) as refused:
        jobs.submit(quotas, council_models=2, gpu_jobs=5)  # 4 tokens left, it needs 5
    assert refused.value.field == "requests_per_minute" and refused.value.retry_after_s == 10
    clock.advance(10)
    jobs.submit(quotas, council_models=2, gpu_jobs=5)


# --- jobs in flight ---------------------------------------------------------------------------------------

def test_an_admitted_submission_is_one_write_of_one_small_item(quotas, jobs, tenants, table):
    tenants.create("Acme", LimitsPatch(requests_per_minute=60, max_in_flight=5), tenant_id="acme")
    jobs.submit(quotas)  # the tenant's limits are read (and cached) once
    calls: list[str] = []
    table.meta.client.meta.events.register("before-call.dynamodb", lambda model, **kw: calls.append(model.name))
    jobs.submit(quotas, n=2)
    assert calls == ["UpdateItem", "UpdateItem"]
    [item] = shards_of(table).values()
    assert item["held"] == 3 and item["rate_tokens"] < 58


def test_max_in_flight_counts_jobs_until_their_end_gives_them_back(quotas, jobs):
    jobs.submit(quotas, n=3)
    with pytest.raises(QuotaExceeded) as refused:
        jobs.submit(quotas)
    assert refused.value.field == "max_in_flight" and refused.value.retry_after_s > 0
    jobs.end(quotas)  # one ends (in any function): the next submission finds room
    jobs.submit(quotas)
    with pytest.raises(QuotaExceeded):
        jobs.submit(quotas)


def test_a_submission_refused_for_max_in_flight_takes_no_token(quotas, jobs, tenants):
    tenants.create("Acme", LimitsPatch(requests_per_minute=4, max_in_flight=2), tenant_id="acme")
    jobs.submit(quotas, n=2)
    for _ in range(3):
        with pytest.raises(QuotaExceeded) as refused:
            jobs.submit(quotas)
        assert refused.value.field == "max_in_flight"
    jobs.end(quotas, n=2)  # both end: the two tokens the refusals did not take are still there
    jobs.submit(quotas, n=2)


def test_a_council_holds_its_gpu_jobs_and_gives_them_all_back(quotas, jobs, tenants, table):
    tenants.create("Acme", LimitsPatch(requests_per_minute=60, max_in_flight=8), tenant_id="acme")
    jobs.submit(quotas, council_models=3, gpu_jobs=7)  # 3 members who rank, and the chair
    with pytest.raises(QuotaExceeded) as refused:
        jobs.submit(quotas, council_models=2, gpu_jobs=3)  # 7 + 3 > 8
    assert refused.value.field == "max_in_flight" and "runs 3" in refused.value.message
    jobs.submit(quotas)  # a plain job still fits: 7 + 1
    [item] = shards_of(table).values()
    assert item["held"] == 8 and item["rate_tokens"] == 60 - 8
    jobs.end(quotas, n=2)
    assert shards_of(table)[shard_key("acme", 0)]["held"] == 0
    jobs.submit(quotas, council_models=3, gpu_jobs=7)


def test_a_give_back_is_never_counted_twice(quotas, jobs):
    jobs.submit(quotas)
    [(tenant, hold)] = jobs.holds()
    assert quotas.release(tenant, hold) is True
    assert quotas.release(tenant, hold) is False  # nothing held any more: never below zero


def test_high_priority_and_council_size_follow_the_tenants_limits(quotas, jobs, tenants):
    with pytest.raises(Forbidden) as refused:
        jobs.submit(quotas, high_priority=True)
    assert refused.value.field == "priority" and "allow_high_priority" in refused.value.message
    with pytest.raises(Unprocessable) as refused:
        jobs.submit(quotas, council_models=4)
    assert refused.value.field == "input.models" and "max_council_models" in refused.value.message
    tenants.create("Acme", LimitsPatch(allow_high_priority=True, max_council_models=4, max_in_flight=10),
                   tenant_id="acme")
    jobs.submit(quotas, high_priority=True, council_models=4, gpu_jobs=5)


def test_a_job_costing_more_than_a_limit_allows_at_all_is_422_not_429(quotas, jobs, tenants):
    tenants.create("Acme", LimitsPatch(max_in_flight=4, max_council_models=4), tenant_id="acme")
    with pytest.raises(Unprocessable) as refused:
        jobs.submit(quotas, council_models=2, gpu_jobs=5)  # waiting would never make room for 5 of 4
    assert refused.value.field == "input.models" and "max_in_flight" in refused.value.message


# --- shards: no hot item ----------------------------------------------------------------------------------

def test_a_large_tenant_is_split_over_small_items_that_do_not_grow_with_its_jobs(tenants, jobs, table, clock):
    tenants.create("Big", LimitsPatch(requests_per_minute=600_000, max_in_flight=5_000), tenant_id="big")
    assert shard_count(tenants.limits("big")) == SHARDS_MAX
    quotas = Quotas(tenants, now=clock)
    jobs.submit(quotas, tenant="big", n=400)
    shards = shards_of(table, "big")
    assert len(shards) == SHARDS_MAX  # picked at random: 400 jobs reach every one of 16
    assert sum(int(item["held"]) for item in shards.values()) == 400
    # Each write costs one write unit (1 KB) whatever the jobs in flight: the item holds numbers only.
    assert max(len(str(item)) for item in shards.values()) < 200


def test_a_limit_is_never_passed_when_every_submission_picks_the_same_shard(tenants, jobs, clock):
    tenants.create("Acme", LimitsPatch(requests_per_minute=100_000, max_in_flight=100), tenant_id="acme")
    quotas = Quotas(tenants, now=clock, pick=lambda shards: 0)  # shard 0 first, always
    assert shard_count(tenants.limits("acme")) == 3
    jobs.submit(quotas, n=100)  # shard 0 fills (34), then the others are read and filled
    with pytest.raises(QuotaExceeded) as refused:
        jobs.submit(quotas)
    assert refused.value.field == "max_in_flight"
    assert len(jobs.running) == 100


def test_the_rate_split_over_shards_still_admits_a_minutes_worth(tenants, jobs, clock):
    tenants.create("Acme", LimitsPatch(requests_per_minute=96, max_in_flight=5_000), tenant_id="acme")
    quotas = Quotas(tenants, now=clock, pick=lambda shards: 0)
    jobs.submit(quotas, n=96)
    with pytest.raises(QuotaExceeded) as refused:
        jobs.submit(quotas)
    assert refused.value.field == "requests_per_minute" and 1 <= refused.value.retry_after_s <= 2


class ThrottledTable:
    """The tenants table, with DynamoDB refusing writes of some items as too hot (after botocore's retries)."""

    def __init__(self, table, hot):
        self._table, self.hot = table, hot

    def __getattr__(self, name):
        return getattr(self._table, name)

    def update_item(self, **kw):
        if kw["Key"]["tenant_id"] in self.hot:
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "hot"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "UpdateItem")
        return self._table.update_item(**kw)


def test_a_throttled_hot_shard_is_stepped_around_and_all_throttled_is_503(table, jobs, clock):
    hot = ThrottledTable(table, hot={shard_key("acme", 0)})
    tenants = TenantStore(hot, DEFAULTS, cache_ttl_s=30, now=clock)
    tenants.create("Acme", LimitsPatch(requests_per_minute=6_000, max_in_flight=500), tenant_id="acme")
    quotas = Quotas(tenants, now=clock, pick=lambda shards: 0)
    jobs.submit(quotas, n=20)  # shard 0 is throttled every time: each goes elsewhere
    assert {hold.partition("*")[0] for _, hold in jobs.holds()} - {"0"} and len(jobs.running) == 20
    assert shard_key("acme", 0) not in shards_of(table)
    hot.hot = {shard_key("acme", k) for k in range(shard_count(tenants.limits("acme")))}
    with pytest.raises(AwsUnavailable):
        jobs.submit(quotas)  # 503 + Retry-After: nothing was taken
    assert sum(int(item["held"]) for item in shards_of(table).values()) == 20


# --- healing a lost give-back ----------------------------------------------------------------------------

def test_places_of_jobs_that_ended_without_giving_back_are_recounted_once_the_shard_is_quiet(
        quotas, jobs, tenants, clock):
    tenants.create("Acme", LimitsPatch(requests_per_minute=1_000, max_in_flight=3), tenant_id="acme")
    jobs.submit(quotas, n=2)
    quotas.admit("acme", "lost")  # admitted, then its submission died before the job was written
    with pytest.raises(QuotaExceeded):
        jobs.submit(quotas)
    assert quotas.heal(jobs.holds) == 0  # it took a job just now: a job admitted may not be stored yet
    clock.advance(QUIET_S + 1)
    assert quotas.heal(jobs.holds) == 1
    jobs.submit(quotas)  # the lost job's place is back; the two live ones still count
    with pytest.raises(QuotaExceeded):
        jobs.submit(quotas)


def test_a_recount_yields_to_a_job_given_back_meanwhile(quotas, jobs, tenants, table, clock):
    tenants.create("Acme", LimitsPatch(requests_per_minute=1_000, max_in_flight=3), tenant_id="acme")
    jobs.submit(quotas, n=2)
    quotas.admit("acme", "lost")
    clock.advance(QUIET_S + 1)

    def holds_while_a_job_ends():
        listed = jobs.holds()  # read before the end below: it still counts the job that ends
        jobs.end(quotas)
        return listed

    assert quotas.heal(holds_while_a_job_ends) == 0  # the shard changed under it: the next round
    assert quotas.heal(jobs.holds) == 1
    [item] = shards_of(table).values()
    assert item["held"] == 1  # the one live job: the ended one and the lost one were each released once
