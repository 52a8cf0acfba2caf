"""Operators' view of a job through the embedded stack: Prometheus metrics at GET /metrics, and one W3C
trace from the caller's submit to the caller's webhook."""
from __future__ import annotations

import json
import logging
import secrets
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.stack import settled


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """GET /metrics as {(sample name, labels): value}."""
    response = requests.get(url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def test_metrics_move_after_one_job_through_the_stack(stack, api, receiver):
    before = scrape(stack.url)
    job_id = api.submit("echo", {"text": "count me"}, webhook=receiver.url)
    assert api.wait(job_id)["status"] == "COMPLETED"
    receiver.wait_for(1)

    echo = frozenset({("task", "echo"), ("priority", "normal")})
    on_local = echo | {("endpoint", "local")}
    wanted = {
        ("stillhouse_jobs_submitted_total", echo): 1,
        ("stillhouse_jobs_completed_total", on_local): 1,
        ("stillhouse_jobs_finished_total", on_local): 1,
        ("stillhouse_end_to_end_latency_seconds_count", on_local): 1,
        ("stillhouse_queue_delay_seconds_count", frozenset({("endpoint", "local")})): 1,
        ("stillhouse_execution_time_seconds_count", frozenset({("endpoint", "local")})): 1,
        ("stillhouse_estimated_cost_usd_count", frozenset({("endpoint", "local")})): 1,
        ("stillhouse_webhook_deliveries_total", frozenset()): 1,
    }

    def moved(now):
        return {key: now.get(key, 0) - before.get(key, 0) for key in wanted}

    # The delivery function flushes as it returns, just after the receiver has the POST.
    after = settled(lambda: scrape(stack.url), lambda now: all(v >= wanted[k] for k, v in moved(now).items()), 10)
    assert all(v >= wanted[k] for k, v in moved(after).items()), moved(after)
    assert after[("stillhouse_end_to_end_latency_seconds_sum", on_local)] > before.get(
        ("stillhouse_end_to_end_latency_seconds_sum", on_local), 0)
    # No tenant and no job id among the labels of any metric.
    labels = {value for (_, pairs) in after for _, value in pairs}
    assert job_id not in labels and "dev" not in labels


# --- traces: one traceparent, every hop ------------------------------------------------------------


class FunctionLogs(logging.Handler):
    """The functions' JSON log lines (Powertools' own formatter), as the functions print them."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict] = []
        powertools = logging.getLogger("stillhouse")
        self.setFormatter(next(h.formatter for h in powertools.handlers if h.formatter is not None))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def function_logs():
    logs = FunctionLogs()
    logging.getLogger("stillhouse").addHandler(logs)
    yield logs
    logging.getLogger("stillhouse").removeHandler(logs)


def trace_of(traceparent: str) -> str:
    version, trace_id, span_id, _flags = traceparent.split("-")
    assert (version, len(trace_id), len(span_id)) == ("00", 32, 16)
    return trace_id


def test_one_traceparent_is_seen_at_every_hop_of_one_job(stack, api, receiver, function_logs):
    trace_id = secrets.token_hex(16)
    response = api.post("/v1/jobs", {"task": "echo", "input": {"text": "trace me"}, "webhook": receiver.url},
                        headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    assert response.status_code == 202, response.text
    assert trace_of(response.headers["traceparent"]) == trace_id
    job_id = response.json()["id"]
    job = api.wait(job_id)
    assert job["status"] == "COMPLETED" and job["trace_id"] == trace_id
    assert job["output"]["echo"] == {"text": "trace me", "task": "echo"}  # the worker took its trace out

    # The caller's webhook: a traceparent header in the job's trace.
    (call,) = receiver.wait_for(1)
    assert trace_of(call["headers"]["traceparent"]) == trace_id

    # RunPod's callback to us: its URL carries the trace.
    # The stand-in logs a delivery once our answer to it is back, which may be after the job shows COMPLETED.
    callbacks = settled(lambda: [d for d in stack.standin.webhook_deliveries
                                 if f"/callbacks/runpod/{job_id}?" in (d["url"] or "")], bool, 10)
    assert callbacks
    query = parse_qs(urlsplit(callbacks[0]["url"]).query)
    assert trace_of(query["traceparent"][0]) == trace_id

    # The worker got it in the RunPod job's input, and logs JSON lines with our job id and trace id.
    log_file = stack.options.log_dir / "runpod-worker-local.log"
    worker_lines = settled(lambda: _json_lines(log_file, job_id), lambda lines: len(lines) >= 2, 10)
    assert [line["message"] for line in worker_lines][:2] == ["job started: echo", "job finished"]
    assert {line["trace_id"] for line in worker_lines} == {trace_id}

    # Every log line of the job, in every function, names the job and its trace; dispatch read the trace
    # from the SQS message's attributes.
    ours = [line for line in function_logs.lines if line.get("job_id") == job_id]
    assert any(line["message"] == "dispatching" for line in ours)
    assert {line.get("trace_id") for line in ours} == {trace_id}

    # The timeline of the job's stages.
    timeline = api.get(f"/v1/jobs/{job_id}/trace").json()
    assert timeline["trace_id"] == trace_id
    names = [stage["name"] for stage in timeline["stages"]]
    assert names[:3] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert timeline["stages"][1]["endpoint"] == "local" and timeline["stages"][1]["actor"] == "dispatch"
    assert settled(lambda: [s["name"] for s in api.get(f"/v1/jobs/{job_id}/trace").json()["stages"]],
                   lambda now: "webhook try 1" in now, 10)[-1] == "webhook try 1"
    assert timeline["total_ms"] >= timeline["stages"][1]["offset_ms"] >= 0


def test_a_job_submitted_without_a_traceparent_starts_its_own_trace(api):
    response = api.post("/v1/jobs", {"task": "echo", "input": {"text": "new trace"}})
    trace_id = trace_of(response.headers["traceparent"])
    job_id = response.json()["id"]
    assert api.get(f"/v1/jobs/{job_id}").json()["trace_id"] == trace_id
    assert api.get(f"/v1/jobs/{job_id}/trace").status_code == 200


def test_another_tenants_job_has_no_trace_to_show(api, other_tenant):
    job_id = api.submit("echo", {"text": "mine"})
    response = other_tenant.get(f"/v1/jobs/{job_id}/trace")
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "id"


def _json_lines(path, job_id: str) -> list[dict]:
    found = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        if line.startswith("{") and job_id in line:
            found.append(json.loads(line))
    return found
