"""Operators' view of a job through the embedded stack: Prometheus metrics at GET /metrics."""
from __future__ import annotations

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
