"""Worker processes of the stand-in: their RUNPOD_* environment, spawning one per endpoint, waiting
until they poll, restarting those that exit, and stopping them all."""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

from stillhouse_local.runpod_standin.engine import JobEngine
from stillhouse_local.runpod_standin.state import Endpoint
from stillhouse_local.runpod_standin.worker_process import InProcessWorker, Spawner, WorkerProcess

log = logging.getLogger("stillhouse_local.runpod_standin")


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
    return here.parents[3] / "gpu_handler" / "handler.py"  # <repo>/local/stillhouse_local/runpod_standin/


class WorkerPool:
    """One worker per endpoint: the real SDK worker as a subprocess, or an in-process fake."""

    def __init__(self, engine: JobEngine) -> None:
        self._engine = engine
        self._settings = engine.settings
        self._lock = engine.tables.lock
        self._endpoints = engine.tables.endpoints
        self._stopping = engine.tables.stopping
        self._spawner: Spawner | None = None
        self._supervisor: threading.Thread | None = None
        self._tmp_log_dir: str | None = None

    def worker_env_for(self, endpoint_id: str, pod_id: str | None = None) -> dict[str, str]:
        """The RUNPOD_* environment that points a real SDK worker at this stand-in's endpoint."""
        s = self._settings
        ep = quote(endpoint_id, safe="")
        q = f"?token={s.worker_token}"
        base = f"{s.base_url}/_worker/{ep}"
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
            "RUNPOD_AI_API_KEY": s.api_key,
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "RUNPOD_LOG_LEVEL": "INFO",
            # gpu_handler reads WORKER_CONCURRENCY for its concurrency_modifier (the SDK itself has no such
            # variable); > 1 makes the SDK call job-take-batch. worker_env may override both.
            "WORKER_CONCURRENCY": str(s.worker_concurrency),
            "STILLHOUSE_WORKER_CONCURRENCY": str(s.worker_concurrency),
            "PYTHONUNBUFFERED": "1",
        }

    def spawn(self, ep: Endpoint) -> None:
        s = self._settings
        ep.worker_generation += 1
        pod_id = f"standin-{ep.id}-{ep.worker_generation}-{uuid.uuid4().hex[:6]}"
        if s.worker_handler is not None:
            env = self.worker_env_for(ep.id, pod_id)
            worker: WorkerProcess | InProcessWorker = InProcessWorker(
                endpoint_id=ep.id,
                pod_id=pod_id,
                handler=s.worker_handler,
                take_url=env["RUNPOD_WEBHOOK_GET_JOB"].replace("$ID", pod_id),
                done_url=env["RUNPOD_WEBHOOK_POST_OUTPUT"].replace("$RUNPOD_POD_ID", pod_id),
                stream_url=env["RUNPOD_WEBHOOK_POST_STREAM"].replace("$RUNPOD_POD_ID", pod_id),
                headers={"Authorization": s.api_key},
                concurrency=s.worker_concurrency,
                poll_timeout_s=s.job_take_hold_s + 30,
            )
        else:
            if self._spawner is None:
                self._spawner = Spawner()
            env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
            env.update(self.worker_env_for(ep.id, pod_id))
            env.update(s.extra_env(ep.id))
            if s.worker_command:
                command, cwd = list(s.worker_command), None
            else:
                if not s.handler_path.is_file():
                    raise FileNotFoundError(f"RunPod stand-in: handler not found at {s.handler_path}")
                command = [sys.executable, str(s.handler_path)]
                cwd = s.handler_path.parent.parent  # the repo root, so `gpu_handler.*` imports work
                env["PYTHONPATH"] = os.pathsep.join(p for p in (str(cwd), env.get("PYTHONPATH", "")) if p)
            worker = WorkerProcess(
                endpoint_id=ep.id,
                pod_id=pod_id,
                command=command,
                env=env,
                cwd=cwd,
                log_path=self._log_path(ep.id),
                spawner=self._spawner,
            )
        with self._lock:
            ep.worker = worker
            ep.next_restart_at = None
        worker.start()

    def replace(self, ep: Endpoint) -> None:
        """Stop an endpoint's worker and start a new one (with the endpoint's current environment)."""
        with self._lock:
            old, ep.worker = ep.worker, None  # the supervisor skips an endpoint with no worker meanwhile
        if old is not None:
            old.terminate()
            old.stop()
            with self._lock:
                self._engine.fail_jobs_of_worker(ep, old.pod_id, f"worker {old.pod_id} replaced by a new release")
                ep.seen.pop(old.pod_id, None)
        self.spawn(ep)

    def _log_path(self, endpoint_id: str) -> Path:
        if self._settings.log_dir is not None:
            return self._settings.log_dir / f"runpod-worker-{endpoint_id}.log"
        if self._tmp_log_dir is None:  # kept only so a failed start can show the worker's last words
            self._tmp_log_dir = tempfile.mkdtemp(prefix="stillhouse-standin-")
        return Path(self._tmp_log_dir) / f"runpod-worker-{endpoint_id}.log"

    def wait_ready(self, eps: list[Endpoint]) -> None:
        """Return once every worker of `eps` has polled, or after worker_start_timeout_s (logged)."""
        timeout_s = self._settings.worker_start_timeout_s
        deadline = time.monotonic() + timeout_s
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
                ", ".join(ep.id for ep in pending), timeout_s,
            )

    def start_supervisor(self) -> None:
        self._supervisor = threading.Thread(target=self._supervise, name="standin-supervisor", daemon=True)
        self._supervisor.start()

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
                        self._engine.fail_jobs_of_worker(
                            ep, worker.pod_id, f"worker {worker.pod_id} exited with code {code}")
                        ep.seen.pop(worker.pod_id, None)
                        ep.worker_restarts += 1
                        ep.next_restart_at = now + min(30.0, 1.0 * (ep.worker_restarts - 1))
                    due = self._settings.restart_workers and now >= ep.next_restart_at
                if due and not self._stopping.is_set():
                    worker.stop()
                    try:
                        self.spawn(ep)
                    except Exception:  # noqa: BLE001
                        log.exception("RunPod stand-in: could not restart worker for %s", ep.id)

    def join_supervisor(self) -> None:
        """Wait for the supervisor to see the stop flag, so no restart races with stop_all()."""
        if self._supervisor is not None:
            self._supervisor.join(timeout=15)

    def stop_all(self, eps: list[Endpoint]) -> None:
        workers = [ep.worker for ep in eps if ep.worker is not None]
        for w in workers:
            w.terminate()
        for w in workers:
            w.stop()

    def close(self) -> None:
        """After the server is down: the spawner thread and the throwaway log folder go."""
        if self._spawner is not None:
            self._spawner.close()
        if self._tmp_log_dir is not None:
            shutil.rmtree(self._tmp_log_dir, ignore_errors=True)
