"""The distributed circuit breaker: one state machine per endpoint, shared through DynamoDB."""
from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from stillhouse.config import BreakerSettings
from stillhouse.errors import ErrorClass
from stillhouse.routing.breaker import Breaker, OpenReason, on_failure
from stillhouse.routing.state import BreakerState, EndpointState, EndpointStateStore, StateConflict
from tests.support.clock import T0, Clock
from tests.support.tables import create_state_table

STATE_TABLE = "test-endpoint-state"
EP = "gpu-a"


class InterleavingStore(EndpointStateStore):
    """Runs `between` right before this store's next conditional write(s): another function writing in
    between what we know of the item and our write, deterministically."""

    def __init__(self, table, between, times: int = 1) -> None:
        super().__init__(table, sleep=lambda _: None, rng=random.Random(0))
        self.between, self.times = between, times

    def _write(self, current, state, **kw):
        if self.times:
            self.times -= 1
            self.between()
        return super()._write(current, state, **kw)


@pytest.fixture(scope="module")
def _aws(module_dynamodb):
    return create_state_table(module_dynamodb, STATE_TABLE)


@pytest.fixture
def state_table(_aws):
    for item in _aws.scan(ProjectionExpression="#n", ExpressionAttributeNames={"#n": "name"})["Items"]:
        _aws.delete_item(Key=item)
    return _aws


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make(state_table, clock):
    """A new Breaker on the shared table: each call is another Lambda instance."""

    def factory(**settings) -> Breaker:
        store = EndpointStateStore(state_table, sleep=lambda _: None, rng=random.Random(0))
        return Breaker(store, BreakerSettings(**settings), now=clock)

    return factory


@pytest.fixture
def breaker(make):
    return make()


def fail(b: Breaker, n: int, cls: ErrorClass = ErrorClass.TRANSIENT, **kw) -> None:
    for _ in range(n):
        b.record_failure(EP, cls, **kw)


def trip(b: Breaker, **kw) -> None:
    fail(b, b.settings.consecutive_failures, **kw)
    assert b.view(EP).state is BreakerState.OPEN


# --- CLOSED -> OPEN ---------------------------------------------------------------------------


def test_a_new_endpoint_is_closed_and_allowed(breaker):
    assert breaker.view(EP).state is BreakerState.CLOSED
    assert breaker.allow(EP)


def test_opens_after_n_consecutive_transient_failures(breaker):
    fail(breaker, 4)
    assert breaker.view(EP).state is BreakerState.CLOSED
    fail(breaker, 1)
    view = breaker.view(EP)
    assert (view.state, view.opened_reason) == (BreakerState.OPEN, "consecutive_failures")
    assert not breaker.allow(EP)


def test_worker_lost_counts_like_transient(breaker):
    fail(breaker, 5, ErrorClass.WORKER_LOST)
    assert breaker.view(EP).state is BreakerState.OPEN


def test_a_success_resets_the_consecutive_count(breaker):
    fail(breaker, 4)
    breaker.record_success(EP, 100)
    fail(breaker, 4)
    assert breaker.view(EP).state is BreakerState.CLOSED


def test_terminal_errors_never_trip_but_are_shown(breaker):
    fail(breaker, 50, ErrorClass.TERMINAL, error="input.prompt missing")
    view = breaker.view(EP)
    assert view.state is BreakerState.CLOSED and breaker.allow(EP)
    assert (view.last_error, view.last_error_class) == ("input.prompt missing", "terminal")
    assert view.samples == 0  # not an outcome of the endpoint's health


def test_failure_rate_over_the_window_opens_without_consecutive_failures(breaker):
    # success, failure, success, failure...: never 2 in a row, but half of the window fails
    for i in range(9):
        (breaker.record_success(EP, 100) if i % 2 == 0 else breaker.record_failure(EP, ErrorClass.TRANSIENT))
    assert breaker.view(EP).state is BreakerState.CLOSED  # 9 outcomes < min volume 10
    breaker.record_failure(EP, ErrorClass.TRANSIENT)
    view = breaker.view(EP)
    assert (view.state, view.opened_reason, view.failure_rate) == (BreakerState.OPEN, "failure_rate", 0.5)


def test_success_rate_ema_under_the_floor_opens_early(make):
    b = make(consecutive_failures=100, failure_rate=1.0)  # only the predictive check is left
    for _ in range(20):
        b.record_success(EP, 100)
    fail(b, 6)
    assert b.view(EP).state is BreakerState.CLOSED  # 0.8^6 = 0.26
    fail(b, 1)
    assert b.view(EP).opened_reason == "success_rate"


# --- capacity (429): back off, same endpoint later, breaker untouched -------------------------


def test_capacity_does_not_trip_but_backs_off_for_retry_after(breaker, clock):
    fail(breaker, 10, ErrorClass.CAPACITY, retry_after_s=20)
    view = breaker.view(EP)
    assert view.state is BreakerState.CLOSED
    assert view.capacity_until == T0 + 20
    assert not view.accepting  # routing skips it...
    assert breaker.allow(EP)  # ...but the breaker itself is not open
    clock.advance(20)
    assert breaker.view(EP).accepting


def test_capacity_without_retry_after_uses_the_default_backoff(breaker):
    breaker.record_failure(EP, ErrorClass.CAPACITY)
    assert breaker.view(EP).capacity_until == T0 + 5


def test_a_shorter_retry_after_does_not_shorten_a_longer_backoff(breaker):
    breaker.record_failure(EP, ErrorClass.CAPACITY, retry_after_s=60)
    breaker.record_failure(EP, ErrorClass.CAPACITY, retry_after_s=1)
    assert breaker.view(EP).capacity_until == T0 + 60


# --- OPEN -> HALF_OPEN -> CLOSED | OPEN --------------------------------------------------------


def test_half_open_after_the_cooldown(breaker, clock):
    trip(breaker)
    clock.advance(29.9)
    assert not breaker.allow(EP)
    clock.advance(0.1)
    assert breaker.allow(EP)  # this caller holds the probe
    assert breaker.view(EP).state is BreakerState.HALF_OPEN


def test_retry_after_longer_than_the_cooldown_is_honoured(breaker, clock):
    trip(breaker, retry_after_s=120)
    assert breaker.view(EP).open_until == T0 + 120
    clock.advance(119)
    assert not breaker.allow(EP)
    clock.advance(1)
    assert breaker.allow(EP)


def test_only_k_probes_are_granted_across_instances(make, clock):
    a, b, c = make(half_open_probes=2), make(half_open_probes=2), make(half_open_probes=2)
    trip(a)
    clock.advance(30)
    assert [a.allow(EP), b.allow(EP), c.allow(EP)] == [True, True, False]


def test_probe_success_closes_with_a_fresh_start(breaker, clock):
    trip(breaker)
    clock.advance(30)
    assert breaker.allow(EP)
    breaker.record_success(EP, 100)
    view = breaker.view(EP)
    assert (view.state, view.consecutive_failures, view.window_outcomes, view.success_rate) == (
        BreakerState.CLOSED, 0, 0, 1.0
    )
    assert view.opened_reason is None and breaker.allow(EP)


def test_closing_can_require_several_probe_successes(make, clock):
    b = make(half_open_successes=2)
    trip(b)
    clock.advance(30)
    assert b.allow(EP)
    b.record_success(EP, 100)
    assert b.view(EP).state is BreakerState.HALF_OPEN
    assert b.allow(EP)  # the first probe's slot was freed by its result
    b.record_success(EP, 100)
    assert b.view(EP).state is BreakerState.CLOSED


def test_probe_failure_reopens_with_a_longer_cooldown(breaker, clock):
    trip(breaker)
    clock.advance(30)
    assert breaker.allow(EP)
    breaker.record_failure(EP, ErrorClass.TRANSIENT)
    view = breaker.view(EP)
    assert (view.state, view.opened_reason) == (BreakerState.OPEN, "probe_failed")
    assert view.open_until == clock() + 60  # 30 s x growth 2
    clock.advance(59)
    assert not breaker.allow(EP)
    clock.advance(1)
    assert breaker.allow(EP)


def test_cooldown_growth_is_capped(make, clock):
    b = make(max_cooldown_s=100)
    trip(b)
    for _ in range(5):
        clock.advance(b.view(EP).open_until - clock())
        assert b.allow(EP)
        b.record_failure(EP, ErrorClass.TRANSIENT)
    assert b.view(EP).open_until == clock() + 100


def test_a_probe_that_never_reports_frees_its_slot_after_the_probe_timeout(make, clock):
    breaker = make(half_open_probes=1)
    trip(breaker)
    clock.advance(30)
    assert breaker.allow(EP)  # this probe's function dies without a result
    clock.advance(299)
    assert not breaker.allow(EP)
    clock.advance(1)
    assert breaker.allow(EP)


def test_a_capacity_answer_to_a_probe_frees_the_slot_without_deciding(breaker, clock):
    trip(breaker)
    clock.advance(30)
    assert breaker.allow(EP)
    breaker.record_failure(EP, ErrorClass.CAPACITY, retry_after_s=5)
    assert breaker.view(EP).state is BreakerState.HALF_OPEN
    assert breaker.allow(EP)


# --- predictive: latency anomaly --------------------------------------------------------------


def test_latency_anomaly_opens_before_any_failure(breaker):
    for _ in range(30):
        breaker.record_success(EP, 1000)
    breaker.record_success(EP, 10000)  # one spike is not an anomaly
    assert breaker.view(EP).state is BreakerState.CLOSED
    for _ in range(30):
        breaker.record_success(EP, 1000)
    for n in range(1, 11):  # 5x slower, still succeeding
        if breaker.record_success(EP, 5000).state is BreakerState.OPEN:
            break
    view = breaker.view(EP)
    assert (view.state, view.opened_reason) == (BreakerState.OPEN, "latency_anomaly")
    assert n <= 6 and view.consecutive_failures == 0


def test_a_few_hundred_ms_of_queueing_on_short_jobs_is_load_not_an_anomaly(breaker):
    for _ in range(30):
        breaker.record_success(EP, 100)
    for _ in range(30):  # 5x slower but only +400 ms: routing weighs it, the breaker stays shut
        breaker.record_success(EP, 500)
    assert breaker.view(EP).state is BreakerState.CLOSED


def test_no_latency_verdict_before_the_minimum_sample_count(breaker):
    for _ in range(5):
        breaker.record_success(EP, 100)
    for _ in range(10):
        breaker.record_success(EP, 2000)  # 15 samples < min_samples 20
    assert breaker.view(EP).state is BreakerState.CLOSED


def test_a_lasting_latency_shift_is_accepted_after_recovery(breaker, clock):
    for _ in range(30):
        breaker.record_success(EP, 1000)
    for _ in range(10):
        if breaker.record_success(EP, 5000).state is BreakerState.OPEN:
            break
    assert breaker.view(EP).state is BreakerState.OPEN
    clock.advance(30)
    assert breaker.allow(EP)
    for _ in range(100):  # the endpoint is simply slower now (bigger model, other GPU)
        assert breaker.record_success(EP, 5000).state is BreakerState.CLOSED


def test_statistics_are_kept(breaker):
    breaker.record_success(EP, 100)
    breaker.record_success(EP, 200)
    breaker.record_failure(EP, ErrorClass.TRANSIENT, latency_ms=300, error="HTTP 502")
    view = breaker.view(EP)
    assert view.samples == 3
    assert view.ema_latency_ms == pytest.approx(0.2 * 300 + 0.8 * (0.2 * 200 + 0.8 * 100))
    assert view.success_rate == pytest.approx(0.8)
    assert (view.last_error, view.last_error_class) == ("HTTP 502", "transient")


# --- distributed: one breaker across instances ------------------------------------------------


def test_instances_sharing_the_table_see_one_breaker(make):
    a, b = make(), make()
    fail(a, 3)
    fail(b, 2)
    assert a.view(EP).state is b.view(EP).state is BreakerState.OPEN


def test_a_conflicting_write_is_retried_on_the_fresh_state(state_table, make, clock):
    other = make()
    store = InterleavingStore(state_table, lambda: other.record_failure(EP, ErrorClass.TRANSIENT))
    mine = Breaker(store, BreakerSettings(), now=clock)
    mine.record_failure(EP, ErrorClass.TRANSIENT)  # read v0; other writes v1; ours conflicts; retry
    state = store.get(EP)
    assert (state.version, state.consecutive_failures, state.samples) == (2, 2, 2)


def test_two_instances_racing_for_the_last_probe_get_one(state_table, make, clock):
    other = make(half_open_probes=1)
    trip(other)
    clock.advance(30)
    granted: list[bool] = []
    store = InterleavingStore(state_table, lambda: granted.append(other.allow(EP)))
    mine = Breaker(store, BreakerSettings(half_open_probes=1), now=clock)
    granted.append(mine.allow(EP))
    assert granted == [True, False]  # the other claimed in between; we saw its claim and lost


def test_endless_conflicts_drop_the_outcome_rather_than_fail_the_job(state_table, make, clock):
    other = make()
    store = InterleavingStore(
        state_table, lambda: other.record_failure(EP, ErrorClass.TERMINAL), times=100
    )
    mine = Breaker(store, BreakerSettings(), now=clock)
    assert mine.record_success(EP, 100) is None  # logged and dropped
    with pytest.raises(StateConflict):
        store.update(EP, lambda s: s)


# --- in_flight: atomic, never negative, never clobbered ---------------------------------------


def test_in_flight_is_atomic_and_never_negative(breaker):
    store = breaker.store
    store.add_in_flight(EP, 1)
    store.add_in_flight(EP, 1)
    store.add_in_flight(EP, -1)
    assert store.get(EP).in_flight == 1
    store.add_in_flight(EP, -1)
    store.add_in_flight(EP, -1)  # a duplicate result
    assert store.get(EP).in_flight == 0


def test_breaker_writes_do_not_overwrite_in_flight(state_table, make, clock):
    other = make()
    store = InterleavingStore(state_table, lambda: other.store.add_in_flight(EP, 3))
    Breaker(store, BreakerSettings(), now=clock).record_success(EP, 100)
    assert store.get(EP).in_flight == 3


# --- the transitions are pure ----------------------------------------------------------------


def test_transitions_run_without_dynamodb():
    s = EndpointState(name=EP)
    for _ in range(5):
        s = on_failure(s, ErrorClass.TRANSIENT, BreakerSettings(), T0)
    assert (s.state, s.opened_reason) == (BreakerState.OPEN, OpenReason.CONSECUTIVE_FAILURES)


def _count_writes(table) -> list[str]:
    writes: list[str] = []
    table.meta.client.meta.events.register("before-call.dynamodb.UpdateItem",
                                           lambda **kw: writes.append(kw["params"].get("UpdateExpression", "")))
    return writes


def _count_calls(table) -> list[str]:
    calls: list[str] = []
    table.meta.client.meta.events.register("before-call.dynamodb", lambda model, **kw: calls.append(model.name))
    return calls


def test_an_outcome_after_this_instances_own_write_is_one_write_and_no_read(breaker, state_table):
    breaker.record_success(EP, 100)
    calls = _count_calls(state_table)
    breaker.record_success(EP, 100)
    breaker.record_failure(EP, ErrorClass.TRANSIENT)
    assert calls == ["UpdateItem", "UpdateItem"]
    assert (breaker.store.get(EP).samples, breaker.store.get(EP).version) == (3, 3)


def test_a_stale_view_costs_a_refused_write_not_a_read_and_loses_no_outcome(make, state_table):
    mine, other = make(), make()
    mine.record_success(EP, 100)
    other.record_failure(EP, ErrorClass.TRANSIENT)  # mine's view of the item is now one version behind
    calls = _count_calls(state_table)
    mine.record_failure(EP, ErrorClass.TRANSIENT)
    assert calls == ["UpdateItem", "UpdateItem"]  # refused (with the item as it is), then written
    state = mine.store.get(EP)
    assert (state.version, state.samples, state.consecutive_failures) == (3, 3, 2)


def test_an_instance_whose_views_keep_being_overtaken_reads_first_and_guesses_again_when_it_would_pay(
        make, state_table):
    mine, other = make(), make()
    mine.record_success(EP, 100)
    for _ in range(4):  # another instance writes between each of mine: mine's guesses are refused
        other.record_success(EP, 100)
        mine.record_success(EP, 100)
    other.record_success(EP, 100)
    calls = _count_calls(state_table)
    mine.record_success(EP, 100)
    assert calls == ["GetItem", "UpdateItem"]  # a refused write costs 5x a read: now it reads first
    for _ in range(10):  # alone again: its reads show that its guesses would be right
        mine.record_success(EP, 100)
    calls.clear()
    mine.record_success(EP, 100)
    assert calls == ["UpdateItem"]
    assert mine.store.get(EP).samples == 1 + 4 * 2 + 1 + 1 + 10 + 1  # no outcome lost either way


def test_threads_of_one_instance_do_not_race_each_other_for_the_item(breaker, state_table):
    breaker.record_success(EP, 100)
    calls = _count_calls(state_table)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: breaker.record_success(EP, 100), range(40)))
    assert calls.count("UpdateItem") == 40 and "GetItem" not in calls
    assert breaker.store.get(EP).samples == 41


def test_nothing_to_write_is_decided_on_the_item_as_it_is_never_on_a_stale_view(make, clock):
    mine, other = make(half_open_probes=1), make(half_open_probes=1)
    trip(mine)
    clock.advance(30)
    assert mine.allow(EP)  # mine holds the one probe: its view is HALF_OPEN, no probe left
    other.record_success(EP, 100)  # another instance's result closes the breaker
    assert mine.allow(EP)  # a stale view would say "no probe left"; the item says CLOSED


def test_a_finished_jobs_outcome_and_its_slot_are_one_write(breaker, state_table):
    breaker.store.add_in_flight(EP, 1)
    writes = _count_writes(state_table)
    breaker.record_success(EP, 100, release=True)
    state = breaker.store.get(EP)
    assert (state.in_flight, state.samples, state.version) == (0, 1, 1)
    assert len(writes) == 1


def test_a_release_with_no_slot_left_still_records_the_outcome(breaker):
    breaker.record_failure(EP, ErrorClass.TRANSIENT, release=True)  # a duplicate report: nothing in flight
    state = breaker.store.get(EP)
    assert (state.in_flight, state.samples, state.consecutive_failures) == (0, 1, 1)


def test_a_slot_freed_between_our_read_and_write_is_not_freed_twice(state_table, make, clock):
    other = make()
    other.store.add_in_flight(EP, 1)
    store = InterleavingStore(state_table, lambda: other.store.add_in_flight(EP, -1))
    Breaker(store, BreakerSettings(), now=clock).record_success(EP, 100, release=True)
    state = store.get(EP)
    assert (state.in_flight, state.samples) == (0, 1)  # re-read after the refused write: no slot to free


def test_an_outcome_dropped_under_conflicts_still_frees_its_slot(state_table, make, clock):
    other = make()
    other.store.add_in_flight(EP, 1)
    store = InterleavingStore(state_table, lambda: other.record_failure(EP, ErrorClass.TERMINAL), times=100)
    assert Breaker(store, BreakerSettings(), now=clock).record_success(EP, 100, release=True) is None
    assert store.get(EP).in_flight == 0
