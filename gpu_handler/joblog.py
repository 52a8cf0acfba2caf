"""The worker's log: JSON lines, each of a job's lines with the router's `job_id` and `trace_id`.

The router adds `_stillhouse: {job_id, traceparent}` to every RunPod job's input (it shares no code with
the worker, so the key is spelled in both places: stillhouse.runpod.client.TRACE_INPUT_KEY). It is taken
out before the task sees its input: the task schemas refuse unknown fields.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

TRACE_INPUT_KEY = "_stillhouse"

_job_keys: ContextVar[dict[str, str]] = ContextVar("gpu_handler_job_keys", default={})  # noqa: B039 - never mutated


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_job_keys.get(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)


def split_input(job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the task's input, the keys its log lines carry: RunPod's job id, our job id and trace)."""
    job_input = dict(job.get("input") or {})
    ours = job_input.pop(TRACE_INPUT_KEY, None)
    keys = {"runpod_id": str(job.get("id", ""))}
    if isinstance(ours, dict):
        if isinstance(ours.get("job_id"), str):
            keys["job_id"] = ours["job_id"]
        parts = str(ours.get("traceparent") or "").split("-")
        if len(parts) == 4 and len(parts[1]) == 32:
            keys["trace_id"], keys["traceparent"] = parts[1], str(ours["traceparent"])
    return job_input, keys


@contextmanager
def job_logging(keys: dict[str, str]) -> Iterator[None]:
    """Log lines inside (this asyncio task or thread only) carry `keys`."""
    token = _job_keys.set(keys)
    try:
        yield
    finally:
        try:
            _job_keys.reset(token)
        except ValueError:  # a streaming generator closed from another context: that context ends anyway
            pass
