"""The stand-in's records and shared state: job and endpoint records, job statuses and defaults, the
options it was built with (`Settings`) and the lock-guarded tables every part works on (`Tables`)."""
from __future__ import annotations

import collections
import dataclasses
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stillhouse_local.runpod_standin.faults import DEFAULT_FAULTS

if TYPE_CHECKING:
    from stillhouse_local.runpod_standin.timers import Scheduler
    from stillhouse_local.runpod_standin.worker_process import InProcessWorker, WorkerProcess

IN_QUEUE, IN_PROGRESS = "IN_QUEUE", "IN_PROGRESS"
COMPLETED, FAILED, CANCELLED, TIMED_OUT = "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})

DEFAULT_EXECUTION_TIMEOUT_MS = 600_000  # RunPod: 10 min
DEFAULT_TTL_MS = 86_400_000  # RunPod: 24 h

MISSING: Any = object()  # "no output", distinct from an output of None

QUEUE_DELAY, REQUEST_COUNT = "QUEUE_DELAY", "REQUEST_COUNT"


@dataclasses.dataclass(frozen=True)
class Scaling:
    """How many workers an endpoint runs, as RunPod's endpoint settings say (`workersMin`, `workersMax`,
    `scalerType`, `scalerValue`, `idleTimeout`), with RunPod's defaults.

    QUEUE_DELAY adds a worker while a job has waited in the queue longer than `scaler_value` seconds;
    REQUEST_COUNT keeps one worker per `scaler_value` jobs queued or running. A worker with no job for
    `idle_timeout_s` goes away, down to `workers_min`, but never below one: the stand-in keeps one warm
    worker, so a job never waits for a cold start (a deliberate deviation). Seconds may be fractions
    here (tests); RunPod's management API takes whole seconds."""

    workers_min: int = 0
    workers_max: int = 3
    scaler_type: str = QUEUE_DELAY
    scaler_value: float = 4.0
    idle_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.workers_max < 1 or not 0 <= self.workers_min <= self.workers_max:
            raise ValueError(f"need 0 <= workers_min <= workers_max and workers_max >= 1: {self}")
        if self.scaler_type not in (QUEUE_DELAY, REQUEST_COUNT):
            raise ValueError(f"scaler_type must be {QUEUE_DELAY} or {REQUEST_COUNT}, not {self.scaler_type!r}")
        if self.scaler_value <= 0 or self.idle_timeout_s < 0:
            raise ValueError(f"scaler_value must be > 0 and idle_timeout_s >= 0: {self}")

    @property
    def floor(self) -> int:
        """Workers kept however idle the endpoint is: workers_min, and at least one."""
        return max(1, self.workers_min)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Scaling:
        """From a management-API endpoint record (RunPod's field names)."""
        d = cls()
        def pick(key: str, default: Any) -> Any:
            return default if record.get(key) is None else record[key]

        return cls(workers_min=pick("workersMin", d.workers_min), workers_max=pick("workersMax", d.workers_max),
                   scaler_type=pick("scalerType", d.scaler_type), scaler_value=pick("scalerValue", d.scaler_value),
                   idle_timeout_s=pick("idleTimeout", d.idle_timeout_s))


@dataclasses.dataclass(eq=False)
class Job:
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
    output: Any = MISSING
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
        if self.output is not MISSING:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        return body


class Endpoint:
    def __init__(self, endpoint_id: str, lock: threading.RLock, seed: int | None,
                 scaling: Scaling | None = None) -> None:
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
        self.scaling = scaling or Scaling()
        # pod id -> worker, oldest first; a worker that exited stays here until the supervisor replaces it
        self.workers: dict[str, WorkerProcess | InProcessWorker] = {}
        self.draining: set[str] = set()  # pods being scaled down: they are handed no more jobs
        self.running: dict[str, set[str]] = collections.defaultdict(set)  # pod -> ids of jobs it took
        self.last_busy: dict[str, float] = {}  # pod -> when it last had a job (or started), monotonic
        self.worker_generation = 0
        self.worker_restarts = 0
        self.restart_at: dict[str, float] = {}  # pod of a worker that exited on its own -> when to replace it
        self.peak_workers = 0  # the most workers this endpoint ran at once (live, not draining)

    @property
    def worker(self) -> WorkerProcess | InProcessWorker | None:
        """The oldest worker (tests reach in for a pid; with one worker, the worker)."""
        return next(iter(self.workers.values()), None)

    def serving(self) -> list[WorkerProcess | InProcessWorker]:
        """Workers that take jobs: started, not exited, not being scaled down (lock held)."""
        return [w for pod, w in self.workers.items() if pod not in self.draining and w.returncode is None]

    def roll(self, rate: float) -> bool:
        """A seeded coin flip; draws nothing for 0 and 1, so other knobs' sequences stay stable."""
        if rate <= 0:
            return False
        if rate >= 1:
            return True
        with self.rng_lock:
            return self.rng.random() < rate

    # The fault methods below run with the stand-in's lock held.
    def apply_faults(self, knobs: dict[str, Any]) -> None:
        """Merge validated knobs; a new seed restarts this endpoint's coin flips."""
        if "seed" in knobs:
            self.seed = knobs.pop("seed")
            with self.rng_lock:
                self.rng = random.Random(None if self.seed is None else f"{self.seed}:{self.id}")
        self.faults.update(knobs)
        self.cond.notify_all()  # `down` lifted: held job-take polls may now hand out jobs

    def reset_faults(self) -> None:
        self.faults = dict(DEFAULT_FAULTS)
        self.cond.notify_all()

    def fault_view(self) -> dict[str, Any]:
        return {**self.faults, "seed": self.seed}


@dataclasses.dataclass
class Settings:
    """The constructor's options, as the parts read them. `port` is the bound one once started."""

    host: str
    port: int
    api_key: str
    worker_token: str  # the ?token= in the worker URLs the stand-in hands out (worker_env_for)
    handler_path: Path
    start_workers: bool
    worker_concurrency: int
    worker_env: dict[str, str]
    # Per endpoint, on top of worker_env: e.g. {"b": {"WORKER_STREAMING": "true"}} makes only b stream.
    endpoint_env: dict[str, dict[str, str]]
    webhook_retry_delay_s: float
    result_ttl_s: float
    runsync_result_ttl_s: float
    log_dir: Path | None
    seed: int | None
    worker_command: list[str] | None
    worker_handler: Callable[[dict], Any] | None
    worker_start_timeout_s: float
    job_take_hold_s: float
    webhook_timeout_s: float
    webhook_on_cancel: bool
    restart_workers: bool
    scaling: Scaling = dataclasses.field(default_factory=Scaling)  # every endpoint's, unless below
    endpoint_scaling: dict[str, Scaling] = dataclasses.field(default_factory=dict)

    def scaling_for(self, endpoint_id: str) -> Scaling:
        return self.endpoint_scaling.get(endpoint_id, self.scaling)

    @property
    def base_url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    def extra_env(self, endpoint_id: str) -> dict[str, str]:
        """worker_env, then this endpoint's own entry of endpoint_env."""
        return {**self.worker_env, **self.endpoint_env.get(endpoint_id, {})}


class Tables:
    """What the parts share: one lock, the jobs and endpoints it guards, the timers and the stop flag."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.sched: Scheduler | None = None  # made by start(), so an unstarted stand-in runs no threads
        self.stopping = threading.Event()
