"""The stand-in scales each endpoint's workers as RunPod's scaler does: up to workersMax while jobs wait
longer than the queue-delay threshold, never more, and back down after the idle timeout.

Fast in-process workers (one job at a time each) show the counts; one test runs the real SDK worker
with the real gpu_handler to show two worker processes running two jobs at once.
"""
from __future__ import annotations

import threading

import requests
from stillhouse_local.runpod_standin import RunPodStandIn, Scaling

from tests.support.stack import settled

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


class Gate:
    """A handler whose jobs block until released, and which records how many ran at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = self.most = 0

    def __call__(self, job: dict) -> dict:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.release.wait(timeout=20)  # bounded: a broken test must still end
            return {"n": job["input"]["n"]}
        finally:
            with self.lock:
                self.running -= 1


def _run(rp: RunPodStandIn, ep: str, body: dict) -> str:
    resp = requests.post(f"{rp.api_base()}/{ep}/run", json=body, headers=AUTH, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


def _status(rp: RunPodStandIn, ep: str, job_id: str) -> dict:
    return requests.get(f"{rp.api_base()}/{ep}/status/{job_id}", headers=AUTH, timeout=5).json()


def _health(rp: RunPodStandIn, ep: str) -> dict:
    return requests.get(f"{rp.api_base()}/{ep}/health", headers=AUTH, timeout=5).json()


def test_an_endpoint_runs_up_to_workers_max_jobs_at_once_never_more_and_scales_down_when_idle():
    gate = Gate()
    scaling = Scaling(workers_max=3, scaler_value=0.1, idle_timeout_s=0.5)
    with RunPodStandIn(api_key=API_KEY, endpoints=["q"], worker_handler=gate, scaling=scaling) as rp:
        assert rp.workers("q")["serving"] == 1  # one warm worker to begin with
        ids = [_run(rp, "q", {"input": {"n": i}}) for i in range(6)]

        # Jobs wait past the 0.1 s threshold, so workers are added until three run three jobs at once.
        health = settled(lambda: _health(rp, "q"), lambda h: h["workers"]["running"] == 3, timeout=10)
        assert health["workers"]["running"] == 3
        assert health["jobs"] == {**health["jobs"], "inProgress": 3, "inQueue": 3}
        assert gate.running == 3

        gate.release.set()
        done = [settled(lambda j=j: _status(rp, "q", j), lambda s: s["status"] in TERMINAL, timeout=10) for j in ids]
        assert [s["status"] for s in done] == ["COMPLETED"] * 6
        assert sorted(s["output"]["n"] for s in done) == list(range(6))
        assert gate.most == 3  # never more than workersMax at once
        assert rp.workers("q")["peak"] == 3
        assert len({s["workerId"] for s in done}) == 3

        # Idle for 0.5 s, the extra workers go; the endpoint keeps one.
        health = settled(lambda: _health(rp, "q"), lambda h: h["workers"]["idle"] + h["workers"]["running"] == 1,
                         timeout=10)
        assert (health["workers"]["idle"], health["workers"]["running"]) == (1, 0)
        assert rp.workers("q")["serving"] == 1

        # The one left still takes jobs.
        again = _run(rp, "q", {"input": {"n": 7}})
        assert settled(lambda: _status(rp, "q", again), lambda s: s["status"] in TERMINAL, timeout=10)["output"] == {"n": 7}


def test_jobs_that_wait_less_than_the_threshold_add_no_worker():
    gate = Gate()
    gate.release.set()  # every job ends at once
    scaling = Scaling(workers_max=3, scaler_value=30, idle_timeout_s=0.5)
    with RunPodStandIn(api_key=API_KEY, endpoints=["q"], worker_handler=gate, scaling=scaling) as rp:
        ids = [_run(rp, "q", {"input": {"n": i}}) for i in range(5)]
        done = [settled(lambda j=j: _status(rp, "q", j), lambda s: s["status"] in TERMINAL, timeout=10) for j in ids]
        assert [s["status"] for s in done] == ["COMPLETED"] * 5
        assert rp.workers("q")["peak"] == 1
        assert gate.most == 1


def test_request_count_keeps_one_worker_per_scaler_value_jobs_and_workers_min_stays_up():
    gate = Gate()
    scaling = Scaling(workers_min=2, workers_max=4, scaler_type="REQUEST_COUNT", scaler_value=2, idle_timeout_s=0.3)
    with RunPodStandIn(api_key=API_KEY, endpoints=["r"], worker_handler=gate, scaling=scaling) as rp:
        assert rp.workers("r")["serving"] == 2  # workersMin run from the start
        ids = [_run(rp, "r", {"input": {"n": i}}) for i in range(6)]  # 6 jobs / 2 per worker: 3 workers
        settled(lambda: gate.running, lambda n: n == 3, timeout=10)
        assert gate.running == 3
        assert rp.workers("r")["serving"] == 3
        gate.release.set()
        for j in ids:
            assert settled(lambda j=j: _status(rp, "r", j), lambda s: s["status"] in TERMINAL, timeout=10)["status"] \
                == "COMPLETED"
        assert settled(lambda: rp.workers("r")["serving"], lambda n: n == 2, timeout=10) == 2  # down to workersMin


def test_the_management_api_scales_an_endpoint_by_its_record_and_a_patch_rescales_it():
    with RunPodStandIn(api_key=API_KEY, endpoints=["x"], start_workers=False) as rp:
        v1 = f"{rp.base_url}/v1"
        template = requests.post(f"{v1}/templates", headers=AUTH, timeout=5,
                                 json={"name": "t", "imageName": "img:1", "isServerless": True}).json()
        endpoint = requests.post(f"{v1}/endpoints", headers=AUTH, timeout=5, json={
            "templateId": template["id"], "gpuTypeIds": ["NVIDIA GeForce RTX 4090"], "workersMax": 5,
            "scalerType": "REQUEST_COUNT", "scalerValue": 8, "idleTimeout": 30}).json()
        assert rp.scaling(endpoint["id"]) == Scaling(workers_min=0, workers_max=5, scaler_type="REQUEST_COUNT",
                                                     scaler_value=8, idle_timeout_s=30)
        resp = requests.patch(f"{v1}/endpoints/{endpoint['id']}", headers=AUTH, timeout=5,
                              json={"workersMin": 1, "workersMax": 2})
        assert resp.status_code == 200, resp.text
        assert (rp.scaling(endpoint["id"]).workers_min, rp.scaling(endpoint["id"]).workers_max) == (1, 2)


def test_real_sdk_workers_of_one_endpoint_run_two_jobs_at_once_on_two_workers():
    # The real gpu_handler under the real SDK loop, one job at a time per worker: the second sleep job
    # waits past the 0.2 s threshold, so a second worker process starts (2-3 s) and takes it while the
    # first still runs. Once both run, both are cancelled: the test does not wait for the sleeps.
    scaling = Scaling(workers_max=2, scaler_value=0.2, idle_timeout_s=60)
    with RunPodStandIn(api_key=API_KEY, endpoints=["s"], worker_concurrency=1, scaling=scaling) as rp:
        ids = [_run(rp, "s", {"input": {"task": "sleep", "seconds": 30}}) for _ in range(2)]
        health = settled(lambda: _health(rp, "s"), lambda h: h["workers"]["running"] == 2, timeout=20)
        assert health["workers"]["running"] == 2 and health["jobs"]["inProgress"] == 2
        running = [_status(rp, "s", j) for j in ids]
        assert [s["status"] for s in running] == ["IN_PROGRESS", "IN_PROGRESS"]
        assert running[0]["workerId"] != running[1]["workerId"]
        assert rp.workers("s")["peak"] == 2
        for j in ids:
            requests.post(f"{rp.api_base()}/s/cancel/{j}", headers=AUTH, timeout=5)
        assert [_status(rp, "s", j)["status"] for j in ids] == ["CANCELLED", "CANCELLED"]
