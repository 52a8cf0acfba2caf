"""Workers of the stand-in: their RUNPOD_* environment, starting them, waiting until they poll, scaling
each endpoint between its floor and workersMax as RunPod's scaler does, restarting those that exit, and
stopping them all."""
from __future__ import annotations

import logging
import math
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
from stillhouse_local.runpod_standin.state import IN_PROGRESS, IN_QUEUE, QUEUE_DELAY, Endpoint, Scaling
from stillhouse_local.runpod_standin.worker_process import AsyncRunner, InProcessWorker, Spawner, WorkerProcess

log = logging.getLogger("stillhouse_local.runpod_standin")

SCALER_TICK_S = 0.1  # how often each endpoint's workers are checked: exits, queue delay, idle timeouts


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
    """Each endpoint's workers, one to `workersMax`, scaled as RunPod's scaler does: the real SDK worker as
    a subprocess each, or in-process fakes that share one handler (and whatever model it loaded)."""

    def __init__(self, engine: JobEngine) -> None:
        self._engine = engine
        self._settings = engine.settings
        self._lock = engine.tables.lock
        self._endpoints = engine.tables.endpoints
        self._stopping = engine.tables.stopping
        self._spawner: Spawner | None = None
        self._supervisor: threading.Thread | None = None
        self._tmp_log_dir: str | None = None
        self._jobs = engine.tables.jobs
        self._async_runner: AsyncRunner | None = None  # one event loop for every in-process worker
        self._stoppers: list[threading.Thread] = []  # scaled-down workers being stopped

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

    def spawn(self, ep: Endpoint) -> WorkerProcess | InProcessWorker:
        """Start one more worker for `ep` (it serves once it polls job-take)."""
        s = self._settings
        with self._lock:
            ep.worker_generation += 1
            pod_id = f"standin-{ep.id}-{ep.worker_generation}-{uuid.uuid4().hex[:6]}"
        if s.worker_handler is not None:
            env = self.worker_env_for(ep.id, pod_id)
            if self._async_runner is None:
                self._async_runner = AsyncRunner()
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
                run_async=self._async_runner.run,
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
            ep.workers[pod_id] = worker
            ep.last_busy[pod_id] = time.monotonic()  # idle from its start, for the idle timeout
            ep.peak_workers = max(ep.peak_workers, len(ep.serving()))
        worker.start()
        return worker

    def replace(self, ep: Endpoint) -> None:
        """Stop an endpoint's workers and start new ones (with the endpoint's current environment)."""
        with self._lock:
            # The supervisor skips an endpoint with no workers meanwhile.
            old, ep.workers = list(ep.workers.values()), {}
            ep.restart_at.clear()
        for w in old:
            w.terminate()
        for w in old:
            w.stop()
            with self._lock:
                self._engine.fail_jobs_of_worker(ep, w.pod_id, f"worker {w.pod_id} replaced by a new release")
                self._forget(ep, w.pod_id)
        for _ in range(ep.scaling.floor):
            self.spawn(ep)

    def rescale(self, ep: Endpoint, scaling: Scaling) -> None:
        """New scaler settings for an endpoint; the supervisor moves its workers to them."""
        with self._lock:
            ep.scaling = scaling

    @staticmethod
    def _forget(ep: Endpoint, pod: str) -> None:
        """Drop what the stand-in kept of a worker that is gone (lock held)."""
        ep.seen.pop(pod, None)
        ep.running.pop(pod, None)
        ep.last_busy.pop(pod, None)
        ep.draining.discard(pod)
        ep.restart_at.pop(pod, None)

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
                    workers = list(ep.workers.values())
                    waiting = [w for w in workers if w.pod_id not in ep.seen]
                for worker in waiting:
                    if worker.returncode is not None:
                        raise RuntimeError(
                            f"RunPod stand-in: worker for endpoint {ep.id!r} exited with code {worker.returncode} "
                            f"before polling for jobs. Last output:\n{worker.log_tail()}"
                        )
                if waiting or not workers:
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
        """Every SCALER_TICK_S: replace workers that exited on their own, and scale each endpoint."""
        while not self._stopping.wait(SCALER_TICK_S):
            with self._lock:
                eps = list(self._endpoints.values())
            for ep in eps:
                try:
                    self._restart_exited(ep)
                    self._scale(ep)
                except Exception:  # one endpoint's trouble must not stop the others'
                    log.exception("RunPod stand-in: supervising endpoint %s failed", ep.id)

    def _restart_exited(self, ep: Endpoint) -> None:
        """A worker that exited on its own (a crash, or the SDK's refresh_worker): its jobs fail, and it is
        replaced at once the first time, then after 1 s, 2 s, ... up to 30 s."""
        now = time.monotonic()
        due = []
        with self._lock:
            for pod, worker in list(ep.workers.items()):
                if worker.returncode is None:
                    continue
                if pod not in ep.restart_at:
                    code = worker.returncode
                    log.warning("RunPod stand-in: worker %s exited (code %s)", pod, code)
                    self._engine.fail_jobs_of_worker(ep, pod, f"worker {pod} exited with code {code}")
                    ep.seen.pop(pod, None)
                    ep.running.pop(pod, None)
                    ep.worker_restarts += 1
                    ep.restart_at[pod] = now + min(30.0, 1.0 * (ep.worker_restarts - 1))
                if self._settings.restart_workers and now >= ep.restart_at[pod]:
                    due.append(ep.workers.pop(pod))
                    self._forget(ep, pod)
        for worker in due:
            if self._stopping.is_set():
                return
            worker.stop()
            try:
                self.spawn(ep)
            except Exception:  # noqa: BLE001
                log.exception("RunPod stand-in: could not restart worker for %s", ep.id)

    def _scale(self, ep: Endpoint) -> None:
        """RunPod's scaler: up to workers_max while jobs wait (QUEUE_DELAY) or per jobs queued and running
        (REQUEST_COUNT); a worker idle for idle_timeout_s goes, down to the floor (workers_min, at least 1)."""
        now = time.monotonic()
        with self._lock:
            sc = ep.scaling
            for pod, ids in list(ep.running.items()):  # prune jobs that ended, moved or were requeued
                ids.difference_update([j for j in ids if (job := self._jobs.get(j)) is None
                                       or job.status != IN_PROGRESS or job.worker_id != pod])
                if ids:
                    ep.last_busy[pod] = now
            serving = ep.serving()
            have = len(serving) + len(ep.restart_at)  # an exited worker is about to be replaced
            want = sc.floor  # what the queue asks for, at least the floor
            if not ep.faults["down"]:  # jobs of a down endpoint wait for it, not for a worker
                if sc.scaler_type == QUEUE_DELAY:
                    starting = sum(1 for w in serving if w.pod_id not in ep.seen)
                    if self._waiting_longer_than(ep, sc.scaler_value, now, limit=starting + 1) > starting:
                        want = max(want, have + 1)  # one at a time: it takes jobs once it polls
                else:
                    busy = sum(len(ids) for ids in ep.running.values())
                    want = max(want, math.ceil((self._queued(ep) + busy) / sc.scaler_value))
            want = min(want, sc.workers_max)
            idle = [w for w in reversed(serving)  # newest first
                    if w.pod_id in ep.seen and not ep.running.get(w.pod_id)
                    and now - ep.last_busy.get(w.pod_id, now) >= sc.idle_timeout_s]
            going = idle[:max(0, have - want)]
            for w in going:  # handed nothing from now on; gone from health at once
                ep.draining.add(w.pod_id)
                del ep.workers[w.pod_id]
                ep.seen.pop(w.pod_id, None)
            if going:
                ep.cond.notify_all()  # a held job-take of a draining worker answers at once
            to_start = want - have if not self._stopping.is_set() else 0
        for w in going:
            log.info("RunPod stand-in: %s idle for %.1fs, scaling %s down", w.pod_id, sc.idle_timeout_s, ep.id)
            self._stop_later(ep, w)
        for _ in range(max(0, to_start)):
            log.info("RunPod stand-in: scaling %s up (%s)", ep.id, sc.scaler_type)
            self.spawn(ep)

    def _waiting_longer_than(self, ep: Endpoint, seconds: float, now: float, *, limit: int) -> int:
        """How many queued jobs have waited longer than `seconds` (counted up to `limit`; lock held)."""
        n = 0
        for jid in ep.queue:
            job = self._jobs.get(jid)
            if job is None or job.status != IN_QUEUE:
                continue
            if now - job.queued_at <= seconds:
                continue  # a requeued job at the front may be younger than those behind it
            n += 1
            if n >= limit:
                break
        return n

    def _queued(self, ep: Endpoint) -> int:
        return sum(1 for jid in ep.queue if (j := self._jobs.get(jid)) is not None and j.status == IN_QUEUE)

    def _stop_later(self, ep: Endpoint, worker: WorkerProcess | InProcessWorker) -> None:
        """Stop a scaled-down worker off the supervisor's thread (a process takes about 1 s to go)."""
        def stop() -> None:
            worker.terminate()
            worker.stop()
            with self._lock:
                self._forget(ep, worker.pod_id)

        t = threading.Thread(target=stop, name=f"standin-scale-down-{worker.pod_id}", daemon=True)
        with self._lock:
            self._stoppers = [s for s in self._stoppers if s.is_alive()] + [t]
        t.start()

    def join_supervisor(self) -> None:
        """Wait for the supervisor to see the stop flag, so no restart races with stop_all()."""
        if self._supervisor is not None:
            self._supervisor.join(timeout=15)

    def stop_all(self, eps: list[Endpoint]) -> None:
        with self._lock:
            workers = [w for ep in eps for w in ep.workers.values()]
            stoppers = list(self._stoppers)
        for w in workers:
            w.terminate()
        for w in workers:
            w.stop()
        for t in stoppers:
            t.join(timeout=10)

    def close(self) -> None:
        """After the server is down: the spawner thread and the throwaway log folder go."""
        if self._spawner is not None:
            self._spawner.close()
        if self._async_runner is not None:
            self._async_runner.close()
        if self._tmp_log_dir is not None:
            shutil.rmtree(self._tmp_log_dir, ignore_errors=True)
