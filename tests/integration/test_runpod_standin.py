"""The local RunPod stand-in behaves like RunPod: hosted API, real SDK worker loop, webhooks, fault knobs.

Most tests run the REAL gpu_handler/handler.py under the REAL runpod SDK worker loop (one process for the
module). Tests that need a queue nobody drains use a stand-in without workers. Only the echo and sleep
tasks of the handler are used.
"""
from __future__ import annotations

import json
import os
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from stillhouse_local.runpod_standin import RunPodStandIn

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


# ------------------------------------------------------------------------------------------------ #
#                                             helpers                                                #
# ------------------------------------------------------------------------------------------------ #
def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class WebhookReceiver:
    """A tiny HTTP server recording webhook POSTs; each path answers a scripted list of status codes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.scripts: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with receiver.lock:
                    receiver.calls.append((self.path, body))
                    script = receiver.scripts.get(self.path) or []
                    code = script.pop(0) if script else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, responses: list[int] | None = None) -> str:
        """A fresh webhook URL (so tests never see each other's deliveries)."""
        path = f"/hook/{uuid.uuid4().hex}"
        if responses:
            self.scripts[path] = list(responses)
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def received(self, url: str) -> list[dict]:
        path = url.split(str(self.server.server_address[1]), 1)[1]
        with self.lock:
            return [body for p, body in self.calls if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Client:
    def __init__(self, rp: RunPodStandIn, endpoint: str) -> None:
        self.base = f"{rp.api_base()}/{endpoint}"
        self.s = requests.Session()
        self.s.headers.update(AUTH)

    def run(self, inp: dict, **extra: Any) -> dict:
        r = self.s.post(f"{self.base}/run", json={"input": inp, **extra}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def runsync(self, inp: dict, wait_ms: int | None = None, **extra: Any) -> dict:
        params = {"wait": wait_ms} if wait_ms else None
        r = self.s.post(f"{self.base}/runsync", json={"input": inp, **extra}, params=params, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def status(self, job_id: str, method: str = "GET") -> requests.Response:
        return self.s.request(method, f"{self.base}/status/{job_id}", timeout=10)

    def job(self, job_id: str) -> dict:
        r = self.status(job_id)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_status(self, job_id: str, statuses: set[str], timeout: float = 10.0) -> dict:
        return wait_for(lambda: (b := self.job(job_id))["status"] in statuses and b, timeout)

    def post(self, path: str) -> requests.Response:
        return self.s.post(f"{self.base}/{path}", timeout=10)

    def health(self) -> dict:
        r = self.s.get(f"{self.base}/health", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def drain(self) -> None:
        """Returns once the (single, concurrency-1) worker has finished whatever it was running."""
        assert self.runsync({"task": "echo", "text": "drain"})["status"] == "COMPLETED"


# ------------------------------------------------------------------------------------------------ #
#                                             fixtures                                               #
# ------------------------------------------------------------------------------------------------ #
@pytest.fixture(scope="module")
def hooks() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def rp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunPodStandIn]:
    """A stand-in running the real gpu_handler under the real SDK worker loop."""
    standin = RunPodStandIn(
        api_key=API_KEY, endpoints=["local"], webhook_retry_delay_s=0.2, seed=7,
        log_dir=tmp_path_factory.mktemp("worker-logs"),
    )
    standin.start()
    yield standin
    standin.stop()


@pytest.fixture(scope="module")
def idle_rp() -> Iterator[RunPodStandIn]:
    """A stand-in with no workers: jobs stay queued until a test acts on them."""
    standin = RunPodStandIn(api_key=API_KEY, endpoints=["q"], start_workers=False, webhook_retry_delay_s=0.2)
    standin.start()
    yield standin
    standin.stop()


@pytest.fixture
def local(rp: RunPodStandIn) -> Iterator[Client]:
    yield Client(rp, "local")
    rp.reset_faults("local")


@pytest.fixture
def q(idle_rp: RunPodStandIn) -> Iterator[Client]:
    client = Client(idle_rp, "q")
    yield client
    idle_rp.reset_faults("q")
    client.post("purge-queue")


# ------------------------------------------------------------------------------------------------ #
#                                  hosted API + real SDK worker                                      #
# ------------------------------------------------------------------------------------------------ #
def test_run_echo_completes_and_webhook_receives_the_completed_status_body(local: Client, hooks: WebhookReceiver) -> None:
    url = hooks.url()
    inp = {"task": "echo", "text": "hello"}
    submitted = local.run(inp, webhook=url)
    assert submitted["status"] == "IN_QUEUE" and submitted["id"]

    body = wait_for(lambda: hooks.received(url))[0]

    assert body["id"] == submitted["id"]
    assert body["status"] == "COMPLETED"
    assert body["output"]["echo"] == inp and body["output"]["text"] == "hello"
    assert {"delayTime", "executionTime", "workerId"} <= body.keys()
    assert local.job(submitted["id"]) == body  # the webhook carries exactly the /status body


def test_runsync_returns_the_output_inline(local: Client) -> None:
    body = local.runsync({"task": "echo", "text": "sync"})

    assert body["status"] == "COMPLETED"
    assert body["output"]["text"] == "sync"
    assert body["workerId"].startswith("standin-local-")


def test_runsync_returns_the_in_progress_status_body_when_not_done_within_wait(local: Client) -> None:
    started = time.monotonic()
    body = local.runsync({"task": "sleep", "seconds": 2.5}, wait_ms=1000)

    # It waited as asked, and answered before the job was done (not at its end).
    assert 0.9 < time.monotonic() - started < 2.5
    assert body["status"] in ("IN_QUEUE", "IN_PROGRESS") and "output" not in body
    assert local.wait_status(body["id"], TERMINAL)["output"] == {"slept": 2.5}


def test_status_answers_both_get_and_post(local: Client) -> None:
    job_id = local.runsync({"task": "echo", "text": "x"})["id"]

    got, posted = local.status(job_id, "GET"), local.status(job_id, "POST")

    assert got.status_code == posted.status_code == 200
    assert got.json() == posted.json() and got.json()["status"] == "COMPLETED"


def test_cancelled_running_job_stays_cancelled_after_the_handler_finishes(local: Client, hooks: WebhookReceiver) -> None:
    url = hooks.url()
    job_id = local.run({"task": "sleep", "seconds": 0.6}, webhook=url)["id"]
    local.wait_status(job_id, {"IN_PROGRESS"})

    cancelled = local.post(f"cancel/{job_id}")

    assert cancelled.status_code == 200 and cancelled.json() == {"id": job_id, "status": "CANCELLED"}
    local.drain()  # whatever the handler did after the cancel (stopped via job-stop, or ran on) is over
    final = local.job(job_id)
    assert final["status"] == "CANCELLED" and "output" not in final
    assert [b["status"] for b in wait_for(lambda: hooks.received(url))] == ["CANCELLED"]


def test_cancelling_a_queued_job_removes_it_from_the_queue(q: Client) -> None:
    job_id = q.run({"task": "echo"})["id"]

    assert q.post(f"cancel/{job_id}").json()["status"] == "CANCELLED"
    assert q.health()["jobs"]["inQueue"] == 0


def test_execution_timeout_times_the_job_out_and_ignores_the_late_result(local: Client, hooks: WebhookReceiver) -> None:
    url = hooks.url()
    job_id = local.run({"task": "sleep", "seconds": 0.8}, webhook=url, policy={"executionTimeout": 300})["id"]

    body = local.wait_status(job_id, TERMINAL, timeout=5)

    assert body["status"] == "TIMED_OUT" and "executionTimeout" in body["error"]
    local.drain()
    assert local.job(job_id)["status"] == "TIMED_OUT" and "output" not in local.job(job_id)
    assert [b["status"] for b in wait_for(lambda: hooks.received(url))] == ["TIMED_OUT"]


def test_handler_error_result_fails_the_job_and_sends_the_webhook(local: Client, hooks: WebhookReceiver) -> None:
    url = hooks.url()
    job_id = local.run({"task": "sleep", "seconds": 999}, webhook=url)["id"]

    body = wait_for(lambda: hooks.received(url))[0]

    assert body["status"] == "FAILED" and "seconds" in body["error"]  # the handler's error, passed through
    assert local.job(job_id)["status"] == "FAILED"


def test_retry_requeues_a_failed_job_under_the_same_id_and_refuses_completed_ones(local: Client) -> None:
    failed = local.runsync({"task": "sleep", "seconds": -1})
    assert failed["status"] == "FAILED"

    retried = local.post(f"retry/{failed['id']}")

    assert retried.status_code == 200 and retried.json() == {"id": failed["id"], "status": "IN_QUEUE"}
    assert local.wait_status(failed["id"], TERMINAL)["status"] == "FAILED"
    assert local.health()["jobs"]["retried"] >= 1
    completed = local.runsync({"task": "echo"})
    refused = local.post(f"retry/{completed['id']}")
    assert refused.status_code == 400 and "FAILED or TIMED_OUT" in refused.json()["error"]


def test_webhook_answered_500_twice_then_200_is_delivered_exactly_three_times(local: Client, hooks: WebhookReceiver) -> None:
    url = hooks.url(responses=[500, 500, 200])
    local.run({"task": "echo"}, webhook=url)

    wait_for(lambda: len(hooks.received(url)) >= 3)
    time.sleep(0.6)  # three retry delays: a 4th try would have come by now

    assert [b["status"] for b in hooks.received(url)] == ["COMPLETED"] * 3


def test_webhook_gives_up_after_three_tries(local: Client, hooks: WebhookReceiver) -> None:
    url = hooks.url(responses=[503] * 10)
    local.run({"task": "echo"}, webhook=url)

    wait_for(lambda: len(hooks.received(url)) >= 3)
    time.sleep(0.6)  # a negative: three retry delays, so a 4th try would have come by now

    assert len(hooks.received(url)) == 3


def test_health_reports_job_counts_and_the_polling_worker(local: Client) -> None:
    local.runsync({"task": "echo"})

    health = local.health()

    assert health["jobs"]["completed"] >= 1
    assert set(health["jobs"]) == {"completed", "failed", "inProgress", "inQueue", "retried"}
    assert health["workers"]["idle"] + health["workers"]["running"] == 1


def test_the_real_worker_long_polls_job_take_and_job_stop_and_heartbeats(rp: RunPodStandIn) -> None:
    stats = wait_for(lambda: (s := rp.stats("local"))["route:ping"] and s, timeout=8)

    assert stats.get("route:job-take", 0) + stats.get("route:job-take-batch", 0) > 0
    assert stats["route:job-stop"] > 0 and stats["route:job-done"] > 0


# ------------------------------------------------------------------------------------------------ #
#                                 queue management (no workers)                                      #
# ------------------------------------------------------------------------------------------------ #
def test_purge_queue_removes_queued_jobs_which_then_are_gone(q: Client) -> None:
    ids = [q.run({"task": "echo", "n": i})["id"] for i in range(3)]

    purged = q.post("purge-queue")

    assert purged.status_code == 200 and purged.json() == {"removed": 3, "status": "completed"}
    assert all(q.status(i).status_code == 404 for i in ids)
    assert q.health()["jobs"]["inQueue"] == 0


def test_a_job_still_queued_past_its_ttl_times_out_and_sends_the_webhook(q: Client, hooks: WebhookReceiver) -> None:
    url = hooks.url()
    job_id = q.run({"task": "echo"}, webhook=url, policy={"ttl": 300})["id"]

    body = wait_for(lambda: hooks.received(url), timeout=3)[0]

    assert body["status"] == "TIMED_OUT" and "ttl" in body["error"]
    assert q.job(job_id)["status"] == "TIMED_OUT"


def test_health_without_workers_shows_none(q: Client) -> None:
    q.run({"task": "echo"})

    health = q.health()

    assert health["jobs"]["inQueue"] == 1
    assert health["workers"]["idle"] == health["workers"]["running"] == 0


def test_results_expire_after_the_result_ttl() -> None:
    with RunPodStandIn(api_key=API_KEY, endpoints=["e"], start_workers=False, result_ttl_s=0.3) as rp:
        c = Client(rp, "e")
        job_id = c.run({"task": "echo"})["id"]
        c.post(f"cancel/{job_id}")
        assert c.status(job_id).status_code == 200

        wait_for(lambda: c.status(job_id).status_code == 404, timeout=3)


def test_stream_returns_the_chunks_produced_since_the_last_call() -> None:
    gate = threading.Event()

    def generator_handler(job: dict) -> Iterator[str]:
        yield "a"
        yield "b"
        gate.wait(5)
        yield "c"

    with RunPodStandIn(api_key=API_KEY, endpoints=["s"], worker_handler=generator_handler) as rp:
        c = Client(rp, "s")
        job_id = c.run({"task": "generate"})["id"]
        first = wait_for(lambda: (b := c.s.get(f"{c.base}/stream/{job_id}").json())["stream"] and b)
        chunks = [x["output"] for x in first["stream"]]
        if chunks == ["a"]:
            chunks += [x["output"] for x in wait_for(lambda: c.s.post(f"{c.base}/stream/{job_id}").json()["stream"])]
        assert chunks == ["a", "b"] and first["status"] == "IN_PROGRESS"
        gate.set()
        c.wait_status(job_id, TERMINAL)

        last = c.s.get(f"{c.base}/stream/{job_id}").json()

        assert last == {"status": "COMPLETED", "stream": [{"output": "c"}]}


# ------------------------------------------------------------------------------------------------ #
#                                         request errors                                             #
# ------------------------------------------------------------------------------------------------ #
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}])
def test_hosted_api_without_the_bearer_key_is_401(q: Client, headers: dict) -> None:
    r = requests.post(f"{q.base}/run", json={"input": {}}, headers=headers, timeout=5)

    assert r.status_code == 401 and "error" in r.json()


def test_unknown_endpoint_and_unknown_job_are_404(idle_rp: RunPodStandIn) -> None:
    assert requests.post(f"{idle_rp.api_base()}/nope/run", json={"input": {}}, headers=AUTH).status_code == 404
    r = requests.get(f"{idle_rp.api_base()}/q/status/does-not-exist", headers=AUTH)
    assert r.status_code == 404 and "not found" in r.json()["error"]


@pytest.mark.parametrize("body", [{}, {"input": None}, {"inputs": {"x": 1}}])
def test_run_without_input_is_400_with_a_json_error(q: Client, body: dict) -> None:
    r = q.s.post(f"{q.base}/run", json=body)

    assert r.status_code == 400 and "input" in r.json()["error"]


def test_invalid_policy_is_400(q: Client) -> None:
    r = q.s.post(f"{q.base}/run", json={"input": {}, "policy": {"executionTimeout": -5}})

    assert r.status_code == 400 and r.json()["field"] == "policy.executionTimeout"


# ------------------------------------------------------------------------------------------------ #
#                                           fault knobs                                              #
# ------------------------------------------------------------------------------------------------ #
def faults_url(rp: RunPodStandIn, endpoint: str) -> str:
    return f"{rp.base_url}/_faults/{endpoint}"


def test_down_answers_503_to_run_and_runsync_and_health_shows_no_workers(rp: RunPodStandIn, local: Client) -> None:
    r = requests.put(faults_url(rp, "local"), json={"down": True}, headers=AUTH)
    assert r.status_code == 200 and r.json()["down"] is True

    assert local.s.post(f"{local.base}/run", json={"input": {}}).status_code == 503
    assert local.s.post(f"{local.base}/runsync", json={"input": {}}).status_code == 503
    workers = local.health()["workers"]
    assert workers["idle"] == workers["running"] == 0


def test_rate_limit_rate_1_answers_429_with_retry_after(rp: RunPodStandIn, local: Client) -> None:
    rp.set_faults("local", rate_limit_rate=1.0)

    r = local.s.post(f"{local.base}/run", json={"input": {}})

    assert r.status_code == 429 and float(r.headers["Retry-After"]) > 0


def test_error_rate_1_answers_500_and_creates_no_job(rp: RunPodStandIn, local: Client) -> None:
    before = local.health()["jobs"]
    rp.set_faults("local", error_rate=1.0)

    assert local.s.post(f"{local.base}/run", json={"input": {}}).status_code == 500
    rp.reset_faults("local")
    assert local.health()["jobs"]["inQueue"] == before["inQueue"]


def test_drop_webhook_rate_1_sends_no_webhook(rp: RunPodStandIn, local: Client, hooks: WebhookReceiver) -> None:
    rp.set_faults("local", drop_webhook_rate=1.0)
    url = hooks.url()

    job_id = local.run({"task": "echo"}, webhook=url)["id"]

    local.wait_status(job_id, TERMINAL)
    time.sleep(0.5)  # a negative: a webhook sent at the terminal status would have arrived by now
    assert hooks.received(url) == []
    assert any(d["job_id"] == job_id and d.get("dropped") for d in rp.webhook_deliveries)


def test_duplicate_webhook_rate_1_sends_the_webhook_twice(rp: RunPodStandIn, local: Client, hooks: WebhookReceiver) -> None:
    rp.set_faults("local", duplicate_webhook_rate=1.0)
    url = hooks.url()

    local.run({"task": "echo"}, webhook=url)

    bodies = wait_for(lambda: len(hooks.received(url)) >= 2 and hooks.received(url))
    time.sleep(0.3)  # a negative: a third copy would have arrived by now
    assert len(hooks.received(url)) == 2 and bodies[0] == bodies[1]


def test_latency_ms_delays_hosted_api_answers(rp: RunPodStandIn, local: Client) -> None:
    rp.set_faults("local", latency_ms=300)

    started = time.monotonic()
    local.health()

    assert time.monotonic() - started >= 0.3


def test_crash_rate_1_in_fail_mode_fails_the_job_as_a_worker_crash(rp: RunPodStandIn, local: Client) -> None:
    rp.set_faults("local", crash_rate=1.0, crash_mode="fail")

    job_id = local.run({"task": "echo"})["id"]

    body = local.wait_status(job_id, TERMINAL, timeout=5)
    assert body["status"] == "FAILED" and "crashed" in body["error"]


def test_crash_rate_1_in_hang_mode_leaves_the_job_in_progress_until_execution_timeout(rp: RunPodStandIn, local: Client) -> None:
    rp.set_faults("local", crash_rate=1.0)  # crash_mode defaults to "hang"

    job_id = local.run({"task": "echo"}, policy={"executionTimeout": 600})["id"]

    assert local.wait_status(job_id, {"IN_PROGRESS"})["workerId"]
    assert local.wait_status(job_id, TERMINAL, timeout=5)["status"] == "TIMED_OUT"


@pytest.mark.parametrize(
    ("knobs", "field"),
    [({"error_rat": 0.1}, "error_rat"), ({"error_rate": 1.5}, "error_rate"), ({"down": "yes"}, "down"),
     ({"latency_ms": -1}, "latency_ms"), ({"crash_mode": "explode"}, "crash_mode")],
)
def test_a_bad_fault_knob_is_400_naming_the_field(rp: RunPodStandIn, local: Client, knobs: dict, field: str) -> None:
    r = requests.put(faults_url(rp, "local"), json=knobs, headers=AUTH)

    assert r.status_code == 400 and r.json()["field"] == field and field in r.json()["error"]
    assert requests.get(faults_url(rp, "local"), headers=AUTH).json()["error_rate"] == 0


def test_fault_knobs_need_the_bearer_key_and_get_returns_them(rp: RunPodStandIn, local: Client) -> None:
    assert requests.put(faults_url(rp, "local"), json={"down": True}).status_code == 401

    requests.put(faults_url(rp, "local"), json={"latency_ms": 5, "seed": 3}, headers=AUTH)

    knobs = requests.get(faults_url(rp, "local"), headers=AUTH).json()
    assert knobs["latency_ms"] == 5 and knobs["seed"] == 3 and knobs["down"] is False


# ------------------------------------------------------------------------------------------------ #
#                       concurrency > 1: job-take-batch and job-stop with the real SDK               #
# ------------------------------------------------------------------------------------------------ #
ASYNC_HANDLER = textwrap.dedent(
    """
    import asyncio, os
    import runpod

    async def handler(job):
        await asyncio.sleep(float(job["input"].get("seconds", 0)))
        return {"slept": job["input"].get("seconds", 0)}

    if __name__ == "__main__":
        n = int(os.environ.get("STILLHOUSE_WORKER_CONCURRENCY", "1"))
        runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda current: n})
    """
)


def test_concurrent_async_worker_takes_batches_and_is_stopped_on_cancel(tmp_path: Path) -> None:
    handler = tmp_path / "async_handler.py"
    handler.write_text(ASYNC_HANDLER)
    with RunPodStandIn(api_key=API_KEY, endpoints=["c"], handler_path=handler, worker_concurrency=4,
                       log_dir=tmp_path) as rp:
        c = Client(rp, "c")
        pid = rp._endpoints["c"].worker.proc.pid
        long_job = c.run({"seconds": 30})["id"]
        c.wait_status(long_job, {"IN_PROGRESS"})

        started = time.monotonic()
        ids = [c.run({"seconds": 0.5})["id"] for _ in range(3)]
        bodies = [c.wait_status(i, TERMINAL) for i in ids]

        assert [b["status"] for b in bodies] == ["COMPLETED"] * 3
        assert time.monotonic() - started < 10  # they ran beside the 30 s job, not after it
        c.post(f"cancel/{long_job}")
        log_text = lambda: (tmp_path / "runpod-worker-c.log").read_text()  # noqa: E731
        wait_for(lambda: "Stopping job" in log_text(), timeout=5)  # the SDK's job-stop channel fired
        assert rp.stats("c")["route:job-take-batch"] > 0  # concurrency > 1: the SDK asks for batches
        assert c.job(long_job)["status"] == "CANCELLED"

    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the worker and its heartbeat child are gone


def test_crash_rate_in_requeue_mode_hands_the_job_to_a_worker_again(rp: RunPodStandIn, local: Client) -> None:
    rp.set_faults("local", crash_rate=1.0, crash_mode="requeue")
    retried_before = rp.stats("local").get("retried", 0)

    job_id = local.run({"task": "echo", "text": "again"})["id"]
    wait_for(lambda: rp.stats("local").get("retried", 0) > retried_before, timeout=5)
    rp.set_faults("local", crash_rate=0.0)

    body = local.wait_status(job_id, TERMINAL, timeout=5)
    assert body["status"] == "COMPLETED" and body["output"]["text"] == "again"


def test_the_same_seed_gives_the_same_fault_pattern() -> None:
    def pattern() -> list[int]:
        with RunPodStandIn(api_key=API_KEY, endpoints=["e"], start_workers=False, seed=42) as standin:
            standin.set_faults("e", rate_limit_rate=0.5)
            c = Client(standin, "e")
            return [c.s.post(f"{c.base}/run", json={"input": {}}).status_code for _ in range(20)]

    first, second = pattern(), pattern()

    assert first == second and {200, 429} == set(first)


def test_a_worker_process_that_dies_fails_its_job_and_is_restarted() -> None:
    with RunPodStandIn(api_key=API_KEY, endpoints=["k"]) as rp:
        c = Client(rp, "k")
        old = rp._endpoints["k"].worker
        job_id = c.run({"task": "sleep", "seconds": 5})["id"]
        c.wait_status(job_id, {"IN_PROGRESS"})

        old.proc.kill()

        body = c.wait_status(job_id, TERMINAL, timeout=5)
        assert body["status"] == "FAILED" and "exited" in body["error"]
        again = c.runsync({"task": "echo"})
        assert again["status"] == "COMPLETED" and again["workerId"] != body["workerId"]


def test_job_take_on_an_empty_queue_is_held_open_and_answers_as_soon_as_a_job_arrives() -> None:
    """An immediate empty answer would make the SDK's worker loop spin; RunPod holds the poll open."""
    standin = RunPodStandIn(api_key=API_KEY, endpoints=["held"], start_workers=False, job_take_hold_s=1.0)
    standin.start()
    try:
        take = standin.worker_env_for("held", pod_id="pod-1")["RUNPOD_WEBHOOK_GET_JOB"].replace("$ID", "pod-1")
        started = time.monotonic()
        empty = requests.get(take, timeout=10)
        assert empty.status_code == 204 and time.monotonic() - started >= 0.9

        got: dict[str, Any] = {}

        def poll() -> None:
            got["response"] = requests.get(take, timeout=10)
            got["at"] = time.monotonic()

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.3)
        submitted = time.monotonic()
        job = requests.post(f"{standin.api_base()}/held/run", headers=AUTH, timeout=5,
                            json={"input": {"task": "echo", "text": "now"}}).json()
        poller.join(timeout=5)
        assert got["response"].status_code == 200 and got["response"].json()["id"] == job["id"]
        assert got["at"] - submitted < 0.5  # handed out at once, not at the end of the hold
    finally:
        standin.stop()
