"""Local stand-in of RunPod serverless, with both of RunPod's faces.

1. The hosted API our router calls, same shapes as ``https://api.runpod.ai/v2/{endpoint_id}/...``:
   run, runsync, status, stream, cancel, retry, purge-queue, health (Bearer auth).
2. The worker-facing job queue that the real ``runpod.serverless.start`` loop polls, so the unmodified
   ``gpu_handler/handler.py`` runs locally as on RunPod: job-take (long-poll), job-take-batch, job-stop
   (long-poll), job-done, job-stream, ping — under ``/_worker/{endpoint_id}/...``.

Plus run-time fault knobs (``PUT /_faults/{endpoint_id}``). Stdlib HTTP server + requests only.
See docs/runpod-standin.md for routes, knobs and the deliberate deviations from real RunPod.

    with RunPodStandIn(api_key="k", endpoints=["local"]) as rp:
        requests.post(f"{rp.api_base()}/local/run", json={"input": {"task": "echo"}},
                      headers={"Authorization": "Bearer k"})
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import heapq
import hmac
import itertools
import json
import logging
import os
import random
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import requests

from stillhouse_local.runpod_standin.worker_process import (
    InProcessWorker,
    Spawner,
    WorkerProcess,
)

log = logging.getLogger("stillhouse_local.runpod_standin")

IN_QUEUE, IN_PROGRESS = "IN_QUEUE", "IN_PROGRESS"
COMPLETED, FAILED, CANCELLED, TIMED_OUT = "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})

DEFAULT_EXECUTION_TIMEOUT_MS = 600_000  # RunPod: 10 min
DEFAULT_TTL_MS = 86_400_000  # RunPod: 24 h
RUNSYNC_WAIT_DEFAULT_MS, RUNSYNC_WAIT_MIN_MS, RUNSYNC_WAIT_MAX_MS = 90_000, 1_000, 300_000
MAX_RUN_BODY, MAX_RUNSYNC_BODY = 10 * 2**20, 20 * 2**20
WEBHOOK_TRIES = 3  # one POST + two retries, as RunPod
TTL_SWEEP_S = 0.25  # how often queued jobs are checked against policy.ttl
CRASH_DETECT_S = 1.0  # how long a "crashed" worker takes to be noticed (crash_mode fail/requeue)
DELIVERY_LOG_SIZE = 10_000  # webhook attempts kept for webhook_deliveries (oldest dropped)
WORKER_SEEN_FRESH_S = 30.0  # a worker not seen for this long no longer counts in /health

_MISSING: Any = object()

# name -> (kind, lo, hi); rates are shares in [0, 1]
FAULT_KNOBS: dict[str, tuple[str, float, float]] = {
    "error_rate": ("rate", 0.0, 1.0),
    "rate_limit_rate": ("rate", 0.0, 1.0),
    "latency_ms": ("number", 0.0, 600_000.0),
    "down": ("bool", 0, 0),
    "drop_webhook_rate": ("rate", 0.0, 1.0),
    "duplicate_webhook_rate": ("rate", 0.0, 1.0),
    "crash_rate": ("rate", 0.0, 1.0),
    "crash_mode": ("choice", 0, 0),
    "retry_after_s": ("number", 0.0, 3600.0),
    "seed": ("seed", 0, 0),
}
CRASH_MODES = ("hang", "fail", "requeue")
DEFAULT_FAULTS: dict[str, Any] = {
    "error_rate": 0.0,
    "rate_limit_rate": 0.0,
    "latency_ms": 0,
    "down": False,
    "drop_webhook_rate": 0.0,
    "duplicate_webhook_rate": 0.0,
    "crash_rate": 0.0,
    "crash_mode": "hang",
    "retry_after_s": 1,
}


class FaultError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def validate_faults(knobs: dict[str, Any]) -> dict[str, Any]:
    """Check a knob dict; returns it normalised. Raises FaultError naming the offending field."""
    if not isinstance(knobs, dict):
        raise FaultError("", "body must be a JSON object of fault knobs")
    out: dict[str, Any] = {}
    for name, value in knobs.items():
        spec = FAULT_KNOBS.get(name)
        if spec is None:
            raise FaultError(name, f"unknown fault knob {name!r}; known: {', '.join(sorted(FAULT_KNOBS))}")
        kind, lo, hi = spec
        if kind == "bool":
            if not isinstance(value, bool):
                raise FaultError(name, f"{name} must be true or false")
        elif kind == "choice":
            if value not in CRASH_MODES:
                raise FaultError(name, f"{name} must be one of {', '.join(CRASH_MODES)}")
        elif kind == "seed":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise FaultError(name, f"{name} must be an integer or null")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # noqa: PLR0124
                raise FaultError(name, f"{name} must be a number")
            if not lo <= value <= hi:
                raise FaultError(name, f"{name} must be between {lo:g} and {hi:g}")
        out[name] = value
    return out


# ------------------------------------------------------------------------------------------------ #
#                                             State                                                  #
# ------------------------------------------------------------------------------------------------ #
@dataclasses.dataclass(eq=False)
class _Job:
    id: str
    endpoint_id: str
    input: Any
    webhook: str | None
    execution_timeout_ms: float
    ttl_ms: float
    sync: bool
    status: str = IN_QUEUE
    queued_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    delay_ms: int | None = None
    execution_ms: int | None = None
    output: Any = _MISSING
    error: Any = None
    worker_id: str | None = None
    attempt: int = 0
    finish_seq: int = 0
    crashed: bool = False
    stream: list = dataclasses.field(default_factory=list)
    stream_sent: int = 0
    done: threading.Event = dataclasses.field(default_factory=threading.Event)

    def status_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.delay_ms is not None:
            body["delayTime"] = self.delay_ms
        if self.execution_ms is not None:
            body["executionTime"] = self.execution_ms
        if self.worker_id is not None:
            body["workerId"] = self.worker_id
        if self.output is not _MISSING:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        return body


class _Endpoint:
    def __init__(self, endpoint_id: str, lock: threading.RLock, seed: int | None) -> None:
        self.id = endpoint_id
        self.queue: collections.deque[str] = collections.deque()
        self.cond = threading.Condition(lock)  # job-take / job-stop waiters
        self.stop_signals: dict[str, list[str]] = collections.defaultdict(list)
        self.faults: dict[str, Any] = dict(DEFAULT_FAULTS)
        self.seed = seed
        self.rng = random.Random(None if seed is None else f"{seed}:{endpoint_id}")
        self.rng_lock = threading.Lock()
        self.counters = collections.Counter()
        self.seen: dict[str, float] = {}  # pod id -> last job-take/ping (monotonic)
        self.worker: WorkerProcess | InProcessWorker | None = None
        self.worker_generation = 0
        self.worker_restarts = 0
        self.next_restart_at: float | None = None

    def roll(self, rate: float) -> bool:
        """A seeded coin flip; draws nothing for 0 and 1, so other knobs' sequences stay stable."""
        if rate <= 0:
            return False
        if rate >= 1:
            return True
        with self.rng_lock:
            return self.rng.random() < rate


class _Scheduler:
    """Timers on one thread (inline callbacks must be quick) + a pool for slow work (webhooks)."""

    def __init__(self, pool_size: int = 8) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="standin-bg")
        self._thread = threading.Thread(target=self._run, name="standin-timers", daemon=True)
        self._thread.start()

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._heap, (when, next(self._seq), fn))
            self._cond.notify()

    def submit(self, fn: Callable[[], None]) -> None:
        try:
            self.pool.submit(_logged(fn))
        except RuntimeError:  # shut down
            pass

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = None if not self._heap else self._heap[0][0] - time.monotonic()
                    self._cond.wait(timeout)
                if self._closed:
                    return
                _, _, fn = heapq.heappop(self._heap)
            _logged(fn)()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        self.pool.shutdown(wait=False, cancel_futures=True)


def _logged(fn: Callable[[], None]) -> Callable[[], None]:
    def _call() -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - a background task must never kill its thread
            log.exception("stand-in background task failed")

    return _call


# ------------------------------------------------------------------------------------------------ #
#                                          The stand-in                                              #
# ------------------------------------------------------------------------------------------------ #
def default_handler_path() -> Path:
    """`<repo root>/gpu_handler/handler.py`, found from this file, $STILLHOUSE_GPU_HANDLER or the cwd."""
    env = os.environ.get("STILLHOUSE_GPU_HANDLER")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    candidates = [p / "gpu_handler" / "handler.py" for p in here.parents] + [Path.cwd() / "gpu_handler" / "handler.py"]
    for c in candidates:
        if c.is_file():
            return c
    return here.parents[4] / "gpu_handler" / "handler.py"


class RunPodStandIn:
    """A local RunPod: hosted API + worker queue + fault knobs, on one stdlib HTTP server."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str,
        endpoints: list[str] | tuple[str, ...] = ("local",),
        handler_path: str | Path | None = None,
        start_workers: bool = True,
        worker_concurrency: int = 1,
        worker_env: dict[str, str] | None = None,
        endpoint_env: dict[str, dict[str, str]] | None = None,
        webhook_retry_delay_s: float = 1.0,
        result_ttl_s: float = 1800,
        log_dir: Path | None = None,
        seed: int | None = None,
        # -- extras (keyword-only, all optional) --
        worker_command: list[str] | None = None,
        worker_handler: Callable[[dict], Any] | None = None,
        worker_start_timeout_s: float = 60.0,
        job_take_hold_s: float = 15.0,
        runsync_result_ttl_s: float = 60.0,
        webhook_timeout_s: float = 10.0,
        webhook_on_cancel: bool = True,
        restart_workers: bool = True,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is required")
        self._host = host
        self._port = port
        self._api_key = api_key
        self._worker_token = uuid.uuid4().hex
        self._handler_path = Path(handler_path) if handler_path else default_handler_path()
        self._start_workers = start_workers
        self._worker_concurrency = max(1, int(worker_concurrency))
        self._worker_env = dict(worker_env or {})
        # Per endpoint, on top of worker_env: e.g. {"b": {"WORKER_STREAMING": "true"}} makes only b stream.
        self._endpoint_env = {ep: dict(env) for ep, env in (endpoint_env or {}).items()}
        if unknown := sorted(set(self._endpoint_env) - set(endpoints)):
            raise ValueError(f"endpoint_env names endpoints that are not in endpoints: {', '.join(unknown)}")
        self._webhook_retry_delay_s = webhook_retry_delay_s
        self._result_ttl_s = result_ttl_s
        self._runsync_result_ttl_s = min(runsync_result_ttl_s, result_ttl_s)
        self._log_dir = Path(log_dir) if log_dir else None
        self._seed = seed
        self._worker_command = worker_command
        self._worker_handler = worker_handler
        self._worker_start_timeout_s = worker_start_timeout_s
        self._job_take_hold_s = job_take_hold_s
        self._webhook_timeout_s = webhook_timeout_s
        self._webhook_on_cancel = webhook_on_cancel
        self._restart_workers = restart_workers

        self._lock = threading.RLock()
        self._jobs: dict[str, _Job] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        for ep in endpoints:
            self._endpoints[ep] = _Endpoint(ep, self._lock, seed)
        self._deliveries: collections.deque[dict[str, Any]] = collections.deque(maxlen=DELIVERY_LOG_SIZE)
        self._server: _Server | None = None
        self._server_thread: threading.Thread | None = None
        self._sched: _Scheduler | None = None
        self._spawner: Spawner | None = None
        self._supervisor: threading.Thread | None = None
        self._tmp_log_dir: str | None = None
        self._started = False
        self._stopping = threading.Event()

    # -------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Bind, serve, start one worker per endpoint; return once every worker polls (or timeout)."""
        if self._started:
            return
        self._started = True
        try:
            self._sched = _Scheduler()
            self._sched.call_at(time.monotonic() + TTL_SWEEP_S, self._sweep_queues)
            self._server = _Server((self._host, self._port), _Handler, self)
            self._port = self._server.server_address[1]
            self._server_thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="standin-http", daemon=True
            )
            self._server_thread.start()
            if self._start_workers:
                with self._lock:
                    eps = list(self._endpoints.values())
                for ep in eps:
                    self._spawn_worker(ep)
                self._wait_workers_ready(eps)
        except BaseException:
            self.stop()
            raise
        if self._start_workers:
            self._supervisor = threading.Thread(target=self._supervise, name="standin-supervisor", daemon=True)
            self._supervisor.start()
        log.info("RunPod stand-in listening on %s (endpoints: %s)", self.base_url, ", ".join(self._endpoints))

    def stop(self) -> None:
        """Stop workers, then the server and background threads. Idempotent."""
        if not self._started or self._stopping.is_set():
            return
        self._stopping.set()
        with self._lock:
            eps = list(self._endpoints.values())
            for ep in eps:
                ep.cond.notify_all()  # held job-take/job-stop polls answer 204 at once from now on
        if self._supervisor is not None:  # first, so no restart races with the stop below
            self._supervisor.join(timeout=15)
        workers = [ep.worker for ep in eps if ep.worker is not None]
        for w in workers:
            w.terminate()
        for w in workers:
            w.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_all_connections()
        if self._server_thread is not None:
            self._server_thread.join(timeout=5)
        if self._sched is not None:
            self._sched.close()
        if self._spawner is not None:
            self._spawner.close()
        if self._tmp_log_dir is not None:
            shutil.rmtree(self._tmp_log_dir, ignore_errors=True)
        log.info("RunPod stand-in stopped")

    def __enter__(self) -> RunPodStandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host = self._host if self._host not in ("0.0.0.0", "", "::") else "127.0.0.1"
        return f"http://{host}:{self._port}"

    def api_base(self) -> str:
        return f"{self.base_url}/v2"

    @property
    def api_key(self) -> str:
        return self._api_key

    @property
    def endpoints(self) -> list[str]:
        with self._lock:
            return list(self._endpoints)

    def add_endpoint(self, endpoint_id: str, *, env: dict[str, str] | None = None) -> None:
        """Add an endpoint at run time (starts its worker when workers are enabled). No-op if it exists.

        `env`: extra environment for this endpoint's worker (like the constructor's endpoint_env)."""
        with self._lock:
            if endpoint_id in self._endpoints:
                return
            if env is not None:
                self._endpoint_env[endpoint_id] = dict(env)
            ep = _Endpoint(endpoint_id, self._lock, self._seed)
            self._endpoints[endpoint_id] = ep
        if self._started and self._start_workers and not self._stopping.is_set():
            self._spawn_worker(ep)
            self._wait_workers_ready([ep])

    # -------------------------------------------------------------------------------- faults
    def set_faults(self, endpoint_id: str, **knobs: Any) -> None:
        """Merge fault knobs into an endpoint's current set (see FAULT_KNOBS). Raises ValueError/KeyError."""
        knobs = validate_faults(knobs)
        with self._lock:
            ep = self._endpoints[endpoint_id]
            self._apply_faults(ep, knobs)

    def reset_faults(self, endpoint_id: str) -> None:
        with self._lock:
            ep = self._endpoints[endpoint_id]
            ep.faults = dict(DEFAULT_FAULTS)
            ep.cond.notify_all()

    def get_faults(self, endpoint_id: str) -> dict[str, Any]:
        with self._lock:
            ep = self._endpoints[endpoint_id]
            return {**ep.faults, "seed": ep.seed}

    def _apply_faults(self, ep: _Endpoint, knobs: dict[str, Any]) -> None:
        if "seed" in knobs:
            ep.seed = knobs.pop("seed")
            with ep.rng_lock:
                ep.rng = random.Random(None if ep.seed is None else f"{ep.seed}:{ep.id}")
        ep.faults.update(knobs)
        ep.cond.notify_all()  # `down` lifted: held job-take polls may now hand out jobs

    # -------------------------------------------------------------------------------- introspection
    @property
    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """The last DELIVERY_LOG_SIZE webhook attempts (and dropped webhooks), oldest first."""
        with self._lock:
            return [dict(d) for d in self._deliveries]

    def stats(self, endpoint_id: str) -> dict[str, int]:
        """Counters of an endpoint: terminal statuses, "retried", "crashed", "route:<worker route>" and
        "api:<hosted route>" hits."""
        with self._lock:
            return dict(self._endpoints[endpoint_id].counters)

    def job_status(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.status_body()

    def endpoint_env(self, endpoint_id: str) -> dict[str, str]:
        """The environment an endpoint's worker gets on top of the RUNPOD_* set: worker_env, then its
        own entry of endpoint_env."""
        return {**self._worker_env, **self._endpoint_env.get(endpoint_id, {})}

    def worker_env_for(self, endpoint_id: str, pod_id: str | None = None) -> dict[str, str]:
        """The RUNPOD_* environment that points a real SDK worker at this stand-in's endpoint."""
        ep = quote(endpoint_id, safe="")
        q = f"?token={self._worker_token}"
        base = f"{self.base_url}/_worker/{ep}"
        pod_id = pod_id or f"standin-{endpoint_id}-external"
        return {
            # rp_job: JOB_GET_URL = env.replace("$ID", WORKER_ID); "&job_in_progress=" is appended, so a
            # query string must already be there; job-take-batch and job-stop are derived from it.
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID{q}",
            # rp_http: .replace("$RUNPOD_POD_ID", WORKER_ID) at import, .replace("$ID", job id) per job,
            # then "&isStream=true|false" is appended.
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID{q}",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID{q}",
            # rp_ping: .replace("$RUNPOD_POD_ID", WORKER_ID); GET with params job_id, runpod_version.
            "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID{q}",
            "RUNPOD_PING_INTERVAL": "5000",
            "RUNPOD_POD_ID": pod_id,
            "RUNPOD_POD_HOSTNAME": f"{pod_id}.local",
            "RUNPOD_ENDPOINT_ID": endpoint_id,
            "RUNPOD_AI_API_KEY": self._api_key,
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "RUNPOD_LOG_LEVEL": "INFO",
            # gpu_handler reads WORKER_CONCURRENCY for its concurrency_modifier (the SDK itself has no such
            # variable); > 1 makes the SDK call job-take-batch. worker_env may override both.
            "WORKER_CONCURRENCY": str(self._worker_concurrency),
            "STILLHOUSE_WORKER_CONCURRENCY": str(self._worker_concurrency),
            "PYTHONUNBUFFERED": "1",
        }

    # -------------------------------------------------------------------------------- workers
    def _spawn_worker(self, ep: _Endpoint) -> None:
        ep.worker_generation += 1
        pod_id = f"standin-{ep.id}-{ep.worker_generation}-{uuid.uuid4().hex[:6]}"
        if self._worker_handler is not None:
            env = self.worker_env_for(ep.id, pod_id)
            worker: WorkerProcess | InProcessWorker = InProcessWorker(
                endpoint_id=ep.id,
                pod_id=pod_id,
                handler=self._worker_handler,
                take_url=env["RUNPOD_WEBHOOK_GET_JOB"].replace("$ID", pod_id),
                done_url=env["RUNPOD_WEBHOOK_POST_OUTPUT"].replace("$RUNPOD_POD_ID", pod_id),
                stream_url=env["RUNPOD_WEBHOOK_POST_STREAM"].replace("$RUNPOD_POD_ID", pod_id),
                headers={"Authorization": self._api_key},
                concurrency=self._worker_concurrency,
                poll_timeout_s=self._job_take_hold_s + 30,
            )
        else:
            if self._spawner is None:
                self._spawner = Spawner()
            env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
            env.update(self.worker_env_for(ep.id, pod_id))
            env.update(self.endpoint_env(ep.id))
            if self._worker_command:
                command, cwd = list(self._worker_command), None
            else:
                if not self._handler_path.is_file():
                    raise FileNotFoundError(f"RunPod stand-in: handler not found at {self._handler_path}")
                command = [sys.executable, str(self._handler_path)]
                cwd = self._handler_path.parent.parent  # the repo root, so `gpu_handler.*` imports work
                env["PYTHONPATH"] = os.pathsep.join(p for p in (str(cwd), env.get("PYTHONPATH", "")) if p)
            worker = WorkerProcess(
                endpoint_id=ep.id,
                pod_id=pod_id,
                command=command,
                env=env,
                cwd=cwd,
                log_path=self._worker_log_path(ep.id),
                spawner=self._spawner,
            )
        with self._lock:
            ep.worker = worker
            ep.next_restart_at = None
        worker.start()

    def _worker_log_path(self, endpoint_id: str) -> Path:
        if self._log_dir is not None:
            return self._log_dir / f"runpod-worker-{endpoint_id}.log"
        if self._tmp_log_dir is None:  # kept only so a failed start can show the worker's last words
            self._tmp_log_dir = tempfile.mkdtemp(prefix="stillhouse-standin-")
        return Path(self._tmp_log_dir) / f"runpod-worker-{endpoint_id}.log"

    def _wait_workers_ready(self, eps: list[_Endpoint]) -> None:
        deadline = time.monotonic() + self._worker_start_timeout_s
        pending = list(eps)
        while pending and time.monotonic() < deadline and not self._stopping.is_set():
            still = []
            for ep in pending:
                with self._lock:
                    worker = ep.worker
                    polled = worker is not None and worker.pod_id in ep.seen
                if polled:
                    continue
                if worker is not None and worker.returncode is not None:
                    raise RuntimeError(
                        f"RunPod stand-in: worker for endpoint {ep.id!r} exited with code {worker.returncode} "
                        f"before polling for jobs. Last output:\n{worker.log_tail()}"
                    )
                still.append(ep)
            pending = still
            if pending:
                time.sleep(0.05)
        if pending:
            log.warning(
                "RunPod stand-in: worker(s) for %s not polling after %.0fs; continuing",
                ", ".join(ep.id for ep in pending), self._worker_start_timeout_s,
            )

    def _supervise(self) -> None:
        """Restart a worker that exited on its own (a crash, or the SDK's refresh_worker)."""
        while not self._stopping.wait(0.5):
            with self._lock:
                eps = list(self._endpoints.values())
            for ep in eps:
                worker = ep.worker
                if worker is None or worker.returncode is None:
                    continue
                now = time.monotonic()
                with self._lock:
                    if ep.next_restart_at is None:
                        code = worker.returncode
                        log.warning("RunPod stand-in: worker %s exited (code %s)", worker.pod_id, code)
                        self._fail_jobs_of_worker(ep, worker.pod_id, f"worker {worker.pod_id} exited with code {code}")
                        ep.seen.pop(worker.pod_id, None)
                        ep.worker_restarts += 1
                        ep.next_restart_at = now + min(30.0, 1.0 * (ep.worker_restarts - 1))
                    due = self._restart_workers and now >= ep.next_restart_at
                if due and not self._stopping.is_set():
                    worker.stop()
                    try:
                        self._spawn_worker(ep)
                    except Exception:  # noqa: BLE001
                        log.exception("RunPod stand-in: could not restart worker for %s", ep.id)

    def _fail_jobs_of_worker(self, ep: _Endpoint, pod_id: str, error: str) -> None:
        for job in list(self._jobs.values()):
            if job.endpoint_id == ep.id and job.status == IN_PROGRESS and job.worker_id == pod_id and not job.crashed:
                self._finish(job, FAILED, error=error)

    # -------------------------------------------------------------------------------- hosted-API ops
    def _create_job(self, ep: _Endpoint, body: dict[str, Any], *, sync: bool) -> _Job:
        policy = body.get("policy") or {}
        job = _Job(
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
            self._enqueue(ep, job)
        return job

    def _enqueue(self, ep: _Endpoint, job: _Job, *, front: bool = False) -> None:
        job.status = IN_QUEUE
        job.queued_at = time.monotonic()
        (ep.queue.appendleft if front else ep.queue.append)(job.id)
        ep.cond.notify_all()

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
                        self._finish(job, TIMED_OUT, error="job expired in queue (policy.ttl)")
                    else:
                        keep.append(jid)
                ep.queue = keep
        if not self._stopping.is_set():
            self._sched.call_at(now + TTL_SWEEP_S, self._sweep_queues)

    def _cancel(self, job: _Job) -> None:
        with self._lock:
            if job.status in (IN_QUEUE, IN_PROGRESS):
                self._finish(job, CANCELLED)

    def _retry(self, job: _Job) -> bool:
        with self._lock:
            if job.status not in (FAILED, TIMED_OUT):
                return False
            ep = self._endpoints[job.endpoint_id]
            job.attempt += 1
            job.started_at = job.finished_at = None
            job.delay_ms = job.execution_ms = None
            job.output, job.error, job.worker_id, job.crashed = _MISSING, None, None, False
            job.stream, job.stream_sent = [], 0
            job.done = threading.Event()
            ep.counters["retried"] += 1
            self._enqueue(ep, job)
            return True

    def _purge(self, ep: _Endpoint) -> int:
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

    def _health(self, ep: _Endpoint) -> dict[str, Any]:
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
                pods = {p for p, t in ep.seen.items() if now - t < WORKER_SEEN_FRESH_S}
                w = ep.worker
                if w is not None:
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
    def _finish(self, job: _Job, status: str, *, output: Any = _MISSING, error: Any = None) -> None:
        """Move a job to a terminal status (lock held). Schedules retention, stop signal, webhook."""
        ep = self._endpoints[job.endpoint_id]
        now = time.monotonic()
        was_running = job.status == IN_PROGRESS
        job.status = status
        job.finished_at = now
        if job.started_at is not None:
            job.execution_ms = int((now - job.started_at) * 1000)
        if output is not _MISSING:
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
        keep = self._runsync_result_ttl_s if job.sync else self._result_ttl_s
        self._sched.call_at(now + keep, lambda: self._expire_result(job_id, seq))
        if job.webhook and (status != CANCELLED or self._webhook_on_cancel):
            self._send_webhook(ep, job)

    def _expire_result(self, job_id: str, seq: int) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.status in TERMINAL and job.finish_seq == seq:
                del self._jobs[job_id]

    def _send_webhook(self, ep: _Endpoint, job: _Job) -> None:
        body = job.status_body()
        url = job.webhook
        if ep.roll(ep.faults["drop_webhook_rate"]):
            self._deliveries.append({"job_id": job.id, "url": url, "status": job.status, "dropped": True})
            return
        copies = 2 if ep.roll(ep.faults["duplicate_webhook_rate"]) else 1
        for copy in range(1, copies + 1):
            self._sched.submit(lambda copy=copy: self._deliver(job.id, url, body, copy, 1))

    def _deliver(self, job_id: str, url: str, body: dict[str, Any], copy: int, attempt: int) -> None:
        record: dict[str, Any] = {"job_id": job_id, "url": url, "status": body["status"], "copy": copy,
                                  "attempt": attempt, "status_code": None, "error": None}
        try:
            resp = requests.post(url, json=body, timeout=self._webhook_timeout_s,
                                 headers={"User-Agent": "stillhouse-runpod-standin"})
            record["status_code"] = resp.status_code
            ok = 200 <= resp.status_code < 300
        except requests.RequestException as err:
            record["error"] = f"{type(err).__name__}: {err}"
            ok = False
        with self._lock:
            self._deliveries.append(record)
        if not ok and attempt < WEBHOOK_TRIES and not self._stopping.is_set():
            when = time.monotonic() + self._webhook_retry_delay_s
            self._sched.call_at(when, lambda: self._sched.submit(
                lambda: self._deliver(job_id, url, body, copy, attempt + 1)))

    # -------------------------------------------------------------------------------- worker-face ops
    def _take_jobs(self, ep: _Endpoint, pod: str, n: int, peer_gone: Callable[[], bool]) -> list[_Job]:
        """Long-poll: hand out up to n queued jobs to worker `pod`, or [] after the hold time."""
        deadline = time.monotonic() + self._job_take_hold_s
        with self._lock:
            while True:
                now = time.monotonic()
                ep.seen[pod] = now
                if self._stopping.is_set():
                    return []
                taken: list[_Job] = []
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

    def _start(self, ep: _Endpoint, job: _Job, pod: str, now: float) -> None:
        job.status = IN_PROGRESS
        job.started_at = now
        job.delay_ms = int((now - job.queued_at) * 1000)
        job.worker_id = pod
        job_id, attempt = job.id, job.attempt
        self._sched.call_at(now + job.execution_timeout_ms / 1000, lambda: self._execution_timed_out(job_id, attempt))

    def _execution_timed_out(self, job_id: str, attempt: int) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.status == IN_PROGRESS and job.attempt == attempt:
                self._finish(job, TIMED_OUT, error="execution timeout exceeded (policy.executionTimeout)")

    def _crash(self, ep: _Endpoint, job: _Job) -> None:
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
                    self._finish(job, FAILED, error=f"worker {job.worker_id} crashed (stand-in crash_rate fault)")
                else:  # requeue: RunPod hands the job of a dead worker to another one
                    job.attempt += 1
                    job.started_at, job.delay_ms, job.worker_id, job.crashed = None, None, None, False
                    ep.counters["retried"] += 1
                    self._enqueue(ep, job, front=True)

        self._sched.call_at(time.monotonic() + CRASH_DETECT_S, _detected)

    def _requeue_undelivered(self, ep: _Endpoint, jobs: list[_Job], pod: str) -> None:
        """A job-take answer could not be written: the worker never got these jobs."""
        with self._lock:
            for job in reversed(jobs):
                if job.status == IN_PROGRESS and job.worker_id == pod:
                    job.attempt += 1
                    job.started_at, job.delay_ms, job.worker_id = None, None, None
                    self._enqueue(ep, job, front=True)

    def _take_stop_signals(self, ep: _Endpoint, pod: str) -> list[str]:
        deadline = time.monotonic() + self._job_take_hold_s
        with self._lock:
            while True:
                ep.seen[pod] = time.monotonic()
                ids = ep.stop_signals.pop(pod, None)
                if ids:
                    return ids
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return []
                ep.cond.wait(remaining)

    def _job_done(self, ep: _Endpoint, pod: str, job_id: str, body: Any) -> str | None:
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
            output = body.get("output", _MISSING)
            if body.get("error"):
                self._finish(job, FAILED, output=output, error=body["error"])
            else:
                self._finish(job, COMPLETED, output=output)
            return None

    def _job_stream(self, ep: _Endpoint, pod: str, job_id: str, body: Any) -> str | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.endpoint_id != ep.id or job.status != IN_PROGRESS or job.worker_id != pod:
                return "job is not running on this worker"
            job.stream.append(body if isinstance(body, dict) and "output" in body else {"output": body})
            return None

    def _ping(self, ep: _Endpoint, pod: str) -> None:
        with self._lock:
            ep.seen[pod] = time.monotonic()


# ------------------------------------------------------------------------------------------------ #
#                                            HTTP layer                                              #
# ------------------------------------------------------------------------------------------------ #
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], handler: type, standin: RunPodStandIn) -> None:
        self.standin = standin
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conns_lock:
                self._conns.discard(request)

    def close_all_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Reply(Exception):
    """Raised inside a route to answer at once."""

    def __init__(self, code: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(code)
        self.code, self.body, self.headers = code, body, headers or {}


def _err(code: int, message: str, **extra: Any) -> _Reply:
    return _Reply(code, {"error": message, **extra})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 300  # idle keep-alive connections are closed after this
    disable_nagle_algorithm = True  # else small keep-alive answers stall ~40 ms on delayed ACKs

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -------------------------------------------------------------------------------- plumbing
    def _dispatch(self, method: str) -> None:
        standin = self.server.standin
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        parts = [unquote(p) for p in split.path.strip("/").split("/")] if split.path.strip("/") else []
        try:
            self.raw_body = self._read_body(MAX_RUNSYNC_BODY)
            if parts[:1] == ["v2"]:
                self._hosted(standin, method, parts[1:])
            elif parts[:1] == ["_worker"]:
                self._worker(standin, method, parts[1:])
            elif parts[:1] == ["_faults"]:
                self._faults(standin, method, parts[1:])
            elif parts in ([], ["ping"]):
                raise _Reply(200, {"ok": True, "service": "runpod-standin"})
            else:
                raise _err(404, f"no route for {method} {split.path}")
        except _Reply as reply:
            self._send(reply.code, reply.body, reply.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # noqa: BLE001
            log.exception("stand-in: %s %s failed", method, self.path)
            self._send(500, {"error": f"internal stand-in error: {type(err).__name__}: {err}"})

    def _read_body(self, limit: int) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            self.close_connection = True
            raise _err(413, f"payload too large ({length} bytes; limit {limit})")
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> Any:
        if not self.raw_body.strip():
            return None
        try:
            # The SDK posts JSON with Content-Type application/x-www-form-urlencoded: parse regardless.
            return json.loads(self.raw_body)
        except (ValueError, UnicodeDecodeError) as err:
            raise _err(400, f"body is not valid JSON: {err}") from err

    def _send(self, code: int, body: Any = None, headers: dict[str, str] | None = None) -> bool:
        data = b"" if body is None or code == 204 else json.dumps(body).encode()
        try:
            self.send_response(code)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self._headers_buffer.append(b"\r\n" + data)  # headers and body in one write
            self.flush_headers()
            return True
        except OSError:
            self.close_connection = True
            return False

    def _peer_gone(self) -> bool:
        """True when the client closed its end (a held long-poll whose worker went away)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _bearer_ok(self, standin: RunPodStandIn) -> bool:
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), standin.api_key.encode())

    @staticmethod
    def _endpoint(standin: RunPodStandIn, parts: list[str]) -> _Endpoint:
        if not parts or not parts[0]:
            raise _err(404, "endpoint id missing")
        with standin._lock:
            ep = standin._endpoints.get(parts[0])
        if ep is None:
            raise _err(404, f"endpoint {parts[0]!r} not found")
        return ep

    # -------------------------------------------------------------------------------- hosted API
    def _hosted(self, standin: RunPodStandIn, method: str, parts: list[str]) -> None:
        if not self._bearer_ok(standin):
            raise _Reply(401, {"error": "Unauthorized: Authorization: Bearer <api key> required"},
                         {"WWW-Authenticate": "Bearer"})
        ep = self._endpoint(standin, parts)
        action, rest = (parts[1] if len(parts) > 1 else ""), parts[2:]
        with standin._lock:
            ep.counters[f"api:{action}"] += 1  # every call that reached the endpoint, faults included
        latency = ep.faults["latency_ms"]
        if latency:
            time.sleep(latency / 1000)

        def need(methods: tuple[str, ...], nargs: int) -> None:
            if method not in methods:
                raise _Reply(405, {"error": f"{method} not allowed on {action}"}, {"Allow": ", ".join(methods)})
            if len(rest) != nargs:
                raise _err(404, f"no route for {method} {self.path}")

        if action in ("run", "runsync"):
            need(("POST",), 0)
            self._submit(standin, ep, sync=action == "runsync")
        elif action == "status":
            need(("GET", "POST"), 1)
            raise _Reply(200, self._job(standin, ep, rest[0]).status_body())
        elif action == "stream":
            need(("GET", "POST"), 1)
            job = self._job(standin, ep, rest[0])
            with standin._lock:
                chunks = job.stream[job.stream_sent:]
                job.stream_sent = len(job.stream)
                raise _Reply(200, {"status": job.status, "stream": chunks})
        elif action == "cancel":
            need(("POST",), 1)
            job = self._job(standin, ep, rest[0])
            standin._cancel(job)
            raise _Reply(200, {"id": job.id, "status": job.status})
        elif action == "retry":
            need(("POST",), 1)
            job = self._job(standin, ep, rest[0])
            if not standin._retry(job):
                raise _err(400, f"only FAILED or TIMED_OUT jobs can be retried; job {job.id} is {job.status}")
            raise _Reply(200, {"id": job.id, "status": job.status})
        elif action == "purge-queue":
            need(("POST",), 0)
            raise _Reply(200, {"removed": standin._purge(ep), "status": "completed"})
        elif action == "health":
            need(("GET",), 0)
            raise _Reply(200, standin._health(ep))
        raise _err(404, f"no route for {method} {self.path}")

    @staticmethod
    def _job(standin: RunPodStandIn, ep: _Endpoint, job_id: str) -> _Job:
        with standin._lock:
            job = standin._jobs.get(job_id)
        if job is None or job.endpoint_id != ep.id:
            raise _err(404, f"job {job_id!r} not found (unknown, purged, or its result expired)")
        return job

    def _submit(self, standin: RunPodStandIn, ep: _Endpoint, *, sync: bool) -> None:
        if not sync and len(self.raw_body) > MAX_RUN_BODY:
            raise _err(413, f"payload too large for /run ({len(self.raw_body)} bytes; limit {MAX_RUN_BODY})")
        faults = ep.faults
        if faults["down"]:
            raise _err(503, f"endpoint {ep.id} is unavailable (stand-in fault: down)")
        if ep.roll(faults["rate_limit_rate"]):
            raise _Reply(429, {"error": "Too Many Requests (stand-in fault: rate_limit_rate)"},
                         {"Retry-After": f"{faults['retry_after_s']:g}"})
        if ep.roll(faults["error_rate"]):
            raise _err(500, "Internal Server Error (stand-in fault: error_rate)")
        body = self._json_body()
        if not isinstance(body, dict):
            raise _err(400, "body must be a JSON object with an 'input' field")
        if body.get("input") is None:
            raise _err(400, "missing required field 'input'", field="input")
        webhook = body.get("webhook")
        if webhook is not None and (not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))):
            raise _err(400, "webhook must be an http(s) URL", field="webhook")
        policy = body.get("policy")
        if policy is not None:
            if not isinstance(policy, dict):
                raise _err(400, "policy must be an object", field="policy")
            for key in ("executionTimeout", "ttl"):
                v = policy.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
                    raise _err(400, f"policy.{key} must be a positive number of milliseconds", field=f"policy.{key}")
            body["policy"] = {k: v for k, v in policy.items() if v is not None}
        wait_ms = RUNSYNC_WAIT_DEFAULT_MS
        if sync and "wait" in self.query:
            try:
                wait_ms = int(float(self.query["wait"]))
            except ValueError as err:
                raise _err(400, "wait must be a number of milliseconds", field="wait") from err
            wait_ms = max(RUNSYNC_WAIT_MIN_MS, min(RUNSYNC_WAIT_MAX_MS, wait_ms))
        job = standin._create_job(ep, body, sync=sync)
        if not sync:
            raise _Reply(200, {"id": job.id, "status": IN_QUEUE})
        deadline = time.monotonic() + wait_ms / 1000
        while not job.done.is_set() and not standin._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            job.done.wait(min(remaining, 0.5))
        with standin._lock:
            raise _Reply(200, job.status_body())

    # -------------------------------------------------------------------------------- worker API
    def _worker(self, standin: RunPodStandIn, method: str, parts: list[str]) -> None:
        auth = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        token_ok = hmac.compare_digest(self.query.get("token", "").encode(), standin._worker_token.encode())
        if not token_ok and not hmac.compare_digest(auth.encode(), standin.api_key.encode()):
            raise _err(401, "Unauthorized worker")
        ep = self._endpoint(standin, parts)
        action, rest = (parts[1] if len(parts) > 1 else ""), parts[2:]
        with standin._lock:
            ep.counters[f"route:{action}"] += 1
        if action in ("job-take", "job-take-batch") and method == "GET" and len(rest) == 1:
            pod = rest[0]
            n = 1
            if action == "job-take-batch":
                try:
                    n = max(1, min(256, int(self.query.get("batch_size", "1"))))
                except ValueError:
                    n = 1
            jobs = standin._take_jobs(ep, pod, n, self._peer_gone)
            if not jobs:
                raise _Reply(204)
            payload = [{"id": j.id, "input": j.input} for j in jobs]
            if not self._send(200, payload if action == "job-take-batch" else payload[0]):
                standin._requeue_undelivered(ep, jobs, pod)  # the write failed: nobody got the jobs
            return
        if action == "job-stop" and method == "GET" and len(rest) == 1:
            ids = standin._take_stop_signals(ep, rest[0])
            raise _Reply(200, {"jobsToStop": ids}) if ids else _Reply(204)
        if action in ("job-done", "job-stream") and method == "POST" and len(rest) == 2:
            pod, job_id = rest
            body = self._json_body()
            if action == "job-done":
                latency = ep.faults["latency_ms"]
                if latency:  # latency_ms also lengthens execution: the result lands this much later
                    time.sleep(latency / 1000)
                ignored = standin._job_done(ep, pod, job_id, body)
            else:
                ignored = standin._job_stream(ep, pod, job_id, body)
            # 200 even when ignored: the SDK retries non-2xx answers, which would only repeat the noise.
            raise _Reply(200, {"ok": True} if ignored is None else {"ok": True, "ignored": ignored})
        if action == "ping" and method == "GET" and len(rest) == 1:
            standin._ping(ep, rest[0])
            raise _Reply(200, {"ok": True})
        raise _err(404, f"no worker route for {method} {self.path}")

    # -------------------------------------------------------------------------------- faults
    def _faults(self, standin: RunPodStandIn, method: str, parts: list[str]) -> None:
        if not self._bearer_ok(standin):
            raise _Reply(401, {"error": "Unauthorized: Authorization: Bearer <api key> required"},
                         {"WWW-Authenticate": "Bearer"})
        ep = self._endpoint(standin, parts)
        if len(parts) != 1:
            raise _err(404, f"no route for {method} {self.path}")
        if method == "PUT":
            try:
                knobs = validate_faults(self._json_body() or {})
            except FaultError as err:
                raise _err(400, str(err), field=err.field) from err
            with standin._lock:
                standin._apply_faults(ep, knobs)
        elif method == "DELETE":
            standin.reset_faults(ep.id)
        elif method != "GET":
            raise _Reply(405, {"error": f"{method} not allowed"}, {"Allow": "GET, PUT, DELETE"})
        raise _Reply(200, standin.get_faults(ep.id))


# ------------------------------------------------------------------------------------------------ #
#                                              CLI                                                   #
# ------------------------------------------------------------------------------------------------ #
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stillhouse_local.runpod_standin",
                                description="Local stand-in of RunPod serverless (hosted API + worker queue).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--endpoints", default="local", help="comma-separated endpoint ids")
    p.add_argument("--api-key", default=os.environ.get("STILLHOUSE_RUNPOD_API_KEY", "local-key"))
    p.add_argument("--handler", default=None, help="path of the worker handler (default gpu_handler/handler.py)")
    p.add_argument("--no-workers", action="store_true", help="start no worker processes")
    p.add_argument("--concurrency", type=int, default=1, help="exported to the worker as WORKER_CONCURRENCY")
    p.add_argument("--endpoint-env", action="append", default=[], metavar="EP:NAME=VALUE",
                   help="extra environment for one endpoint's worker, e.g. b:WORKER_STREAMING=true (repeatable)")
    p.add_argument("--log-dir", default=None, help="worker logs go here (default: discarded)")
    p.add_argument("--webhook-retry-delay", type=float, default=1.0)
    p.add_argument("--result-ttl", type=float, default=1800)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s")
    endpoint_env: dict[str, dict[str, str]] = {}
    for item in args.endpoint_env:
        ep, sep, assignment = item.partition(":")
        name, eq, value = assignment.partition("=")
        if not (sep and eq and ep.strip() and name.strip()):
            p.error(f"--endpoint-env wants EP:NAME=VALUE, got {item!r}")
        endpoint_env.setdefault(ep.strip(), {})[name.strip()] = value
    standin = RunPodStandIn(
        host=args.host, port=args.port, api_key=args.api_key,
        endpoints=[e.strip() for e in args.endpoints.split(",") if e.strip()],
        handler_path=args.handler, start_workers=not args.no_workers, worker_concurrency=args.concurrency,
        endpoint_env=endpoint_env,
        webhook_retry_delay_s=args.webhook_retry_delay, result_ttl_s=args.result_ttl,
        log_dir=Path(args.log_dir) if args.log_dir else None, seed=args.seed,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    standin.start()
    print(f"RunPod stand-in: {standin.api_base()}/{{{','.join(standin.endpoints)}}}/run  "
          f"(Authorization: Bearer {args.api_key}); Ctrl-C stops", flush=True)
    try:
        done.wait()
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
