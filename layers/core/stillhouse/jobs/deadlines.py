"""When the sweeper should next look at a job (`due_at`), so a lost webhook costs seconds, not minutes.

RunPod's per-job `executionTimeout` (run_timeout_s) comes from the same estimate, so a hung worker is given
up on in tens of seconds, not in the endpoint's 10 minutes: RunPod ends the attempt TIMED_OUT and the
recovery workflow retries it elsewhere (the sweeper does the same if RunPod does not).

A job in flight on RunPod is due once it has had time to finish: what its endpoint has been taking per
unit of work times the units this job asks for, times a safety factor, never less than a floor (a
cold start, a short queue) and never much past RunPod's own executionTimeout (after it, RunPod has
ended the job either way). Being early costs one cheap /status call ("still running": due again
later); being late is what costs the caller. Every other live job is due `watch_s` after its last
news; a terminal job is never due (it leaves the sweeper's index).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

#: RunPod refuses an executionTimeout under 5 s.
MIN_RUN_TIMEOUT_S = 5.0


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


def after(at: str, seconds: float) -> str:
    """The ISO time `seconds` after the ISO time `at`."""
    return iso(parse(at) + timedelta(seconds=seconds))


def overdue(now: datetime, deadline_at: str | None, start_by: str | None, started: bool) -> str | None:
    """Why a live job must end TIMED_OUT now, or None: past its deadline (deadline_s), or not started on a
    GPU by its start_by (ttl_s)."""
    if deadline_at is not None and now >= parse(deadline_at):
        return f"not finished by its deadline ({deadline_at})"
    if start_by is not None and not started and now >= parse(start_by):
        return f"not started by its ttl ({start_by})"
    return None


def seconds_left(now: datetime, at: str | None) -> float | None:
    return None if at is None else (parse(at) - now).total_seconds()


def expected_units(task: str, job_input: Mapping[str, Any], params: Mapping[str, Any]) -> float | None:
    """The work a job asks for, in the units routing learns latency per (routing.feedback.work_units):
    output tokens of generate, texts of embed, 1 for anything else; None for `sleep`, whose time is
    given instead (expected_fixed_s)."""
    if task == "sleep":
        return None
    if task == "generate":
        asked = params.get("max_new_tokens", job_input.get("max_new_tokens"))
        return float(asked) if isinstance(asked, int) and asked > 0 else 128.0  # the worker's default
    if task == "embed" and isinstance(job_input.get("texts"), list):
        return float(max(1, len(job_input["texts"])))
    if task == "batch" and isinstance(job_input.get("lines"), int):
        return float(max(1, job_input["lines"])) * 128.0  # a chunk's lines, each a default-length answer
    return 1.0


def expected_fixed_s(task: str, job_input: Mapping[str, Any]) -> float:
    """Time a job asks for outright (the `sleep` diagnostic)."""
    seconds = job_input.get("seconds") if task == "sleep" else None
    return float(seconds) if isinstance(seconds, int | float) and seconds > 0 else 0.0


@dataclass(frozen=True)
class SettleDeadlines:
    floor_s: float = 20.0
    factor: float = 3.0
    execution_timeout_s: float = 600.0
    watch_s: float = 300.0  # live jobs not in flight on RunPod: due this long after their last news
    # RunPod's executionTimeout per job (run_timeout_s): never under run_floor_s (a first token on a cold
    # cache, a slow batch of the worker's), and per unit unit_prior_ms (20 tokens/s: slow) until the
    # endpoint has taught its own latency.
    run_floor_s: float = 30.0
    unit_prior_ms: float = 50.0

    def run_timeout_s(self, task: str, job_input: Mapping[str, Any], params: Mapping[str, Any],
                      per_unit_ms: float | None, *, runs_before: int = 0, cap_s: float | None = None) -> float:
        """Seconds a RunPod job may execute before RunPod ends it TIMED_OUT (its `policy.executionTimeout`):
        the expected time times `factor`, doubled for each earlier GPU run of the job (an estimate proven
        short is not trusted twice), at least run_floor_s, capped by the endpoint's own limit and by
        `cap_s` (the time left to the job's deadline)."""
        units = expected_units(task, job_input, params)
        per_unit = self.unit_prior_ms if per_unit_ms is None else per_unit_ms
        expected = expected_fixed_s(task, job_input) + per_unit * (units or 0.0) / 1000.0
        timeout = max(self.run_floor_s, self.factor * expected) * 2 ** min(runs_before, 10)
        limit = self.execution_timeout_s if cap_s is None else min(self.execution_timeout_s, cap_s)
        return max(MIN_RUN_TIMEOUT_S, min(timeout, limit))

    def in_flight_s(self, task: str, job_input: Mapping[str, Any], params: Mapping[str, Any],
                    per_unit_ms: float | None) -> float:
        """Seconds after RunPod accepted the job that it is due. `per_unit_ms`: the endpoint's learnt
        latency per unit of work (queue delay included, so this errs long: see the module doc)."""
        units = expected_units(task, job_input, params)
        expected = expected_fixed_s(task, job_input) + (per_unit_ms or 0.0) * (units or 0.0) / 1000.0
        return min(max(self.floor_s, self.factor * expected), self.execution_timeout_s + self.floor_s)

    def still_running_s(self, running_for_s: float) -> float:
        """A job found still running: look again after as long again as it has run (polls thin out for
        long jobs), within [floor_s, watch_s]."""
        return min(max(self.floor_s, running_for_s), self.watch_s)

    def due(self, now: datetime, after_s: float) -> str:
        return iso(now + timedelta(seconds=after_s))
