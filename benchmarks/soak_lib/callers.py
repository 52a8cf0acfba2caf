"""The caller's side of the soak: `--callers` threads submit echo jobs over HTTP, each with a unique text
and an Idempotency-Key (so a retried submit cannot make a second job); a receiver on 127.0.0.1 records the
signed caller webhooks; some jobs get a duplicate SQS message, sent a few seconds after their submit."""
from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

from webhook_receiver import WebhookReceiver

from . import Ticker

SUBMIT_TRIES = 5
COUNCIL_MODELS = ["echo-a", "echo-b", "echo-c"]  # echo models the stand-in's workers serve on every endpoint


class Receiver:
    """The caller's webhook endpoint: every arrival per job id, `(wall time, status)`."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[tuple[float, str]]] = {}
        self.lock = threading.Lock()
        self._http = WebhookReceiver(self._arrived, name="soak-receiver")
        self.url = self._http.url

    def _arrived(self, data: dict[str, Any], t: float, wall: float) -> None:
        with self.lock:
            self.arrivals.setdefault(str(data.get("id")), []).append((wall, str(data.get("status"))))

    def notified(self) -> set[str]:
        with self.lock:
            return set(self.arrivals)

    def stop(self) -> None:
        self._http.stop()


def _submit(session: Any, url: str, record: dict[str, Any], webhook: str) -> None:
    """POST one job, retrying refusals and transport errors under the same Idempotency-Key. A council
    record asks the three echo models (as tests/integration/test_council.py does), its text the prompt."""
    if record.get("kind") == "council":
        body = {"task": "council", "input": {"prompt": record["text"], "models": COUNCIL_MODELS}, "webhook": webhook}
    else:
        body = {"task": "echo", "input": {"text": record["text"]}, "webhook": webhook}
    headers = {"Idempotency-Key": record["key"]}
    record["wall_sent"] = time.time()
    for attempt in range(1, SUBMIT_TRIES + 1):
        record["submit_tries"] = attempt
        try:
            response = session.post(url + "/v1/jobs", json=body, headers=headers, timeout=30)
        except Exception as exc:  # noqa: BLE001 - a transport error is retried, then reported
            record["submit_error"] = f"{type(exc).__name__}: {exc}"[:200]
            time.sleep(0.5)
            continue
        if response.status_code == 202:
            record["id"] = response.json()["id"]
            record.pop("submit_error", None)
            return
        record["submit_error"] = f"{response.status_code}: {response.text[:200]}"
        if response.status_code < 500 and response.status_code not in (409, 429):
            return
        time.sleep(float(response.headers.get("Retry-After") or 0.5))


def submit_all(url: str, key: str, n: int, callers: int, webhook: str, on_accepted: Any,
               spread_s: float, limit_s: float, council_share: float = 0.0) -> list[dict[str, Any]]:
    """Submit n jobs from `callers` threads, job i not before i * spread_s / n seconds from now (so the
    load spans the fault timeline); `on_accepted(record)` is called for each accepted job. Every
    1/`council_share`-th job is a council (kind "council"), the others single echo jobs (kind "single")."""
    import requests

    tag = uuid.uuid4().hex[:8]
    every = round(1 / council_share) if council_share > 0 else 0
    records = [{"i": i, "text": f"soak-{tag}-{i:05d}-{uuid.uuid4().hex[:12]}", "key": f"soak-{tag}-{i}",
                "kind": "council" if every and i % every == every // 2 else "single"}
               for i in range(n)]
    cursor = iter(records)
    lock = threading.Lock()
    start = time.monotonic()
    stop_at = start + limit_s

    def caller() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        while time.monotonic() < stop_at:
            with lock:
                record = next(cursor, None)
            if record is None:
                return
            time.sleep(max(0.0, start + record["i"] * spread_s / n - time.monotonic()))
            _submit(session, url, record, webhook)
            if "id" in record:
                on_accepted(record)

    threads = [threading.Thread(target=caller, name=f"soak-caller-{i}", daemon=True) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=limit_s + 60)
    return records


class DuplicateMessages:
    """Sends a second SQS message for a share of the jobs, `delay` seconds after their submit."""

    def __init__(self, rate: float, max_delay_s: float, seed: int, limit_s: float) -> None:
        self.rate, self.max_delay_s = rate, max_delay_s
        self.random = random.Random(seed)
        self.due: list[tuple[float, str]] = []
        self.sent: list[str] = []
        self.lock = threading.Lock()
        self.ticker = Ticker("dup-sqs", 0.25, self._tick, limit_s)

    def start(self) -> DuplicateMessages:
        self.ticker.start()
        return self

    def maybe(self, record: dict[str, Any]) -> None:
        with self.lock:
            if self.random.random() < self.rate:
                record["dup_sqs"] = True
                self.due.append((time.monotonic() + self.random.uniform(0, self.max_delay_s), record["id"]))

    def _tick(self, _elapsed: float) -> None:
        from stillhouse.container import container
        from stillhouse.jobs.model import Priority

        now = time.monotonic()
        with self.lock:
            ready = [job_id for at, job_id in self.due if at <= now]
            self.due = [(at, job_id) for at, job_id in self.due if at > now]
        for job_id in ready:
            container().queue.send(job_id, Priority.NORMAL)
            self.sent.append(job_id)
