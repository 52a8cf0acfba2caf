"""Crash points: named step boundaries where a fault knob can make our own function die, as Lambda can
(a timeout, a killed sandbox) between any two calls.

    crash_point("dispatch.after_claim", job_id)

is a no-op (one dict lookup) unless crash points are configured: `STILLHOUSE_CRASH_POINTS` (a JSON object
of point name -> share of passes that crash, e.g. '{"dispatch.after_claim": 0.05}', "*" for every point),
`STILLHOUSE_CRASH_POINTS_SEED`, or `configure()` from local tooling and tests. A crash raises `CrashPointHit`,
a BaseException: no `except Exception` of the code takes it for a business outcome, it ends the whole
invocation as a dead Lambda would. The local runtime (stillhouse_local.lambdas) turns it into a failed
invocation: an SQS batch comes back after its visibility timeout, RunPod's webhook gets a 5xx and is
sent again, a Step Functions task fails with `Sandbox.Timedout` (retried by the state machines).

The draw is seeded and keyed: with a key (the job id), whether a pass crashes depends on (seed, point,
key) only, and a point crashes at most once per key (`once_per_key`), so a job meets each crash point at
most once: a job re-run because of one crash is not crashed there again. Hits are counted per point.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import threading
from collections import Counter

ENV = "STILLHOUSE_CRASH_POINTS"
SEED_ENV = "STILLHOUSE_CRASH_POINTS_SEED"
EVERY = "*"

#: Every crash point in the code, by where it sits (docs/reliability.md tells what each one tests).
POINTS = (
    "dispatch.after_claim",  # an attempt claimed, nothing sent to RunPod yet
    "dispatch.after_run",  # RunPod accepted the job (/run), IN_PROGRESS not written yet
    "dispatch.after_start",  # IN_PROGRESS written, the queue message not deleted yet
    "callbacks.before_record",  # a verified RunPod webhook, nothing written yet
    "callbacks.after_terminal",  # the terminal write won, the caller's notice not queued yet
    "delivery.before_post",  # a notice received, the caller's webhook not posted yet
    "delivery.after_post",  # the caller's webhook posted, its try not recorded yet
    "sweeper.after_settle",  # a due job settled from RunPod's /status, the sweep not done
    "sweeper.after_fail",  # the sweeper ended a job FAILED, its notice not queued yet
    "recovery.after_claim",  # the recovery workflow claimed an attempt, nothing sent to RunPod yet
    "recovery.after_record_failure",  # the workflow ended the job FAILED, its notice not queued yet
    "council.after_run",  # a council member accepted by RunPod, not recorded on the job yet
    "council.after_record",  # the council's result written, its notice not queued yet
)


class CrashPointHit(BaseException):
    """Our function died at a crash point (what a Lambda timeout or kill does between two calls)."""

    def __init__(self, point: str, key: str | None) -> None:
        super().__init__(f"crash point {point}" + (f" ({key})" if key else ""))
        self.point = point
        self.key = key


class _CrashPoints:
    def __init__(self) -> None:
        self.rates: dict[str, float] = {}
        self.seed = 0
        self.once_per_key = True
        self.hits: Counter[str] = Counter()
        self.passes: Counter[str] = Counter()
        self._fired: set[tuple[str, str]] = set()
        self._random = random.Random(0)
        self._lock = threading.Lock()

    def configure(self, rates: dict[str, float], seed: int = 0, *, once_per_key: bool = True) -> None:
        unknown = set(rates) - set(POINTS) - {EVERY}
        if unknown:
            raise ValueError(f"unknown crash points: {sorted(unknown)} (known: {', '.join(POINTS)})")
        with self._lock:
            self.rates = {name: float(rate) for name, rate in rates.items() if float(rate) > 0}
            self.seed, self.once_per_key = seed, once_per_key
            self._random = random.Random(seed)
            self._fired.clear()
            self.hits.clear()
            self.passes.clear()

    def rate(self, point: str) -> float:
        return self.rates.get(point, self.rates.get(EVERY, 0.0))

    def draw(self, point: str, key: str | None) -> bool:
        rate = self.rate(point)
        with self._lock:
            self.passes[point] += 1
            if key is None:
                crash = self._random.random() < rate
            else:
                if self.once_per_key and (point, key) in self._fired:
                    return False
                digest = hashlib.blake2b(f"{self.seed}:{point}:{key}".encode(), digest_size=8).digest()
                crash = int.from_bytes(digest, "big") / 2**64 < rate
                if crash:
                    self._fired.add((point, key))
            if crash:
                self.hits[point] += 1
            return crash


_state = _CrashPoints()
_configured_from_env = False


def _from_env() -> None:
    global _configured_from_env
    _configured_from_env = True
    raw = os.environ.get(ENV)
    if raw:
        _state.configure(json.loads(raw), int(os.environ.get(SEED_ENV) or 0))


def crash_point(point: str, key: str | None = None) -> None:
    """Die here (raise CrashPointHit) in the configured share of passes; nothing at all when off."""
    if not _configured_from_env:
        _from_env()
    if not _state.rates:
        return
    if _state.draw(point, key):
        raise CrashPointHit(point, key)


def configure(rates: dict[str, float], seed: int = 0, *, once_per_key: bool = True) -> None:
    """Turn crash points on (`rates`: point -> share of passes, "*" for every point); {} turns them off.
    Counters start again from zero."""
    global _configured_from_env
    _configured_from_env = True
    _state.configure(rates, seed, once_per_key=once_per_key)


def hits() -> dict[str, int]:
    """Crashes per point since the last configure()."""
    with _state._lock:
        return dict(_state.hits)


def fired() -> dict[str, list[str]]:
    """Job id (key) -> the points that crashed for it, since the last configure()."""
    with _state._lock:
        out: dict[str, list[str]] = {}
        for point, key in _state._fired:
            out.setdefault(key, []).append(point)
        return out


def passes() -> dict[str, int]:
    """Passes per point (crashed or not) while crash points were on."""
    with _state._lock:
        return dict(_state.passes)


__all__ = ["POINTS", "CrashPointHit", "configure", "crash_point", "fired", "hits", "passes"]
