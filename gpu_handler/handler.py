"""RunPod serverless entry point. Runs unchanged on RunPod and under the local stand-in.

    python gpu_handler/handler.py                                  # worker loop (RunPod / stand-in)
    python gpu_handler/handler.py --test_input '{"input": {...}}'  # run one job locally and exit
    python gpu_handler/handler.py --rp_serve_api                   # local HTTP API on :8000

The handler is `async`, so with `concurrency_modifier` one worker takes several jobs at once and the
engine batches their generations. Inference lives in gpu_handler.engine; dispatch in gpu_handler.tasks.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `gpu_handler` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import runpod

from gpu_handler import joblog, tasks
from gpu_handler.errors import JobError
from gpu_handler.settings import WorkerSettings

log = logging.getLogger("gpu_handler")


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    job_input, keys = joblog.split_input(job)
    with joblog.job_logging(keys):
        log.info("job started: %s", job_input.get("task", "echo"))
        result = await tasks.run_job(job_input)
        log.info("job finished%s", " with an error" if "error" in result else "")
        return result


async def stream_handler(job: dict[str, Any]) -> AsyncIterator[Any]:
    # RunPod streams when the handler *function* is a generator, for every job: so this one is used
    # only on workers started with WORKER_STREAMING=true (see docs/gpu_handler.md).
    job_input, keys = joblog.split_input(job)
    with joblog.job_logging(keys):
        log.info("job started: %s (streaming)", job_input.get("task", "echo"))
        async for chunk in tasks.stream_job(job_input):
            yield chunk
        log.info("job finished")


def main() -> None:
    joblog.configure()
    try:
        settings = WorkerSettings.from_env()
        tasks.preflight(settings)
    except (JobError, ValueError) as exc:  # ModelLoadError, or invalid settings (pydantic ValueError)
        logging.getLogger("gpu_handler").error("worker start-up failed, exiting: %s", exc)
        sys.exit(1)
    runpod.serverless.start(
        {
            "handler": stream_handler if settings.streaming else handler,
            "concurrency_modifier": lambda _current: settings.concurrency,
            "return_aggregate_stream": True,
        }
    )


if __name__ == "__main__":
    main()
