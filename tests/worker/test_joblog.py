"""The worker's log: JSON lines, each line of a job with the router's job id and trace id, which it finds
in the RunPod job's input and takes out before the task's strict schema sees it."""
from __future__ import annotations

import asyncio
import io
import json
import logging

from gpu_handler import handler, joblog


def test_the_routers_keys_are_taken_out_of_the_input_and_put_on_the_log_lines():
    job = {"id": "rp-1", "input": {"task": "sleep", "seconds": 0,
                                   "_stillhouse": {"job_id": "j1", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}}}
    stream = io.StringIO()
    log_handler = logging.StreamHandler(stream)
    log_handler.setFormatter(joblog.JsonFormatter())
    root = logging.getLogger()
    root.addHandler(log_handler)
    level, root.level = root.level, logging.INFO
    try:
        result = asyncio.run(handler.handler(job))
        logging.getLogger("gpu_handler").info("after the job")
    finally:
        root.removeHandler(log_handler)
        root.level = level
    assert result == {"slept": 0.0}  # SleepInput forbids unknown fields: the key was taken out
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    during = [line for line in lines if line.get("job_id") == "j1"]
    assert [line["message"] for line in during] == ["job started: sleep", "job finished"]
    assert {(line["trace_id"], line["runpod_id"]) for line in during} == {("a" * 32, "rp-1")}
    assert "job_id" not in lines[-1]  # outside the job: no job keys


def test_a_job_without_the_routers_keys_runs_and_logs_without_them():
    job_input, keys = joblog.split_input({"id": "rp-2", "input": {"task": "echo", "text": "hi"}})
    assert job_input == {"task": "echo", "text": "hi"} and keys == {"runpod_id": "rp-2"}
