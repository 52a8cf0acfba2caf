"""`RunPodStandIn`, the stand-in's public face: builds the parts (engine, worker face, webhooks,
workers, HTTP server), starts and stops them, and offers the Python API that tests and the stack use."""
from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stillhouse_local.runpod_standin.engine import JobEngine
from stillhouse_local.runpod_standin.faults import validate_faults
from stillhouse_local.runpod_standin.management import Management
from stillhouse_local.runpod_standin.server import Server
from stillhouse_local.runpod_standin.state import Endpoint, Scaling, Settings, Tables
from stillhouse_local.runpod_standin.timers import Scheduler
from stillhouse_local.runpod_standin.webhooks import WebhookSender
from stillhouse_local.runpod_standin.worker_face import WorkerFace
from stillhouse_local.runpod_standin.workers import WorkerPool, default_handler_path

log = logging.getLogger("stillhouse_local.runpod_standin")


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
        scaling: Scaling | None = None,
        endpoint_scaling: dict[str, Scaling] | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is required")
        endpoint_env = {ep: dict(env) for ep, env in (endpoint_env or {}).items()}
        if unknown := sorted(set(endpoint_env) - set(endpoints)):
            raise ValueError(f"endpoint_env names endpoints that are not in endpoints: {', '.join(unknown)}")
        if unknown := sorted(set(endpoint_scaling or {}) - set(endpoints)):
            raise ValueError(f"endpoint_scaling names endpoints that are not in endpoints: {', '.join(unknown)}")
        self._settings = Settings(
            host=host,
            port=port,
            api_key=api_key,
            worker_token=uuid.uuid4().hex,
            handler_path=Path(handler_path) if handler_path else default_handler_path(),
            start_workers=start_workers,
            worker_concurrency=max(1, int(worker_concurrency)),
            worker_env=dict(worker_env or {}),
            endpoint_env=endpoint_env,
            webhook_retry_delay_s=webhook_retry_delay_s,
            result_ttl_s=result_ttl_s,
            runsync_result_ttl_s=min(runsync_result_ttl_s, result_ttl_s),
            log_dir=Path(log_dir) if log_dir else None,
            seed=seed,
            worker_command=worker_command,
            worker_handler=worker_handler,
            worker_start_timeout_s=worker_start_timeout_s,
            job_take_hold_s=job_take_hold_s,
            webhook_timeout_s=webhook_timeout_s,
            webhook_on_cancel=webhook_on_cancel,
            restart_workers=restart_workers,
            scaling=scaling or Scaling(),
            endpoint_scaling=dict(endpoint_scaling or {}),
        )
        self._tables = Tables()
        for ep in endpoints:
            self._tables.endpoints[ep] = Endpoint(ep, self._tables.lock, seed, self._settings.scaling_for(ep))
        self._webhooks = WebhookSender(self._tables, self._settings)
        self._engine = JobEngine(self._tables, self._settings, self._webhooks)
        self._worker_face = WorkerFace(self._engine)
        self._workers = WorkerPool(self._engine)
        self.management = Management(
            lambda ep, env, record: self.add_endpoint(ep, env=env, wait=False, scaling=Scaling.from_record(record)),
            self.reconfigure_endpoint,
            lambda ep, record: self.set_scaling(ep, Scaling.from_record(record)))
        self._server: Server | None = None
        self._server_thread: threading.Thread | None = None
        self._started = False

    # -------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Bind, serve, start each endpoint's first workers (its floor: workers_min, at least one); return
        once every worker polls (or timeout)."""
        if self._started:
            return
        self._started = True
        s = self._settings
        try:
            self._tables.sched = Scheduler()
            self._engine.schedule_sweep()
            self._server = Server((s.host, s.port), self._engine, self._worker_face, self.management)
            s.port = self._server.server_address[1]
            self._server_thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="standin-http", daemon=True
            )
            self._server_thread.start()
            if s.start_workers:
                with self._tables.lock:
                    eps = list(self._tables.endpoints.values())
                for ep in eps:
                    for _ in range(ep.scaling.floor):
                        self._workers.spawn(ep)
                self._workers.wait_ready(eps)
        except BaseException:
            self.stop()
            raise
        if s.start_workers:
            self._workers.start_supervisor()
        log.info("RunPod stand-in listening on %s (endpoints: %s)", self.base_url, ", ".join(self._tables.endpoints))

    def stop(self) -> None:
        """Stop workers, then the server and background threads. Idempotent."""
        stopping = self._tables.stopping
        if not self._started or stopping.is_set():
            return
        stopping.set()
        with self._tables.lock:
            eps = list(self._tables.endpoints.values())
            for ep in eps:
                ep.cond.notify_all()  # held job-take/job-stop polls answer 204 at once from now on
        self._workers.join_supervisor()  # first, so no restart races with the stop below
        self._workers.stop_all(eps)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_all_connections()
        if self._server_thread is not None:
            self._server_thread.join(timeout=5)
        if self._tables.sched is not None:
            self._tables.sched.close()
        self._workers.close()
        log.info("RunPod stand-in stopped")

    def __enter__(self) -> RunPodStandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    def api_base(self) -> str:
        return f"{self.base_url}/v2"

    @property
    def api_key(self) -> str:
        return self._settings.api_key

    @property
    def endpoints(self) -> list[str]:
        with self._tables.lock:
            return list(self._tables.endpoints)

    @property
    def _endpoints(self) -> dict[str, Endpoint]:
        """The endpoint records by id; tests reach in for a worker's pid."""
        return self._tables.endpoints

    def add_endpoint(self, endpoint_id: str, *, env: dict[str, str] | None = None, wait: bool = True,
                     scaling: Scaling | None = None) -> None:
        """Add an endpoint at run time (starts its workers when workers are enabled). No-op if it exists.

        `env`: extra environment for this endpoint's workers (like the constructor's endpoint_env).
        `wait`: return once the workers poll (else at once; its jobs queue until they do).
        `scaling`: its scaler settings (default: the constructor's `scaling`)."""
        with self._tables.lock:
            if endpoint_id in self._tables.endpoints:
                return
            if env is not None:
                self._settings.endpoint_env[endpoint_id] = dict(env)
            if scaling is not None:
                self._settings.endpoint_scaling[endpoint_id] = scaling
            ep = Endpoint(endpoint_id, self._tables.lock, self._settings.seed, self._settings.scaling_for(endpoint_id))
            self._tables.endpoints[endpoint_id] = ep
        if self._started and self._settings.start_workers and not self._tables.stopping.is_set():
            for _ in range(ep.scaling.floor):
                self._workers.spawn(ep)
            if wait:
                self._workers.wait_ready([ep])

    def set_scaling(self, endpoint_id: str, scaling: Scaling) -> None:
        """New scaler settings for an endpoint (as a PATCH of workersMin/Max, scalerType/Value, idleTimeout
        does on RunPod); its workers move to them within a scaler tick."""
        with self._tables.lock:
            ep = self._tables.endpoints.get(endpoint_id)
            if ep is None:
                raise KeyError(endpoint_id)
            self._settings.endpoint_scaling[endpoint_id] = scaling
        self._workers.rescale(ep, scaling)

    def scaling(self, endpoint_id: str) -> Scaling:
        with self._tables.lock:
            return self._tables.endpoints[endpoint_id].scaling

    def workers(self, endpoint_id: str) -> dict[str, int]:
        """An endpoint's workers now: `serving` (started, not exited, not going), `ready` (of those, polled
        for jobs), `busy` (ready with a job), and `peak` (the most serving at once since it started)."""
        with self._tables.lock:
            ep = self._tables.endpoints[endpoint_id]
            serving = ep.serving()
            ready = [w for w in serving if w.pod_id in ep.seen]
            busy = [w for w in ready if ep.running.get(w.pod_id)]
            return {"serving": len(serving), "ready": len(ready), "busy": len(busy), "peak": ep.peak_workers}

    def reconfigure_endpoint(self, endpoint_id: str, env: dict[str, str]) -> None:
        """Give an endpoint's worker a new environment: its worker is replaced by one started with it
        (a new release of the endpoint, as RunPod rolls workers when their template changes)."""
        with self._tables.lock:
            ep = self._tables.endpoints.get(endpoint_id)
            if ep is None:
                raise KeyError(endpoint_id)
            self._settings.endpoint_env[endpoint_id] = dict(env)
        if self._started and self._settings.start_workers and not self._tables.stopping.is_set():
            self._workers.replace(ep)

    # -------------------------------------------------------------------------------- faults
    def set_faults(self, endpoint_id: str, **knobs: Any) -> None:
        """Merge fault knobs into an endpoint's current set (see FAULT_KNOBS). Raises ValueError/KeyError."""
        self._engine.set_faults(endpoint_id, validate_faults(knobs))

    def reset_faults(self, endpoint_id: str) -> None:
        self._engine.reset_faults(endpoint_id)

    def get_faults(self, endpoint_id: str) -> dict[str, Any]:
        return self._engine.get_faults(endpoint_id)

    # -------------------------------------------------------------------------------- introspection
    @property
    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """The last DELIVERY_LOG_SIZE webhook attempts (and dropped webhooks), oldest first."""
        return self._webhooks.deliveries()

    def stats(self, endpoint_id: str) -> dict[str, int]:
        """Counters of an endpoint: terminal statuses, "retried", "crashed", "route:<worker route>" and
        "api:<hosted route>" hits."""
        return self._engine.stats(endpoint_id)

    def job_status(self, job_id: str) -> dict[str, Any] | None:
        return self._engine.job_status(job_id)

    def endpoint_env(self, endpoint_id: str) -> dict[str, str]:
        """The environment an endpoint's worker gets on top of the RUNPOD_* set: worker_env, then its
        own entry of endpoint_env."""
        return self._settings.extra_env(endpoint_id)

    def worker_env_for(self, endpoint_id: str, pod_id: str | None = None) -> dict[str, str]:
        """The RUNPOD_* environment that points a real SDK worker at this stand-in's endpoint."""
        return self._workers.worker_env_for(endpoint_id, pod_id)
