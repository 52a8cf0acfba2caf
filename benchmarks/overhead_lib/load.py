"""The caller's side: a webhook receiver, a closed loop of submitters, and the Step Functions transitions
the jobs caused."""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from webhook_receiver import WebhookReceiver

from .stats import summary


class Receiver:
    """The caller's webhook endpoint on 127.0.0.1: timestamps each job's first arrival on entry."""

    def __init__(self) -> None:
        self.arrivals: dict[str, tuple[float, float, dict[str, Any]]] = {}
        self.cond = threading.Condition()
        self._http = WebhookReceiver(self._arrived, name="bench-receiver")
        self.url = self._http.url

    def _arrived(self, data: dict[str, Any], t: float, wall: float) -> None:
        with self.cond:
            self.arrivals.setdefault(data.get("id", ""), (t, wall, data))
            self.cond.notify_all()

    def wait(self, job_id: str, timeout: float) -> tuple[float, float, dict[str, Any]] | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while job_id not in self.arrivals:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.arrivals[job_id]

    def stop(self) -> None:
        self._http.stop()


TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


ECHO = {"task": "echo", "input": {"text": "x"}}
COUNCIL3 = {"task": "council", "input": {"prompt": "p", "models": ["echo-a", "echo-b", "echo-c"]}}


def long_prompt(kb: float) -> dict[str, Any]:
    """A job with a long prompt and a short answer (`--input-kb`): `generate` on the weightless `echo-a`,
    its answer cut to 8 words, so only the input grows with `kb`."""
    words = "lorem ipsum dolor sit amet consectetur adipiscing elit "
    text = (words * (int(kb * 1024) // len(words) + 1))[:max(1, int(kb * 1024))]
    return {"task": "generate", "model": "echo-a", "input": {"prompt": text, "max_new_tokens": 8}}


def run_jobs(url: str, key: str, n: int, concurrency: int, observe: str, poll_ms: float, receiver: Receiver,
             deadline_s: float, job_timeout_s: float = 30.0, job: dict[str, Any] | None = None,
             before_submit: Callable[[], None] | None = None,
             after_accept: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Closed-loop callers. `before_submit`/`after_accept(job id)`: the harness's own steps around each
    submit (e.g. a fault switched on, then off once the job is retrying), made outside the meter."""
    import requests

    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    issued = [0]
    stop_at = time.monotonic() + deadline_s
    body = dict(job or ECHO)
    if observe == "webhook":
        body["webhook"] = receiver.url

    def worker() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        while True:
            with lock:
                if issued[0] >= n or time.monotonic() > stop_at:
                    return
                issued[0] += 1
            if before_submit is not None:
                before_submit()
            rec: dict[str, Any] = {"t0": time.perf_counter(), "wall0": time.time()}
            response = session.post(url + "/v1/jobs", json=body, timeout=10)
            rec["t_accepted"] = time.perf_counter()
            if response.status_code != 202:
                rec["error"] = f"submit {response.status_code}: {response.text[:200]}"
                with lock:
                    results.append(rec)
                continue
            rec["id"] = job_id = response.json()["id"]
            if after_accept is not None:
                after_accept(job_id)
            if observe == "webhook":
                arrival = receiver.wait(job_id, job_timeout_s)
                if arrival is None:
                    rec["error"] = "no webhook"
                else:
                    rec["t_visible"], rec["wall_visible"], rec["status"] = arrival[0], arrival[1], arrival[2]["status"]
            else:
                give_up = time.monotonic() + job_timeout_s
                while time.monotonic() < give_up:
                    job = session.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
                    if job.get("status") in TERMINAL:
                        rec["t_visible"], rec["wall_visible"], rec["status"] = time.perf_counter(), time.time(), job["status"]
                        break
                    time.sleep(poll_ms / 1000)
                else:
                    rec["error"] = "not terminal in time"
            with lock:
                results.append(rec)

    threads = [threading.Thread(target=worker, name=f"bench-caller-{i}", daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# ------------------------------------------------------------------------------------------------ #
#  Step Functions transitions                                                                       #
# ------------------------------------------------------------------------------------------------ #
def count_transitions(sfn: Any, job_ids: set[str], wait_s: float = 15.0) -> dict[str, Any]:
    """State transitions of the executions started for these jobs (named `<job id>-<attempt>`)."""
    executions = []
    for machine in sfn.list_state_machines()["stateMachines"]:
        for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=machine["stateMachineArn"]):
            for ex in page["executions"]:
                if ex["name"].rsplit("-", 1)[0] in job_ids or ex["name"].removesuffix("-council") in job_ids:
                    executions.append(ex["executionArn"])
    deadline = time.monotonic() + wait_s
    per_execution, statuses, types = [], Counter(), Counter()
    for arn in executions:
        while sfn.describe_execution(executionArn=arn)["status"] == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.2)
        statuses[sfn.describe_execution(executionArn=arn)["status"]] += 1
        events = []
        for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn):
            events += page["events"]
        kinds = Counter(e["type"] for e in events)
        types.update(kinds)
        entered = sum(v for k, v in kinds.items() if k.endswith("StateEntered"))
        tasks_entered = kinds.get("TaskStateEntered", 0)
        scheduled = kinds.get("TaskScheduled", 0) + kinds.get("LambdaFunctionScheduled", 0)
        per_execution.append(entered + max(0, scheduled - tasks_entered))
    return {"executions": len(executions), "transitions": sum(per_execution),
            "per_execution": summary([float(x) for x in per_execution]) if per_execution else None,
            "execution_status": dict(statuses), "history_event_types": dict(types)}
