"""Fakes of dispatch's and the callbacks' collaborators (an endpoint spec, the RunPod client, the router, Step
Functions), and `make_dispatcher`, a Dispatcher wired to them."""
from dataclasses import dataclass

from stillhouse.jobs.dispatch import Dispatcher


@dataclass
class Ep:
    name: str
    endpoint_id: str = "id"
    base_url: str = "http://rp/v2"
    secret_ref: str | None = None


class FakeRunPod:
    def __init__(self, failures=None):
        self.failures = failures or {}
        self.runs, self.cancels = [], []

    def run(self, base_url, endpoint_id, payload, *, webhook=None, policy=None):
        self.runs.append((endpoint_id, payload, webhook, policy))
        if endpoint_id in self.failures:
            raise self.failures[endpoint_id]
        return {"id": f"rp-{len(self.runs)}", "status": "IN_QUEUE"}

    def cancel(self, base_url, endpoint_id, job_id):
        self.cancels.append(job_id)


class FakeRouter:
    """Routing as dispatch sees it: a fixed plan, breaker answers per endpoint, outcomes recorded."""

    def __init__(self, plan, closed=()):
        self.endpoints, self.closed = plan, set(closed)
        self.outcomes = []

    def plan(self, model, *, streaming=False):
        self.streaming = streaming
        return list(self.endpoints)

    def allow(self, name, plan=None):
        return name not in self.closed

    def submitted(self, name):
        self.outcomes.append(("submitted", name))

    def refused(self, name, error):
        self.outcomes.append(("refused", name, error.error_class))

    def released(self, name):
        self.outcomes.append(("released", name))


class FakeWorkflows:
    """Step Functions as dispatch and callbacks see it: executions started and task results sent, recorded."""

    def __init__(self):
        self.recoveries, self.councils, self.task_results = [], [], []

    def start_recovery(self, job_id, attempt):
        self.recoveries.append((job_id, attempt))
        return f"arn:exec:{job_id}-{attempt}"

    def start_council(self, job_id, council):
        self.councils.append((job_id, council))
        return f"arn:exec:{job_id}-council"

    def succeed_task(self, task_token, output):
        self.task_results.append(("succeed", task_token, output))

    def fail_task(self, task_token, error, cause):
        self.task_results.append(("fail", task_token, error, cause))


def make_dispatcher(store, plan, runpod, max_receive_count=3, router=None, workflows=None, mode="on_failure"):
    return Dispatcher(store=store, router=router or FakeRouter(plan), client_for=lambda ep: runpod,
                      callback_url=lambda job, attempt, ep: f"http://cb/{job.id}?a={attempt}&e={ep.name}",
                      policy={"executionTimeout": 60000}, max_receive_count=max_receive_count,
                      workflows=workflows, workflow_mode=mode)
