"""Waiting for every job to end, under a hard deadline: caller webhooks say which jobs ended; a job with
no webhook after a while is asked for over the API (a few per round, so polling does not compete with the
jobs for the one API function). Meanwhile the sweeper is invoked every `--sweep-every-s`, as the
every-minute schedule would, only more often. At the end every job is read back with its timeline."""
from __future__ import annotations

import time
from collections import Counter
from typing import Any

from . import Ticker, log
from .callers import Receiver

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
POLL_AFTER_S = 45.0  # ask for a job with no caller webhook this long after its submit
POLL_PER_ROUND = 20


class SweeperRuns:
    """Invokes the Sweeper function in-process for one round each tick (what each round of its schedule does)."""

    def __init__(self, stack: Any, period_s: float, limit_s: float) -> None:
        self.stack = stack
        self.runs = 0
        self.results: Counter[str] = Counter()
        self.ticker = Ticker("sweeper", period_s, self._tick, limit_s)

    def start(self) -> SweeperRuns:
        self.ticker.start()
        return self

    def _tick(self, _elapsed: float) -> None:
        result = self.stack.functions.get("SweeperFunction").invoke({"ahead_s": 0})
        self.runs += 1
        self.results.update({k: v for k, v in (result or {}).items() if isinstance(v, int)})

    def summary(self) -> dict[str, Any]:
        return {"runs": self.runs, "counts": dict(self.results), "errors": self.ticker.errors[:5]}


#: How long after the last job is terminal its caller's notice may still come: an outbox re-send is due
#: SweepAfterSeconds (20) after the terminal write and is found by the next sweep (every 10 s).
WEBHOOK_GRACE_S = 60.0


def wait_all(session: Any, url: str, records: list[dict[str, Any]], receiver: Receiver, deadline: float) -> float:
    """Block until every accepted job is terminal or `deadline` (monotonic) passes; the wall time it took."""
    started = time.monotonic()
    sent = {r["id"]: r["wall_sent"] for r in records if "id" in r}
    polled_terminal: set[str] = set()
    last_report = 0.0
    while time.monotonic() < deadline:
        pending = set(sent) - receiver.notified() - polled_terminal
        if not pending:
            break
        now = time.time()
        stale = sorted((j for j in pending if now - sent[j] > POLL_AFTER_S), key=sent.get)[:POLL_PER_ROUND]
        for job_id in stale:
            if _status(session, url, job_id) in TERMINAL:
                polled_terminal.add(job_id)
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            log(f"{len(sent) - len(pending)}/{len(sent)} jobs terminal")
        time.sleep(2.0 if stale else 1.0)
    # A job seen terminal by a poll may still have its notice on the way (a delivery retried after a crash
    # point, or re-sent by the sweeper's outbox a SweepAfterSeconds later): wait for those, within the deadline.
    grace_until = min(deadline, time.monotonic() + WEBHOOK_GRACE_S)
    while polled_terminal - receiver.notified() and time.monotonic() < grace_until:
        time.sleep(1.0)
    return time.monotonic() - started


def _status(session: Any, url: str, job_id: str) -> str | None:
    try:
        return session.get(f"{url}/v1/jobs/{job_id}", timeout=30).json().get("status")
    except Exception:  # noqa: BLE001 - asked again next round
        return None


def read_back(session: Any, url: str, records: list[dict[str, Any]]) -> None:
    """Each accepted job as GET /v1/jobs/{id} shows it (status, output, attempts, events), into `record["job"]`."""
    for record in records:
        if "id" not in record:
            continue
        for _ in range(3):
            try:
                response = session.get(f"{url}/v1/jobs/{record['id']}", timeout=30)
                if response.status_code == 200:
                    record["job"] = response.json()
                    break
            except Exception:  # noqa: BLE001 - tried again, then reported as unreadable
                time.sleep(0.5)
