"""Routing: which endpoint a job goes to, and in which order the dispatcher fails over."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from stillhouse.config import BreakerSettings, Policy, RouteSettings
from stillhouse.errors import ErrorClass
from stillhouse.jobs.status import JobStatus
from stillhouse.routing.breaker import Breaker
from stillhouse.routing.feedback import report_outcome, work_units
from stillhouse.routing.registry import EndpointRegistry, EndpointSpec
from stillhouse.routing.router import Plan, Router, route
from stillhouse.routing.state import BreakerState, EndpointState, EndpointStateStore
from tests.support.clock import T0, Clock
from tests.support.tables import create_config_table, create_state_table


def ep(name: str, **kw) -> EndpointSpec:
    return EndpointSpec(name=name, endpoint_id=f"id-{name}", **kw)


def st(name: str, **kw) -> EndpointState:
    return EndpointState(name=name, **kw)


def first_choices(candidates, states, policy, n=2000, seed=7, **kw) -> Counter:
    rng = random.Random(seed)
    return Counter(route(candidates, states, policy, rng, now=T0, **kw)[0].name for _ in range(n))


# --- weighted ---------------------------------------------------------------------------------


def test_weighted_splits_first_choices_by_weight():
    picks = first_choices([ep("a", weight=1), ep("b", weight=3)], {}, Policy.WEIGHTED, n=4000)
    assert picks["b"] / 4000 == pytest.approx(0.75, abs=0.03)


def test_the_plan_is_a_failover_list_of_every_allowed_endpoint():
    order = route([ep("a", weight=1), ep("b", weight=3), ep("c", weight=2)], {}, "weighted",
                  random.Random(1), now=T0)
    assert sorted(s.name for s in order) == ["a", "b", "c"]
    rest = [s.weight for s in order[1:]]
    assert rest == sorted(rest, reverse=True)  # after the first pick: best preference first


def test_weight_zero_is_standby_failover_only():
    picks = first_choices([ep("main"), ep("standby", weight=0)], {}, Policy.WEIGHTED, n=500)
    assert picks == Counter({"main": 500})
    order = route([ep("main"), ep("standby", weight=0)], {}, "weighted", random.Random(0), now=T0)
    assert [s.name for s in order] == ["main", "standby"]
    only = route([ep("standby", weight=0)], {}, "adaptive", random.Random(0), now=T0)
    assert [s.name for s in only] == ["standby"]


# --- least outstanding ------------------------------------------------------------------------


def test_least_outstanding_picks_the_emptier_endpoint():
    states = {"a": st("a", in_flight=10), "b": st("b", in_flight=2)}
    order = route([ep("a"), ep("b")], states, Policy.LEAST_OUTSTANDING, random.Random(0), now=T0)
    assert [s.name for s in order] == ["b", "a"]


def test_least_outstanding_counts_load_per_unit_of_weight():
    states = {"big": st("big", in_flight=10), "small": st("small", in_flight=3)}
    order = route([ep("big", weight=4), ep("small", weight=1)], states, "least_outstanding",
                  random.Random(0), now=T0)
    assert order[0].name == "big"  # 10/4 = 2.5 < 3/1


def test_least_outstanding_breaks_ties_at_random():
    picks = first_choices([ep("a"), ep("b")], {}, Policy.LEAST_OUTSTANDING, n=400)
    assert 150 < picks["a"] < 250


# --- adaptive (pure) --------------------------------------------------------------------------


def test_adaptive_prefers_the_faster_endpoint_but_still_explores():
    states = {"fast": st("fast", ema_latency_ms=100), "slow": st("slow", ema_latency_ms=2000)}
    picks = first_choices([ep("fast"), ep("slow")], states, Policy.ADAPTIVE)
    assert 0.01 < picks["slow"] / 2000 < 0.05  # ~ half of the 5% exploration
    none = first_choices([ep("fast"), ep("slow")], states, Policy.ADAPTIVE,
                         settings=RouteSettings(exploration=0))
    assert none["slow"] / 2000 < 0.005


def test_adaptive_prefers_the_healthier_endpoint():
    states = {"ok": st("ok", success_rate=1.0), "flaky": st("flaky", success_rate=0.5)}
    picks = first_choices([ep("ok"), ep("flaky")], states, Policy.ADAPTIVE)
    assert picks["ok"] / 2000 == pytest.approx(0.05 / 2 + 0.95 * 0.8, abs=0.03)  # 1 : 0.5^2


def test_adaptive_gives_a_new_endpoint_an_optimistic_prior():
    states = {"known": st("known", ema_latency_ms=300, samples=50)}
    picks = first_choices([ep("known"), ep("new")], states, Policy.ADAPTIVE)
    assert picks["new"] / 2000 == pytest.approx(0.5, abs=0.05)  # as fast as the best known


def test_adaptive_respects_the_configured_weight():
    picks = first_choices([ep("a", weight=1), ep("b", weight=3)], {}, Policy.ADAPTIVE, n=4000)
    assert picks["b"] / 4000 == pytest.approx(0.05 / 2 + 0.95 * 0.75, abs=0.03)


# --- the filter -------------------------------------------------------------------------------


def test_only_enabled_unsaturated_unthrottled_and_breaker_allowed_endpoints_are_routed():
    candidates = [ep("ok"), ep("off", enabled=False), ep("full", max_in_flight=2),
                  ep("throttled"), ep("open"), ep("probing"), ep("ready")]
    states = {
        "full": st("full", in_flight=2),
        "throttled": st("throttled", capacity_until=T0 + 5),
        "open": st("open", state=BreakerState.OPEN, open_until=T0 + 10),
        "probing": st("probing", state=BreakerState.HALF_OPEN, probes_claimed=BreakerSettings().half_open_probes,
                      probe_deadline=T0 + 100),  # every probe taken
        "ready": st("ready", state=BreakerState.OPEN, open_until=T0 - 1),
    }
    for policy in Policy:
        order = route(candidates, states, policy, random.Random(0), now=T0)
        # a breaker ready for a probe goes first, so recovery is noticed; the probe is claimed later
        assert [s.name for s in order] == ["ready", "ok"]


def test_nothing_routable_gives_an_empty_list():
    states = {"a": st("a", capacity_until=T0 + 5)}
    assert route([ep("a")], states, "adaptive", random.Random(0), now=T0) == []


# --- Router: registry + breaker + policy on DynamoDB -----------------------------------------


@pytest.fixture(scope="module")
def _aws(module_dynamodb):
    return (create_config_table(module_dynamodb, "test-config"),
            create_state_table(module_dynamodb, "test-endpoint-state"))


@pytest.fixture
def tables(_aws):
    config, state = _aws
    for item in config.scan(ProjectionExpression="id, sk")["Items"]:
        config.delete_item(Key=item)
    for item in state.scan(ProjectionExpression="#n", ExpressionAttributeNames={"#n": "name"})["Items"]:
        state.delete_item(Key=item)
    return config, state


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_router(tables, clock):
    config, state = tables

    def factory(*specs: EndpointSpec, seed: int = 0, **settings) -> Router:
        registry = EndpointRegistry(config, ttl_s=5, now=clock)
        for s in specs:
            registry.put(s)
        store = EndpointStateStore(state, sleep=lambda _: None, rng=random.Random(seed))
        breaker = Breaker(store, BreakerSettings(), now=clock)
        return Router(registry, breaker, settings=RouteSettings(**settings), rng=random.Random(seed))

    return factory


def test_adaptive_learns_to_prefer_the_fast_endpoint(make_router, clock):
    router = make_router(ep("fast"), ep("slow"), seed=3)
    latency = {"fast": 100.0, "slow": 500.0}  # the slow endpoint is 5x slower
    noise = random.Random(42)
    sent = Counter()
    for _ in range(200):
        plan = router.plan(None)
        target = plan[0]
        assert router.allow(target.name, plan)
        router.dispatched(target.name)
        router.succeeded(target.name, latency[target.name] * noise.uniform(0.8, 1.2))
        sent[target.name] += 1
        clock.advance(0.1)
    assert sent["fast"] / 200 >= 0.8
    assert sent["slow"] >= 2  # exploration keeps measuring it
    assert router.breaker.store.get("fast").in_flight == 0


def test_plan_filters_by_model(make_router):
    router = make_router(ep("llama", models=["llama"]), ep("qwen", models=["qwen"]),
                         ep("off", models=["llama"], enabled=False))
    assert [s.name for s in router.plan("llama")] == ["llama"]
    assert sorted(s.name for s in router.plan(None)) == ["llama", "qwen"]
    none = router.plan("mistral")
    assert (list(none), none.candidates, none.wait_s) == ([], 0, None)  # misconfiguration, not a wait


def test_an_empty_plan_says_how_long_to_wait(make_router, clock):
    router = make_router(ep("a"), ep("b"))
    router.failed("a", ErrorClass.CAPACITY, retry_after_s=30, release=False)
    router.failed("b", ErrorClass.CAPACITY, retry_after_s=10, release=False)
    plan = router.plan(None)
    assert (list(plan), plan.candidates, plan.wait_s) == ([], 2, 10)
    clock.advance(10)
    assert [s.name for s in router.plan(None)] == ["b"]  # same endpoint later


def test_the_policy_can_be_chosen_by_name(make_router):
    router = make_router(ep("a"), ep("b"), policy="least_outstanding")
    for _ in range(3):
        router.dispatched("a")
    assert router.plan(None)[0].name == "b"
    assert isinstance(router.plan(None, policy="weighted"), Plan)


def test_a_recovering_endpoint_gets_only_its_probes(make_router, clock):
    router = make_router(ep("a"), ep("b"))
    for _ in range(5):
        router.failed("a", ErrorClass.TRANSIENT, release=False)
    assert [s.name for s in router.plan(None)] == ["b"]
    clock.advance(30)
    plan = router.plan(None)
    assert [s.name for s in plan] == ["a", "b"]  # probe first
    for _ in range(BreakerSettings().half_open_probes):
        assert router.allow("a", plan)  # these jobs are the probes
    assert not router.allow("a", plan)  # the next job fails over to b
    assert [s.name for s in router.plan(None)] == ["b"]
    router.succeeded("a", 120, release=False)
    assert sorted(s.name for s in router.plan(None)) == ["a", "b"]


def test_dispatch_loop_fails_over_to_the_next_endpoint(make_router):
    """How the dispatcher uses the router (see docs/routing.md)."""
    router = make_router(ep("a", weight=100), ep("b", weight=1))
    outcome = {"a": ErrorClass.TRANSIENT, "b": None}  # a answers 503, b accepts
    used = None
    for endpoint in router.plan(None):
        if not router.allow(endpoint.name):
            continue
        error = outcome[endpoint.name]
        if error is None:
            router.dispatched(endpoint.name)
            used = endpoint.name
            break
        router.failed(endpoint.name, error, release=False)  # submit failed: never in flight
        if not error.retryable:
            break
    assert used == "b"
    assert router.breaker.view("a").consecutive_failures == 1
    assert router.breaker.store.get("b").in_flight == 1


def test_the_router_is_the_dispatchers_outcomes_sink(make_router, clock):
    class Refused(Exception):
        def __init__(self, error_class, retry_after_s=None):
            self.message, self.error_class, self.retry_after_s = "HTTP 429", error_class, retry_after_s

    router = make_router(ep("a"))
    router.refused("a", Refused(ErrorClass.CAPACITY, retry_after_s=7))
    assert router.breaker.view("a").capacity_until == clock() + 7
    router.submitted("a")
    assert router.breaker.store.get("a").in_flight == 1


def test_describe_lists_every_endpoint_with_its_health(make_router):
    router = make_router(ep("a"), ep("b", enabled=False))
    router.failed("a", ErrorClass.TRANSIENT, error="HTTP 502", release=False)
    views = {v.spec.name: v for v in router.describe()}
    assert set(views) == {"a", "b"}
    assert views["a"].health.last_error == "HTTP 502" and views["a"].health.accepting
    assert views["b"].health.state is BreakerState.CLOSED


def test_plan_sends_streaming_jobs_to_streaming_endpoints_only(make_router):
    router = make_router(ep("plain"), ep("stream", streaming=True))
    for _ in range(20):  # whatever the policy draws
        assert [s.name for s in router.plan(None, streaming=True)] == ["stream"]
        assert [s.name for s in router.plan(None)] == ["plain"]
    router.registry.update("stream", enabled=False)
    none = router.plan(None, streaming=True)
    assert (list(none), none.candidates) == ([], 0)  # nothing can stream: a configuration problem


# --- panic: too few healthy endpoints -> route to all that have room ----------------------------


def test_when_every_endpoint_is_open_the_plan_routes_to_all_of_them_rather_than_none():
    """A breaker shifts traffic to healthier endpoints; with none healthy, a 50% error rate must not
    become a 100% outage (Envoy's panic threshold)."""
    candidates = [ep("a"), ep("b"), ep("full", max_in_flight=1), ep("off", enabled=False)]
    half_failing = "1010110100"
    states = {"a": st("a", state=BreakerState.OPEN, open_until=T0 + 10, window=half_failing),
              "b": st("b", state=BreakerState.OPEN, open_until=T0 + 10, window=half_failing),
              "full": st("full", state=BreakerState.OPEN, open_until=T0 + 10, in_flight=1, window=half_failing)}
    order = route(candidates, states, "adaptive", random.Random(0), now=T0)
    assert sorted(s.name for s in order) == ["a", "b"]  # room still counts: full and disabled stay out


def test_in_panic_an_endpoint_that_only_fails_is_left_out_and_its_jobs_wait():
    """Hard down (no success among its last outcomes): routing to it would only spend jobs' attempts."""
    states = {"a": st("a", state=BreakerState.OPEN, open_until=T0 + 10, window="1" * 20),
              "b": st("b", state=BreakerState.OPEN, open_until=T0 + 10, window="1101")}
    assert [s.name for s in route([ep("a"), ep("b")], states, "adaptive", random.Random(0), now=T0)] == ["b"]
    assert route([ep("a")], {"a": states["a"]}, "adaptive", random.Random(0), now=T0) == []


def test_a_healthy_half_keeps_the_breakers_in_force():
    states = {"a": st("a", state=BreakerState.OPEN, open_until=T0 + 10)}
    assert [s.name for s in route([ep("a"), ep("b")], states, "adaptive", random.Random(0), now=T0)] == ["b"]


def test_panic_can_be_turned_off():
    states = {"a": st("a", state=BreakerState.OPEN, open_until=T0 + 10, window="0101")}
    off = RouteSettings(panic_below=0)
    assert route([ep("a")], states, "adaptive", random.Random(0), now=T0, settings=off) == []


def test_a_panic_plan_lets_jobs_past_an_open_breaker(make_router):
    router = make_router(ep("a"))
    router.succeeded("a", 100, release=False)  # it still answers sometimes
    for _ in range(5):
        router.failed("a", ErrorClass.TRANSIENT, release=False)
    plan = router.plan(None)
    assert plan.panic and [s.name for s in plan] == ["a"]
    assert router.allow("a", plan)
    assert router.breaker.view("a").state is BreakerState.OPEN  # the breaker itself still says open


def test_one_long_legitimate_job_does_not_open_a_warm_endpoints_breaker(make_router):
    """25 quick echo jobs, then a 30 s `sleep`: the breaker stays closed and the next job goes straight there."""
    router = make_router(ep("a"))
    echo = {"delayTime": 10, "executionTime": 50}
    for _ in range(25):
        report_outcome(router, "a", JobStatus.COMPLETED, None, None, echo, work_units("echo", {"text": "x"}))
    report_outcome(router, "a", JobStatus.COMPLETED, None, None, {"delayTime": 10, "executionTime": 30_000},
                   work_units("sleep", {"slept": 30}))
    assert router.breaker.view("a").state is BreakerState.CLOSED
    plan = router.plan(None)
    assert [s.name for s in plan] == ["a"] and not plan.panic


def test_a_long_generation_is_no_anomaly_when_its_per_token_time_is_normal(make_router):
    router = make_router(ep("a"))
    for _ in range(25):
        report_outcome(router, "a", JobStatus.COMPLETED, None, None, {"delayTime": 10, "executionTime": 400},
                       work_units("generate", {"completion_tokens": 20}))  # 20 ms per token
    long_one = {"text": "...", "completion_tokens": 2000}  # the same 20 ms per token, 40 s in all
    report_outcome(router, "a", JobStatus.COMPLETED, None, None, {"delayTime": 10, "executionTime": 40_000},
                   work_units("generate", long_one))
    assert router.breaker.view("a").state is BreakerState.CLOSED


# --- how fresh the states a dispatcher routes on are ----------------------------------------------


@pytest.fixture
def make_instance(tables, clock):
    """A router as one function instance has it, with its own store (what it knows) and the test's clock."""
    config, state = tables
    registry = EndpointRegistry(config, ttl_s=60, now=clock)
    for name in ("a", "b"):
        registry.put(ep(name))

    def factory(**settings) -> Router:
        store = EndpointStateStore(state, sleep=lambda _: None, rng=random.Random(0), clock=clock)
        return Router(registry, Breaker(store, BreakerSettings(), now=clock),
                      settings=RouteSettings(policy="least_outstanding", **settings), rng=random.Random(0))

    return factory


def _reads(tables) -> list[str]:
    calls: list[str] = []
    tables[1].meta.client.meta.events.register(
        "before-call.dynamodb", lambda model, **kw: calls.append(model.name) if "Get" in model.name else None)
    return calls


def test_within_state_max_age_a_dispatcher_routes_on_what_it_knows_without_a_read(make_instance, tables):
    mine = make_instance(state_max_age_s=1.0)
    mine.plan(None)
    reads = _reads(tables)
    for _ in range(3):
        mine.dispatched("a")  # its own jobs count at once: least outstanding now prefers b
        assert mine.plan(None)[0].name == "b"
        mine.dispatched("b")
    assert reads == []


def test_another_instances_news_arrive_within_state_max_age(make_instance, tables, clock):
    mine, other = make_instance(state_max_age_s=1.0), make_instance(state_max_age_s=1.0)
    assert sorted(s.name for s in mine.plan(None)) == ["a", "b"]
    for _ in range(5):
        other.failed("a", ErrorClass.TRANSIENT, release=False)  # another instance's results open a's breaker
    clock.advance(1.0)
    assert [s.name for s in mine.plan(None)] == ["b"]


def test_a_state_max_age_of_zero_reads_for_every_plan(make_instance, tables):
    mine = make_instance(state_max_age_s=0)
    mine.plan(None)
    reads = _reads(tables)
    mine.plan(None)
    mine.plan(None)
    assert reads == ["BatchGetItem", "BatchGetItem"]
