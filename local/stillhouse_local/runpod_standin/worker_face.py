"""The worker-facing queue of the stand-in: what the SDK's job-take, job-stop, job-done, job-stream
and ping routes do to jobs, plus the execution timeout and crash faults that start with a take."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from stillhouse_local.runpod_standin.engine import CRASH_DETECT_S, JobEngine
from stillhouse_local.runpod_standin.state import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    IN_QUEUE,
    MISSING,
    TIMED_OUT,
    Endpoint,
    Job,
)


class WorkerFace:
    """Hands jobs to workers and records what they send back; terminal moves go through the engine."""

    def __init__(self, engine: JobEngine) -> None:
        self._engine = engine
        self._tables = engine.tables
        self._lock = engine.tables.lock
        self._jobs = engine.tables.jobs
        self._stopping = engine.tables.stopping
        self._hold_s = engine.settings.job_take_hold_s

    def take_jobs(self, ep: Endpoint, pod: str, n: int, peer_gone: Callable[[], bool]) -> list[Job]:
        """Long-poll: hand out up to n queued jobs to worker `pod`, or [] after the hold time."""
        deadline = time.monotonic() + self._hold_s
        with self._lock:
            while True:
                now = time.monotonic()
                if self._stopping.is_set() or pod in ep.draining:
                    return []  # a worker being scaled down is handed nothing; it is stopped next
                ep.seen[pod] = now
                taken: list[Job] = []
                if not ep.faults["down"] and ep.queue:
                    if peer_gone():
                        return []
                    while ep.queue and len(taken) < n:
                        job = self._jobs.get(ep.queue.popleft())
                        if job is None or job.status != IN_QUEUE:
                            continue
                        self._start(ep, job, pod, now)
                        if ep.roll(ep.faults["crash_rate"]):
                            self._crash(ep, job)
                            continue
                        taken.append(job)
                if taken:
                    return taken
                if now >= deadline:
                    return []
                ep.cond.wait(deadline - now)

    def _start(self, ep: Endpoint, job: Job, pod: str, now: float) -> None:
        job.status = IN_PROGRESS
        job.started_at = now
        job.delay_ms = int((now - job.queued_at) * 1000)
        job.worker_id = pod
        ep.running[pod].add(job.id)  # the scaler's count of busy workers (pruned as jobs end)
        ep.last_busy[pod] = now
        job_id, attempt = job.id, job.attempt
        self._tables.sched.call_at(now + job.execution_timeout_ms / 1000,
                                   lambda: self._execution_timed_out(job_id, attempt))

    def _execution_timed_out(self, job_id: str, attempt: int) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.status == IN_PROGRESS and job.attempt == attempt:
                self._engine.finish(job, TIMED_OUT, error="execution timeout exceeded (policy.executionTimeout)")

    def _crash(self, ep: Endpoint, job: Job) -> None:
        """crash_rate: the job reached a worker that "died"; the real worker never sees it."""
        job.crashed = True
        ep.counters["crashed"] += 1
        mode, attempt = ep.faults["crash_mode"], job.attempt
        if mode == "hang":
            return  # IN_PROGRESS until executionTimeout -> TIMED_OUT

        def _detected() -> None:
            with self._lock:
                if job.status != IN_PROGRESS or job.attempt != attempt or self._jobs.get(job.id) is not job:
                    return
                if mode == "fail":
                    error = f"worker {job.worker_id} crashed (stand-in crash_rate fault)"
                    self._engine.finish(job, FAILED, error=error)
                else:  # requeue: RunPod hands the job of a dead worker to another one
                    job.attempt += 1
                    job.started_at, job.delay_ms, job.worker_id, job.crashed = None, None, None, False
                    ep.counters["retried"] += 1
                    self._engine.enqueue(ep, job, front=True)

        self._tables.sched.call_at(time.monotonic() + CRASH_DETECT_S, _detected)

    def requeue_undelivered(self, ep: Endpoint, jobs: list[Job], pod: str) -> None:
        """A job-take answer could not be written: the worker never got these jobs."""
        with self._lock:
            for job in reversed(jobs):
                if job.status == IN_PROGRESS and job.worker_id == pod:
                    job.attempt += 1
                    job.started_at, job.delay_ms, job.worker_id = None, None, None
                    self._engine.enqueue(ep, job, front=True)

    def take_stop_signals(self, ep: Endpoint, pod: str) -> list[str]:
        deadline = time.monotonic() + self._hold_s
        with self._lock:
            while True:
                _saw(ep, pod)
                ids = ep.stop_signals.pop(pod, None)
                if ids:
                    return ids
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return []
                ep.cond.wait(remaining)

    def job_done(self, ep: Endpoint, pod: str, job_id: str, body: Any) -> str | None:
        """Record a worker's result; returns why it was ignored, or None."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.endpoint_id != ep.id:
                return "unknown job"
            if job.status != IN_PROGRESS:
                return f"job is {job.status}"
            if job.worker_id != pod or job.crashed:
                return "job is not assigned to this worker"
            if not isinstance(body, dict):
                body = {"output": body}
            output = body.get("output", MISSING)
            if body.get("error"):
                self._engine.finish(job, FAILED, output=output, error=body["error"])
            else:
                self._engine.finish(job, COMPLETED, output=output)
            return None

    def job_stream(self, ep: Endpoint, pod: str, job_id: str, body: Any) -> str | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.endpoint_id != ep.id or job.status != IN_PROGRESS or job.worker_id != pod:
                return "job is not running on this worker"
            job.stream.append(body if isinstance(body, dict) and "output" in body else {"output": body})
            return None

    def ping(self, ep: Endpoint, pod: str) -> None:
        with self._lock:
            _saw(ep, pod)


def _saw(ep: Endpoint, pod: str) -> None:
    """A worker called: it counts in health, unless it is being scaled down (lock held)."""
    if pod not in ep.draining:
        ep.seen[pod] = time.monotonic()
