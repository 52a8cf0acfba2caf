"""Endpoint choice: filter the healthy candidates, order them into a failover list.

`route()` is a pure function of (candidates, their shared states, policy, rng, now), so every policy
tests without DynamoDB. `Router` is the facade the functions use: registry + breaker + policy, plus
the outcome helpers that feed the statistics the adaptive policy learns from.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel

from stillhouse.config import BreakerSettings, Policy, RouteSettings
from stillhouse.errors import ErrorClass
from stillhouse.routing.breaker import Breaker, EndpointHealth, health, would_allow
from stillhouse.routing.registry import EndpointRegistry, EndpointSpec
from stillhouse.routing.state import BreakerState, EndpointState


def has_room(spec: EndpointSpec, state: EndpointState, now: float) -> bool:
    """Enabled, not full, not backing off a 429: could take a job if its breaker let it."""
    return spec.enabled and state.in_flight < spec.max_in_flight and now >= (state.capacity_until or 0.0)


def available(spec: EndpointSpec, state: EndpointState, now: float, breaker: BreakerSettings) -> bool:
    """May this endpoint take a new job now? (read-only; probes are claimed later by allow())"""
    return has_room(spec, state, now) and would_allow(state, breaker, now)


def panic_set(candidates: Sequence[EndpointSpec], states: Mapping[str, EndpointState], now: float,
              breaker: BreakerSettings, settings: RouteSettings) -> list[EndpointSpec] | None:
    """Envoy's panic mode: when too few of the endpoints with room pass their breakers, route to all of
    them that still answer sometimes (a success among their last outcomes). An endpoint that only fails
    (hard down) is left out: its jobs wait for it instead of spending their attempts. None: no panic."""
    roomy = [c for c in candidates if c.weight > 0 and has_room(c, states[c.name], now)]
    healthy = [c for c in roomy if would_allow(states[c.name], breaker, now)]
    if not roomy or len(healthy) >= settings.panic_below * len(roomy):
        return None
    answering = [c for c in roomy if c in healthy or "0" in states[c.name].window]
    return answering if len(answering) > len(healthy) else None


def scores(
    specs: Sequence[EndpointSpec],
    states: Mapping[str, EndpointState],
    policy: Policy,
    settings: RouteSettings,
) -> dict[str, float]:
    """Preference per endpoint, higher is better (least_outstanding: minus load per weight)."""
    if policy is Policy.WEIGHTED:
        return {s.name: s.weight for s in specs}
    if policy is Policy.LEAST_OUTSTANDING:
        return {
            s.name: -states[s.name].in_flight / s.weight if s.weight > 0 else float("-inf")
            for s in specs
        }
    # Adaptive. An endpoint with no latency yet gets an optimistic prior (as fast as the best one
    # known), so a new endpoint is tried rather than starved.
    known = [states[s.name].ema_latency_ms for s in specs if states[s.name].ema_latency_ms is not None]
    prior = min(known) if known else settings.latency_floor_ms
    out = {}
    for s in specs:
        st = states[s.name]
        ema = st.ema_latency_ms if st.ema_latency_ms is not None else prior
        latency = max(ema, settings.latency_floor_ms)
        out[s.name] = (
            s.weight * st.success_rate**settings.success_exponent / latency**settings.latency_exponent
        )
    return out


def route(
    candidates: Sequence[EndpointSpec],
    states: Mapping[str, EndpointState],
    policy: Policy | str = Policy.ADAPTIVE,
    rng: random.Random | None = None,
    *,
    now: float | None = None,
    breaker: BreakerSettings | None = None,
    settings: RouteSettings | None = None,
) -> list[EndpointSpec]:
    """The ordered failover list: first choice first, then the rest by the policy's preference.

    Endpoints whose breaker is ready for a recovery probe come first: allow() lets only a few jobs
    through as probes and the rest fail over at once, and without this a recovering endpoint (low
    success rate) would never be tried again. Weight-0 endpoints are standby: failover only.
    """
    rng = rng or random.Random()
    now = time.time() if now is None else now
    breaker = breaker or BreakerSettings()
    settings = settings or RouteSettings()
    policy = Policy(policy)
    states = {c.name: states.get(c.name) or EndpointState(name=c.name) for c in candidates}
    panic = panic_set(candidates, states, now, breaker, settings)
    if panic is not None:
        # Ranked as if their breakers were closed: the adaptive policy gives the least bad the most.
        allowed = panic
        states = {name: s.model_copy(update={"state": BreakerState.CLOSED}) for name, s in states.items()}
    else:
        allowed = [c for c in candidates if available(c, states[c.name], now, breaker)]

    recovering = [c for c in allowed if states[c.name].state is not BreakerState.CLOSED]
    rng.shuffle(recovering)
    probes = [c for c in recovering if c.weight > 0]
    standby_probes = [c for c in recovering if c.weight <= 0]
    closed = [c for c in allowed if states[c.name].state is BreakerState.CLOSED]
    score = scores(closed, states, policy, settings)
    # Shuffle, then a stable sort: equal scores come out in random order.
    ranked = closed[:]
    rng.shuffle(ranked)
    ranked.sort(key=lambda c: score[c.name], reverse=True)
    live = [c for c in ranked if c.weight > 0]

    first: list[EndpointSpec] = []
    if not live:
        pass  # standby endpoints only: failover order as ranked
    elif policy is Policy.LEAST_OUTSTANDING:
        first = [live[0]]
    elif policy is Policy.ADAPTIVE and rng.random() < settings.exploration:
        first = [rng.choice(live)]  # exploration: a recovered or slow endpoint keeps being measured
    else:
        first = [_weighted_pick(live, [score[c.name] for c in live], rng)]
    rest = [c for c in ranked if c not in first]
    return probes + first + rest + standby_probes


def _weighted_pick(items: list[EndpointSpec], weights: list[float], rng: random.Random) -> EndpointSpec:
    total = sum(weights)
    if total <= 0:
        return rng.choice(items)
    return rng.choices(items, weights=weights, k=1)[0]


@dataclass(frozen=True)
class Plan(Sequence[EndpointSpec]):
    """The failover list for one job, with the states it was computed from.

    Iterates like a list of EndpointSpec. When empty, `candidates` says whether any endpoint serves
    the model at all (0: a configuration problem, not a wait) and `wait_s` how long until the earliest
    back-off or cool-down ends (None: unknown, e.g. endpoints full up to max_in_flight).
    """

    endpoints: tuple[EndpointSpec, ...]
    states: Mapping[str, EndpointState] = field(default_factory=dict)
    candidates: int = 0
    wait_s: float | None = None
    panic: bool = False  # too few endpoints pass their breakers: the plan goes past them (panic_set)

    def __getitem__(self, i):  # type: ignore[override]
        return self.endpoints[i]

    def __len__(self) -> int:
        return len(self.endpoints)


class Refusal(Protocol):
    """What a failed submit carries (runpod_client.RunPodError has these)."""

    message: str
    error_class: ErrorClass
    retry_after_s: float | None


class EndpointView(BaseModel):
    """One row of GET /v1/endpoints."""

    spec: EndpointSpec
    health: EndpointHealth


class Router:
    def __init__(
        self,
        registry: EndpointRegistry,
        breaker: Breaker,
        *,
        settings: RouteSettings | None = None,
        rng: random.Random | None = None,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.registry = registry
        self.breaker = breaker
        self.settings = settings or RouteSettings()
        self.rng = rng or random.Random()
        self.now = now or breaker.now

    def plan(self, model: str | None, policy: Policy | str | None = None, *, streaming: bool = False) -> Plan:
        """Where to send a job for `model`, best first. Empty: wait and retry (don't drop the job).
        A streaming job is planned over streaming endpoints only (EndpointRegistry.candidates)."""
        candidates = self.registry.candidates(model, streaming=streaming)
        if not candidates:
            return Plan(endpoints=(), candidates=0)
        states = self.breaker.store.get_many((c.name for c in candidates), max_age_s=self.settings.state_max_age_s)
        now = self.now()
        order = route(
            candidates, states, policy or self.settings.policy, self.rng,
            now=now, breaker=self.breaker.settings, settings=self.settings,
        )
        return Plan(
            endpoints=tuple(order),
            states=states,
            candidates=len(candidates),
            wait_s=None if order else _wait_s(states.values(), now),
            panic=panic_set(candidates, {c.name: states.get(c.name) or EndpointState(name=c.name) for c in candidates},
                            now, self.breaker.settings, self.settings) is not None,
        )

    def allow(self, name: str, plan: Plan | None = None) -> bool:
        """Claim the breaker just before submitting (a probe slot if the endpoint is recovering).
        A panic plan goes past the breakers: with too few healthy endpoints, a failing one beats none."""
        granted = self.breaker.allow(name, hint=plan.states.get(name) if plan else None)
        return granted or bool(getattr(plan, "panic", False))

    def dispatched(self, name: str) -> None:
        """RunPod accepted a job: one more in flight (released by succeeded/failed)."""
        self.breaker.store.add_in_flight(name, 1)

    def succeeded(self, name: str, latency_ms: float | None, *, release: bool = True) -> None:
        """A job finished well; latency_ms = queue delay + execution as RunPod reports them."""
        self.breaker.record_success(name, latency_ms, release=release)  # one write: outcome + slot

    def failed(
        self,
        name: str,
        error_class: ErrorClass,
        *,
        retry_after_s: float | None = None,
        latency_ms: float | None = None,
        error: str | None = None,
        release: bool = True,
    ) -> None:
        """A submit or a job failed. release=False when the submit itself failed (never in flight)."""
        self.breaker.record_failure(name, error_class, retry_after_s, latency_ms, error, release=release)

    def released(self, name: str) -> None:
        """A dispatched job ended without a result to learn from (e.g. cancelled)."""
        self.breaker.store.add_in_flight(name, -1)

    # What stillhouse.jobs.dispatch.Routing asks of a submit's outcome.
    def submitted(self, name: str) -> None:
        self.dispatched(name)

    def refused(self, name: str, error: Refusal) -> None:
        self.failed(
            name, error.error_class, retry_after_s=error.retry_after_s, error=error.message,
            release=False,
        )

    def describe(self) -> list[EndpointView]:
        """Every configured endpoint (enabled or not) with its health, for GET /v1/endpoints."""
        specs = self.registry.list()
        states = self.breaker.store.get_many(s.name for s in specs)
        now = self.now()
        return [
            EndpointView(spec=s, health=health(states[s.name], self.breaker.settings, now))
            for s in specs
        ]


def _wait_s(states: Iterable[EndpointState], now: float) -> float | None:
    waits = []
    for s in states:
        until = s.capacity_until or 0.0
        if s.state is BreakerState.OPEN:
            until = max(until, s.open_until or 0.0)
        if until > now:
            waits.append(until - now)
    return min(waits) if waits else None
