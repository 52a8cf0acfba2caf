"""The job state machine of the stand-in: create, queue, hand out, start, finish, cancel, retry and
purge jobs; queue TTL and execution timeouts, crash faults, result expiry, health and fault knobs."""
from __future__ import annotations

import collections
import threading
import time
import uuid
from typing import Any

from stillhouse_local.runpod_standin.state import (
    CANCELLED,
    COMPLETED,
    DEFAULT_EXECUTION_TIMEOUT_MS,
    DEFAULT_TTL_MS,
    FAILED,
    IN_PROGRESS,
    IN_QUEUE,
    MISSING,
    TERMINAL,
    TIMED_OUT,
    Endpoint,
    Job,
    Settings,
    Tables,
)
from stillhouse_local.runpod_standin.webhooks import WebhookSender

TTL_SWEEP_S = 0.25  # how often queued jobs are checked against policy.ttl
CRASH_DETECT_S = 1.0  # how long a "crashed" worker takes to be noticed (crash_mode fail/requeue)
WORKER_SEEN_FRESH_S = 30.0  # a worker not seen for this long no longer counts in /health


class JobEngine:
    """Every change of a job's status goes through here, under the shared lock."""

    def __init__(self, tables: Tables, settings: Settings, webhooks: WebhookSender) -> None:
        self.tables = tables
        self.settings = settings
        self._webhooks = webhooks
        self._lock = tables.lock
        self._jobs = tables.jobs
        self._endpoints = tables.endpoints
        self._stopping = tables.stopping

    @property
    def stopping(self) -> threading.Event:
        return self._stopping

    # -------------------------------------------------------------------------------- lookups
    def find_endpoint(self, endpoint_id: str) -> Endpoint | None:
        with self._lock:
            return self._endpoints.get(endpoint_id)

    def find_job(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def count(self, ep: Endpoint, counter: str) -> None:
        with self._lock:
            ep.counters[counter] += 1

    def status_body(self, job: Job) -> dict[str, Any]:
        with self._lock:
            return job.status_body()

    def read_stream(self, job: Job) -> dict[str, Any]:
        """The stream chunks not read yet, with the job's status; marks them read."""
        with self._lock:
            chunks = job.stream[job.stream_sent:]
            job.stream_sent = len(job.stream)
            return {"status": job.status, "stream": chunks}

    def stats(self, endpoint_id: str) -> dict[str, int]:
        with self._lock:
            return dict(self._endpoints[endpoint_id].counters)

    def job_status(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.status_body()

    # -------------------------------------------------------------------------------- faults
    def set_faults(self, endpoint_id: str, knobs: dict[str, Any]) -> None:
        """Merge validated knobs into an endpoint's set. KeyError for an unknown endpoint."""
        with self._lock:
            self._endpoints[endpoint_id].apply_faults(knobs)

    def reset_faults(self, endpoint_id: str) -> None:
        with self._lock:
            self._endpoints[endpoint_id].reset_faults()

    def get_faults(self, endpoint_id: str) -> dict[str, Any]:
        with self._lock:
            return self._endpoints[endpoint_id].fault_view()

    # -------------------------------------------------------------------------------- hosted-API ops
    def create_job(self, ep: Endpoint, body: dict[str, Any], *, sync: bool) -> Job:
        policy = body.get("policy") or {}
        job = Job(
            id=f"{uuid.uuid4()}-u1",
            endpoint_id=ep.id,
            input=body["input"],
            webhook=body.get("webhook") or None,
            execution_timeout_ms=policy.get("executionTimeout", DEFAULT_EXECUTION_TIMEOUT_MS),
            ttl_ms=policy.get("ttl", DEFAULT_TTL_MS),
            sync=sync,
        )
        with self._lock:
            self._jobs[job.id] = job
            self.enqueue(ep, job)
        return job

    def enqueue(self, ep: Endpoint, job: Job, *, front: bool = False) -> None:
        job.status = IN_QUEUE
        job.queued_at = time.monotonic()
        (ep.queue.appendleft if front else ep.queue.append)(job.id)
        ep.cond.notify_all()

    def schedule_sweep(self) -> None:
        self.tables.sched.call_at(time.monotonic() + TTL_SWEEP_S, self._sweep_queues)

    def _sweep_queues(self) -> None:
        """Every TTL_SWEEP_S: queued jobs past policy.ttl -> TIMED_OUT; compact the queues."""
        now = time.monotonic()
        with self._lock:
            for ep in self._endpoints.values():
                keep: collections.deque[str] = collections.deque()
                for jid in ep.queue:
                    job = self._jobs.get(jid)
                    if job is None or job.status != IN_QUEUE:
                        continue
                    if now - job.queued_at >= job.ttl_ms / 1000:
                        self.finish(job, TIMED_OUT, error="job expired in queue (policy.ttl)")
                    else:
                        keep.append(jid)
                ep.queue = keep
        if not self._stopping.is_set():
            self.tables.sched.call_at(now + TTL_SWEEP_S, self._sweep_queues)

    def cancel(self, job: Job) -> None:
        with self._lock:
            if job.status in (IN_QUEUE, IN_PROGRESS):
                self.finish(job, CANCELLED)

    def retry(self, job: Job) -> bool:
        with self._lock:
            if job.status not in (FAILED, TIMED_OUT):
                return False
            ep = self._endpoints[job.endpoint_id]
            job.attempt += 1
            job.started_at = job.finished_at = None
            job.delay_ms = job.execution_ms = None
            job.output, job.error, job.worker_id, job.crashed = MISSING, None, None, False
            job.stream, job.stream_sent = [], 0
            job.done = threading.Event()
            ep.counters["retried"] += 1
            self.enqueue(ep, job)
            return True

    def purge(self, ep: Endpoint) -> int:
        with self._lock:
            removed = 0
            for jid in ep.queue:
                job = self._jobs.get(jid)
                if job is not None and job.status == IN_QUEUE:
                    del self._jobs[jid]
                    job.status = CANCELLED  # gone (404 from now on); wakes any runsync waiter
                    job.done.set()
                    removed += 1
            ep.queue.clear()
            return removed

    def health(self, ep: Endpoint) -> dict[str, Any]:
        with self._lock:
            in_queue = sum(1 for jid in ep.queue if (j := self._jobs.get(jid)) is not None and j.status == IN_QUEUE)
            running_pods: collections.Counter[str] = collections.Counter()
            in_progress = 0
            for job in self._jobs.values():
                if job.endpoint_id == ep.id and job.status == IN_PROGRESS:
                    in_progress += 1
                    if job.worker_id:
                        running_pods[job.worker_id] += 1
            workers = {"idle": 0, "initializing": 0, "ready": 0, "running": 0, "throttled": 0, "unhealthy": 0}
            if not ep.faults["down"]:
                now = time.monotonic()
                # Pods seen recently (external workers too), and every worker the stand-in runs.
                pods = {p for p, t in ep.seen.items() if now - t < WORKER_SEEN_FRESH_S}
                for w in ep.workers.values():
                    if w.returncode is not None:
                        workers["unhealthy"] += 1
                        pods.discard(w.pod_id)
                    elif w.pod_id not in ep.seen:
                        workers["initializing"] += 1
                    else:
                        pods.add(w.pod_id)
                for pod in pods:
                    workers["running" if running_pods.get(pod) else "idle"] += 1
                workers["ready"] = workers["idle"]
            c = ep.counters
            return {
                "jobs": {
                    "completed": c[COMPLETED],
                    "failed": c[FAILED] + c[TIMED_OUT],
                    "inProgress": in_progress,
                    "inQueue": in_queue,
                    "retried": c["retried"],
                },
                "workers": workers,
            }

    # -------------------------------------------------------------------------------- state changes
    def finish(self, job: Job, status: str, *, output: Any = MISSING, error: Any = None) -> None:
        """Move a job to a terminal status (lock held). Schedules retention, stop signal, webhook."""
        ep = self._endpoints[job.endpoint_id]
        now = time.monotonic()
        was_running = job.status == IN_PROGRESS
        job.status = status
        job.finished_at = now
        if job.started_at is not None:
            job.execution_ms = int((now - job.started_at) * 1000)
        if output is not MISSING:
            job.output = output
        if error is not None:
            job.error = error
        job.finish_seq += 1
        ep.counters[status] += 1
        job.done.set()
        if was_running and status in (CANCELLED, TIMED_OUT) and job.worker_id and not job.crashed:
            ep.stop_signals[job.worker_id].append(job.id)  # the SDK's job-stop channel
            ep.cond.notify_all()
        job_id, seq = job.id, job.finish_seq
        keep = self.settings.runsync_result_ttl_s if job.sync else self.settings.result_ttl_s
        self.tables.sched.call_at(now + keep, lambda: self._expire_result(job_id, seq))
        if job.webhook and (status != CANCELLED or self.settings.webhook_on_cancel):
            self._webhooks.send(ep, job)

    def _expire_result(self, job_id: str, seq: int) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.status in TERMINAL and job.finish_seq == seq:
                del self._jobs[job_id]

    def fail_jobs_of_worker(self, ep: Endpoint, pod_id: str, error: str) -> None:
        """A worker process exited: its running jobs fail (lock held)."""
        for job in list(self._jobs.values()):
            if job.endpoint_id == ep.id and job.status == IN_PROGRESS and job.worker_id == pod_id and not job.crashed:
                self.finish(job, FAILED, error=error)
