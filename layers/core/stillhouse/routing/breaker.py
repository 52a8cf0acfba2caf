"""Distributed circuit breaker per endpoint, shared by every function instance.

The transitions are pure functions of (stored state, outcome, settings, now), so they test without
DynamoDB; `Breaker` applies them through EndpointStateStore's conditional writes, which is what makes
one breaker out of many Lambdas. See docs/routing.md for the state machine and the error-class table.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from enum import StrEnum

from pydantic import BaseModel

from stillhouse.config import BreakerSettings
from stillhouse.errors import ErrorClass
from stillhouse.routing.state import (
    BreakerState,
    EndpointState,
    EndpointStateStore,
    StateConflict,
)
from stillhouse.telemetry.metrics import metrics

log = logging.getLogger(__name__)

#: Error classes that say "this endpoint is unhealthy". CAPACITY (busy, not broken) and TERMINAL (the
#: job's fault, not the endpoint's) do not count.
COUNTED = frozenset({ErrorClass.TRANSIENT, ErrorClass.WORKER_LOST})


class OpenReason(StrEnum):
    CONSECUTIVE_FAILURES = "consecutive_failures"
    FAILURE_RATE = "failure_rate"
    SUCCESS_RATE = "success_rate"  # predictive: success-rate EMA under the floor
    LATENCY_ANOMALY = "latency_anomaly"  # predictive: fast latency EMA far above the baseline
    PROBE_FAILED = "probe_failed"  # HALF_OPEN probe failed: back to OPEN, longer cool-down


class EndpointHealth(BaseModel):
    """What GET /v1/endpoints shows per endpoint: breaker state plus statistics."""

    name: str
    state: BreakerState
    accepting: bool  # would the router send it a job now (breaker and capacity back-off)
    opened_reason: str | None
    opened_at: float | None = None
    open_until: float | None
    capacity_until: float | None
    consecutive_failures: int
    failure_rate: float | None  # over the window; None below min_volume
    window_outcomes: int
    ema_latency_ms: float | None
    baseline_latency_ms: float | None
    success_rate: float
    samples: int
    in_flight: int
    last_error: str | None
    last_error_class: str | None
    last_error_at: float | None
    updated_at: float | None


# --- pure transitions ---------------------------------------------------------------------------


def would_allow(s: EndpointState, cfg: BreakerSettings, now: float) -> bool:
    """Read-only: would allow() grant a request now? (the router filters with this, claims nothing)"""
    if s.state is BreakerState.CLOSED:
        return True
    if s.state is BreakerState.OPEN:
        return now >= (s.open_until or 0.0)
    return s.probes_claimed < cfg.half_open_probes or now >= (s.probe_deadline or 0.0)


def claim_probe(s: EndpointState, cfg: BreakerSettings, now: float) -> EndpointState | None:
    """The state after claiming one HALF_OPEN probe, or None when no probe is available."""
    if s.state is BreakerState.OPEN:
        if now < (s.open_until or 0.0):
            return None
        s.state, s.probes_claimed, s.probe_successes = BreakerState.HALF_OPEN, 0, 0
    elif s.state is not BreakerState.HALF_OPEN:
        return None
    if now >= (s.probe_deadline or 0.0):
        s.probes_claimed = 0  # earlier probes never reported (function died): stop waiting for them
    if s.probes_claimed >= cfg.half_open_probes:
        return None
    s.probes_claimed += 1
    s.probe_deadline = now + cfg.probe_timeout_s
    s.updated_at = now
    return s


def on_success(
    s: EndpointState, latency_ms: float | None, cfg: BreakerSettings, now: float
) -> EndpointState:
    _observe(s, failed=False, latency_ms=latency_ms, cfg=cfg)
    if s.state is BreakerState.HALF_OPEN:
        s.probes_claimed = max(0, s.probes_claimed - 1)
        s.probe_successes += 1
        if s.probe_successes >= cfg.half_open_successes:
            _close(s)
    elif s.state is BreakerState.CLOSED:
        reason = _trip_reason(s, cfg)  # a success can still be anomalously slow
        if reason:
            _open(s, reason, None, cfg, now)
    s.updated_at = now
    return s


def on_failure(
    s: EndpointState,
    error_class: ErrorClass,
    cfg: BreakerSettings,
    now: float,
    *,
    retry_after_s: float | None = None,
    latency_ms: float | None = None,
    error: str | None = None,
) -> EndpointState:
    s.last_error = (error or error_class.value)[:500]
    s.last_error_class, s.last_error_at, s.updated_at = error_class, now, now
    if error_class not in COUNTED:
        if error_class is ErrorClass.CAPACITY:
            backoff = cfg.capacity_backoff_s if retry_after_s is None else max(0.0, retry_after_s)
            s.capacity_until = max(s.capacity_until or 0.0, now + backoff)
        if s.state is BreakerState.HALF_OPEN:
            s.probes_claimed = max(0, s.probes_claimed - 1)  # the probe proved nothing: free its slot
        return s
    _observe(s, failed=True, latency_ms=latency_ms, cfg=cfg)
    if s.state is BreakerState.CLOSED:
        reason = _trip_reason(s, cfg)
        if reason:
            _open(s, reason, retry_after_s, cfg, now)
    elif s.state is BreakerState.HALF_OPEN:
        s.reopen_count += 1
        _open(s, OpenReason.PROBE_FAILED, retry_after_s, cfg, now)
    elif retry_after_s:  # OPEN: a late failure may still carry the server's Retry-After
        s.open_until = max(s.open_until or now, now + retry_after_s)
    return s


def health(s: EndpointState, cfg: BreakerSettings, now: float) -> EndpointHealth:
    n = len(s.window)
    return EndpointHealth(
        name=s.name,
        state=s.state,
        accepting=would_allow(s, cfg, now) and now >= (s.capacity_until or 0.0),
        opened_reason=s.opened_reason,
        opened_at=s.opened_at,
        open_until=s.open_until,
        capacity_until=s.capacity_until,
        consecutive_failures=s.consecutive_failures,
        failure_rate=s.window.count("1") / n if n >= cfg.min_volume else None,
        window_outcomes=n,
        ema_latency_ms=s.ema_latency_ms,
        baseline_latency_ms=s.baseline_latency_ms,
        success_rate=s.success_rate,
        samples=s.samples,
        in_flight=s.in_flight,
        last_error=s.last_error,
        last_error_class=s.last_error_class.value if s.last_error_class else None,
        last_error_at=s.last_error_at,
        updated_at=s.updated_at,
    )


def _ema(old: float, x: float, alpha: float) -> float:
    return alpha * x + (1 - alpha) * old


def _observe(s: EndpointState, *, failed: bool, latency_ms: float | None, cfg: BreakerSettings) -> None:
    s.samples += 1
    s.recent += 1
    s.window = (s.window + ("1" if failed else "0"))[-cfg.window_size :]
    s.consecutive_failures = s.consecutive_failures + 1 if failed else 0
    s.success_rate = _ema(s.success_rate, 0.0 if failed else 1.0, cfg.ema_alpha)
    if latency_ms is None or not math.isfinite(latency_ms) or latency_ms < 0:
        return
    s.ema_latency_ms = (
        latency_ms if s.ema_latency_ms is None else _ema(s.ema_latency_ms, latency_ms, cfg.ema_alpha)
    )
    if s.baseline_latency_ms is None:
        s.baseline_latency_ms = latency_ms
    else:
        # Winsorised: one sample lifts the baseline at most as if it were anomaly_factor x baseline,
        # so a sudden slowdown cannot drag "normal" up with it before the anomaly check fires, while a
        # lasting shift (new GPU type, bigger model) is still absorbed within some tens of samples.
        x = min(latency_ms, cfg.anomaly_factor * s.baseline_latency_ms) if cfg.anomaly_factor else latency_ms
        s.baseline_latency_ms = _ema(s.baseline_latency_ms, x, cfg.baseline_alpha)


def _trip_reason(s: EndpointState, cfg: BreakerSettings) -> OpenReason | None:
    if s.consecutive_failures >= cfg.consecutive_failures:
        return OpenReason.CONSECUTIVE_FAILURES
    n = len(s.window)
    if n >= cfg.min_volume and s.window.count("1") / n >= cfg.failure_rate:
        return OpenReason.FAILURE_RATE
    if s.recent < cfg.min_samples:
        return None
    if cfg.success_rate_floor and s.success_rate < cfg.success_rate_floor:
        return OpenReason.SUCCESS_RATE
    if (
        cfg.anomaly_factor
        and s.ema_latency_ms is not None
        and s.baseline_latency_ms
        and s.ema_latency_ms > cfg.anomaly_factor * s.baseline_latency_ms
        and s.ema_latency_ms - s.baseline_latency_ms > cfg.anomaly_min_excess_ms
    ):
        return OpenReason.LATENCY_ANOMALY
    return None


def _open(
    s: EndpointState, reason: OpenReason, retry_after_s: float | None, cfg: BreakerSettings, now: float
) -> None:
    cooldown = min(cfg.cooldown_s * cfg.cooldown_growth**s.reopen_count, cfg.max_cooldown_s)
    s.state, s.opened_reason, s.opened_at = BreakerState.OPEN, reason.value, now
    s.open_until = now + max(cooldown, retry_after_s or 0.0)  # honour the server's Retry-After
    s.probes_claimed, s.probe_successes, s.probe_deadline = 0, 0, None


def _close(s: EndpointState) -> None:
    # A fresh start: the probe proved the endpoint works, so old failures stop counting. The latency
    # EMAs are kept: they measure speed, not health, and routing still needs them.
    s.state, s.opened_reason, s.opened_at, s.open_until = BreakerState.CLOSED, None, None, None
    s.consecutive_failures, s.window, s.recent, s.success_rate = 0, "", 0, 1.0
    s.reopen_count, s.probes_claimed, s.probe_successes, s.probe_deadline = 0, 0, 0, None


# --- the shared breaker -------------------------------------------------------------------------


class Breaker:
    """Applies the transitions above to the shared EndpointStateTable item of each endpoint."""

    def __init__(
        self,
        store: EndpointStateStore,
        settings: BreakerSettings | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings or BreakerSettings()
        self.now = now

    def allow(self, name: str, hint: EndpointState | None = None) -> bool:
        """May a request go to `name` now? CLOSED: yes. OPEN past its cool-down: becomes HALF_OPEN and
        this caller holds a probe. HALF_OPEN: yes while probes are left, each claimed atomically.

        `hint` is a state read moments ago (e.g. by the router's plan): a CLOSED hint skips the read.
        """
        if hint is not None and hint.state is BreakerState.CLOSED:
            return True
        granted = False

        def change(s: EndpointState) -> EndpointState | None:
            nonlocal granted
            if s.state is BreakerState.CLOSED:
                granted = True
                return None
            nxt = claim_probe(s, self.settings, self.now())
            granted = nxt is not None
            return nxt

        try:
            self.store.update(name, change)
        except StateConflict:
            return False  # heavy contention on a recovering endpoint: let another caller probe
        if granted and (hint is None or hint.state is not BreakerState.CLOSED):
            log.info("breaker %s: probe granted", name)
        return granted

    def record_success(self, name: str, latency_ms: float | None = None, *, release: bool = False) -> EndpointState | None:
        """`release`: the job held an in-flight slot; free it in the same write."""
        now = self.now()
        return self._apply(name, lambda s: on_success(s, latency_ms, self.settings, now), release=release)

    def record_failure(
        self,
        name: str,
        error_class: ErrorClass,
        retry_after_s: float | None = None,
        latency_ms: float | None = None,
        error: str | None = None,
        *,
        release: bool = False,
    ) -> EndpointState | None:
        now = self.now()
        return self._apply(
            name,
            lambda s: on_failure(
                s, error_class, self.settings, now,
                retry_after_s=retry_after_s, latency_ms=latency_ms, error=error,
            ),
            release=release,
        )

    def view(self, name: str) -> EndpointHealth:
        return health(self.store.get(name, consistent=False), self.settings, self.now())

    def _apply(
        self, name: str, transition: Callable[[EndpointState], EndpointState], *, release: bool = False
    ) -> EndpointState | None:
        before: list[tuple[BreakerState, float | None]] = []

        def change(s: EndpointState) -> EndpointState:
            before.append((s.state, s.opened_at))
            return transition(s)

        try:
            after = self.store.update(name, change, release=release)
        except StateConflict:
            # Outcomes are statistics: dropping one under extreme contention beats failing the job.
            # The slot is not a statistic: it is freed on its own.
            log.warning("breaker %s: outcome dropped after repeated write conflicts", name)
            if release:
                self.store.add_in_flight(name, -1)
            return None
        if before and before[-1][0] is not after.state:
            was, opened_at = before[-1]
            log.warning(
                "breaker %s: %s -> %s (%s)", name, was.value, after.state.value,
                after.opened_reason or "recovered",
            )
            metrics.breaker_changed(name, was.name, after.state.name,
                                    None if opened_at is None else self.now() - opened_at)
        return after
