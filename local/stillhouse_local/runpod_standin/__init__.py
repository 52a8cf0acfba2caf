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

Modules: standin (the RunPodStandIn facade), state (records, shared tables), engine (job state
machine), worker_face (what workers' polls do), webhooks, workers (worker processes, scaled as RunPod's scaler) and
worker_process (the process and in-process worker), server / http_base / api_routes / worker_routes
(HTTP), faults, timers; ``python -m stillhouse_local.runpod_standin`` runs __main__.
"""
from __future__ import annotations

from stillhouse_local.runpod_standin.faults import CRASH_MODES, DEFAULT_FAULTS, FAULT_KNOBS, FaultError, validate_faults
from stillhouse_local.runpod_standin.standin import RunPodStandIn
from stillhouse_local.runpod_standin.state import (
    CANCELLED,
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    IN_QUEUE,
    TERMINAL,
    TIMED_OUT,
    Scaling,
)
from stillhouse_local.runpod_standin.worker_process import InProcessWorker, WorkerProcess, run_handler_like_sdk
from stillhouse_local.runpod_standin.workers import default_handler_path

__all__ = [
    "CANCELLED",
    "COMPLETED",
    "CRASH_MODES",
    "DEFAULT_FAULTS",
    "FAILED",
    "FAULT_KNOBS",
    "IN_PROGRESS",
    "IN_QUEUE",
    "TERMINAL",
    "TIMED_OUT",
    "FaultError",
    "InProcessWorker",
    "RunPodStandIn",
    "Scaling",
    "WorkerProcess",
    "default_handler_path",
    "run_handler_like_sdk",
    "validate_faults",
]
