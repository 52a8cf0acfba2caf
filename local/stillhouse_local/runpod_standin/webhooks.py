"""Result webhooks of the stand-in: the POST of a finished job's status, its retries, the drop and
duplicate faults, and the log of attempts behind ``RunPodStandIn.webhook_deliveries``."""
from __future__ import annotations

import collections
import time
from typing import Any

import requests

from stillhouse_local.runpod_standin.state import Endpoint, Job, Settings, Tables

WEBHOOK_TRIES = 3  # one POST + two retries, as RunPod
DELIVERY_LOG_SIZE = 10_000  # webhook attempts kept for webhook_deliveries (oldest dropped)


class WebhookSender:
    def __init__(self, tables: Tables, settings: Settings) -> None:
        self._tables = tables
        self._settings = settings
        self._deliveries: collections.deque[dict[str, Any]] = collections.deque(maxlen=DELIVERY_LOG_SIZE)

    def deliveries(self) -> list[dict[str, Any]]:
        with self._tables.lock:
            return [dict(d) for d in self._deliveries]

    def send(self, ep: Endpoint, job: Job) -> None:
        """Queue the webhook of a job that just finished (lock held); the POSTs run on the pool."""
        body = job.status_body()
        url = job.webhook
        if ep.roll(ep.faults["drop_webhook_rate"]):
            self._deliveries.append({"job_id": job.id, "url": url, "status": job.status, "dropped": True})
            return
        copies = 2 if ep.roll(ep.faults["duplicate_webhook_rate"]) else 1
        for copy in range(1, copies + 1):
            self._tables.sched.submit(lambda copy=copy: self._deliver(job.id, url, body, copy, 1))

    def _deliver(self, job_id: str, url: str, body: dict[str, Any], copy: int, attempt: int) -> None:
        record: dict[str, Any] = {"job_id": job_id, "url": url, "status": body["status"], "copy": copy,
                                  "attempt": attempt, "status_code": None, "error": None}
        try:
            resp = requests.post(url, json=body, timeout=self._settings.webhook_timeout_s,
                                 headers={"User-Agent": "stillhouse-runpod-standin"})
            record["status_code"] = resp.status_code
            ok = 200 <= resp.status_code < 300
        except requests.RequestException as err:
            record["error"] = f"{type(err).__name__}: {err}"
            ok = False
        with self._tables.lock:
            self._deliveries.append(record)
        if not ok and attempt < WEBHOOK_TRIES and not self._tables.stopping.is_set():
            sched = self._tables.sched
            when = time.monotonic() + self._settings.webhook_retry_delay_s
            sched.call_at(when, lambda: sched.submit(
                lambda: self._deliver(job_id, url, body, copy, attempt + 1)))
