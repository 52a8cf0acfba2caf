"""Workers for the local RunPod stand-in: the real SDK worker as a subprocess, or an in-process fake.

`WorkerProcess` runs `python gpu_handler/handler.py` (the unmodified handler under the real
`runpod.serverless.start` loop) in its own session/process group, so stopping it also stops the SDK's
heartbeat child. On Linux the child also gets PR_SET_PDEATHSIG (SIGTERM) so a worker never outlives
the stand-in even when the parent process is SIGKILLed; the fork happens on a dedicated long-lived
spawner thread because the death signal follows the *thread* that forked.

`InProcessWorker` polls the same worker-facing routes over HTTP from threads of this process and runs
a Python callable the way the SDK's `run_job` does. It starts instantly (no `import runpod`, ~2 s) and
is meant for tests of code that talks to the hosted-API face. Every in-process worker of a stand-in
calls the same handler: a sync handler from each worker's threads at once (it must be thread-safe), an
async one on one shared event loop (`AsyncRunner`).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import requests

log = logging.getLogger("stillhouse_local.runpod_standin")

_PR_SET_PDEATHSIG = 1


def _make_preexec() -> Callable[[], None] | None:
    """A preexec_fn that asks Linux to SIGTERM the child when the spawning thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl  # resolved here, in the parent: the child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def _preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    return _preexec


class Spawner:
    """Runs every Popen on one long-lived thread (see module docstring: PR_SET_PDEATHSIG)."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="standin-spawner")
        self._preexec = _make_preexec()

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        def _do() -> subprocess.Popen:
            return subprocess.Popen(list(args), preexec_fn=self._preexec, **kwargs)  # noqa: PLW1509

        return self._pool.submit(_do).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class WorkerProcess:
    """One real SDK worker process serving one stand-in endpoint."""

    def __init__(
        self,
        *,
        endpoint_id: str,
        pod_id: str,
        command: Sequence[str],
        env: Mapping[str, str],
        cwd: str | Path | None,
        log_path: Path | None,
        spawner: Spawner,
    ) -> None:
        self.endpoint_id = endpoint_id
        self.pod_id = pod_id
        self.command = list(command)
        self.env = dict(env)
        self.cwd = str(cwd) if cwd else None
        self.log_path = log_path
        self._spawner = spawner
        self._log_file: BinaryIO | None = None
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab", buffering=0)  # noqa: SIM115
            self._log_file.write(f"--- stand-in: starting worker {self.pod_id}: {' '.join(self.command)}\n".encode())
            out: Any = self._log_file
        else:
            out = subprocess.DEVNULL
        self.proc = self._spawner.popen(
            self.command,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
        log.debug("worker %s started: pid %s", self.pod_id, self.proc.pid)

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        """Ask the worker (and its process group) to shut down; returns at once."""
        self._signal_group(signal.SIGTERM)

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL whatever is left. Idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("worker %s did not exit in %.1fs; killing it", self.pod_id, timeout_s)
        # Whatever is left in the group (the SDK's heartbeat child, a hung handler) goes now.
        self._signal_group(signal.SIGKILL)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
            log.error("worker %s (pid %s) survived SIGKILL", self.pod_id, self.proc.pid)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)  # start_new_session: pgid == pid
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self, max_chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()[-max_chars:]
        return data.decode("utf-8", "replace")


# ------------------------------------------------------------------------------------------------ #
#                                       In-process fake worker                                      #
# ------------------------------------------------------------------------------------------------ #
class AsyncRunner:
    """One event loop on its own thread, shared by every in-process worker of a stand-in.

    An async handler's state may be bound to the loop it first ran on (gpu_handler's micro-batcher is),
    so all in-process workers run their coroutines here, as the SDK runs a worker's jobs on one loop:
    coroutines overlap at their awaits, and a model the handler loaded is loaded once and shared."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="standin-inproc-loop", daemon=True)
        self._thread.start()

    def run(self, awaitable: Any) -> Any:
        """Run `awaitable` on the shared loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(_await(awaitable), self._loop).result()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()


def run_handler_like_sdk(handler: Callable[[dict], Any], job: dict, *, pod_id: str,
                         run_async: Callable[[Any], Any] | None = None) -> dict:
    """What runpod's `rp_job.run_job` sends to job-done for a (non-generator) handler. `run_async` runs an
    async handler's coroutine (default: a fresh `asyncio.run`)."""
    result: dict[str, Any] = {}
    try:
        out = handler(job)
        if inspect.isawaitable(out):
            out = (run_async or (lambda aw: asyncio.run(_await(aw))))(out)
        if isinstance(out, dict):
            out = dict(out)
            error = out.pop("error", None)
            refresh = out.pop("refresh_worker", None)
            result["output"] = out
            if error:
                result["error"] = error
            if refresh:
                result["stopPod"] = True
        else:
            result = {"output": out}
        if result.get("output") == {}:
            result.pop("output")
    except Exception as err:  # noqa: BLE001 - mirrors the SDK, which reports any handler exception
        result = {
            "error": json.dumps(
                {
                    "error_type": str(type(err)),
                    "error_message": str(err),
                    "error_traceback": traceback.format_exc(),
                    "hostname": f"{pod_id}.local",
                    "worker_id": pod_id,
                    "runpod_version": "in-process",
                }
            )
        }
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


class InProcessWorker:
    """Threads that poll the stand-in's worker routes and run `handler` in this process."""

    def __init__(
        self,
        *,
        endpoint_id: str,
        pod_id: str,
        handler: Callable[[dict], Any],
        take_url: str,
        done_url: str,
        stream_url: str,
        headers: Mapping[str, str],
        concurrency: int = 1,
        poll_timeout_s: float = 60.0,
        run_async: Callable[[Any], Any] | None = None,
    ) -> None:
        self.endpoint_id = endpoint_id
        self.pod_id = pod_id
        self._handler = handler
        self._take_url = take_url
        self._done_url = done_url
        self._stream_url = stream_url
        self._headers = dict(headers)
        self._concurrency = max(1, concurrency)
        self._poll_timeout_s = poll_timeout_s
        self._run_async = run_async
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self._concurrency):
            t = threading.Thread(target=self._loop, name=f"standin-inproc-{self.pod_id}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    @property
    def returncode(self) -> int | None:
        return None if self.alive() or not self._threads else 0

    def terminate(self) -> None:
        self._stop.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=timeout_s)

    def log_tail(self, max_chars: int = 4000) -> str:  # noqa: ARG002 - same surface as WorkerProcess
        return ""

    def _loop(self) -> None:
        session = requests.Session()
        session.headers.update(self._headers)
        while not self._stop.is_set():
            try:
                resp = session.get(self._take_url + "&job_in_progress=0", timeout=self._poll_timeout_s)
            except requests.RequestException:
                self._stop.wait(0.2)
                continue
            if resp.status_code != 200 or not resp.content:
                if resp.status_code not in (200, 204):
                    self._stop.wait(0.2)
                continue
            job = resp.json()
            if inspect.isgeneratorfunction(self._handler):
                result = self._run_generator(session, job)
            else:
                result = run_handler_like_sdk(self._handler, job, pod_id=self.pod_id, run_async=self._run_async)
            url = self._done_url.replace("$ID", job["id"]) + "&isStream=false"
            try:
                session.post(url, data=json.dumps(result), timeout=30,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
            except requests.RequestException as err:
                log.warning("in-process worker %s: job-done failed: %s", self.pod_id, err)
        session.close()

    def _run_generator(self, session: requests.Session, job: dict) -> dict:
        try:
            for part in self._handler(job):
                url = self._stream_url.replace("$ID", job["id"]) + "&isStream=false"
                session.post(url, data=json.dumps({"output": part}), timeout=30)
        except Exception as err:  # noqa: BLE001 - mirrors the SDK
            return {"error": f"handler: {err} \ntraceback: {traceback.format_exc()}"}
        return {"output": []}
