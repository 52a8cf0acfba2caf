"""Our own functions dying mid-step (stillhouse.crash_points): at each step boundary a Lambda can time out
or be killed. With one crash point on at rate 1.0 (once per job), the job still ends right, once, and
its caller gets its webhook (at least once: every copy carries the same webhook-id, by which callers drop a
duplicate); a crash re-runs a job on a GPU at most once."""
import pytest
from stillhouse_local.gpu_runs import GpuRuns

from stillhouse import crash_points
from stillhouse.container import container
from tests.support.stack import forget_statistics, settled

SWEEP_AHEAD_S = 3600  # "look at everything now": owed notices included


@pytest.fixture
def crash():
    def turn_on(point):
        crash_points.configure({point: 1.0})

    yield turn_on
    crash_points.configure({})


@pytest.fixture
def gpu_runs():
    with GpuRuns() as runs:
        yield runs


def sweep(stack):
    """One sweeper invocation, as its schedule would make; a sweep that dies is a failed invocation."""
    try:
        stack.functions.get("SweeperFunction").invoke({"ahead_s": SWEEP_AHEAD_S})
    except Exception:  # noqa: BLE001 - the sweeper's own crash points: the next sweep goes on
        return


def ended_and_told(api, stack, receiver, job_id, timeout=60.0):
    """The job, once terminal and its caller told; the sweeper runs meanwhile (owed notices, lost webhooks)."""
    def read():
        job = api.get(f"/v1/jobs/{job_id}").json()
        told = [c for c in receiver.calls if c["json"].get("id") == job_id]
        if job["status"] not in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT") or not told:
            sweep(stack)
        return job, told

    return settled(read, lambda seen: seen[0]["status"] == "COMPLETED" and seen[1], timeout, interval=0.5)


def assert_ended_once_and_told_once(job, told, text):
    assert job["status"] == "COMPLETED", job
    assert job["output"]["text"] == text
    terminal = [e for e in job["events"] if e["status"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")]
    assert len(terminal) == 1, job["events"]
    assert told, "the caller was never told"
    assert {c["headers"].get("webhook-id") for c in told} == {f"msg_{job['id']}"}  # one notice, maybe re-sent
    assert {c["json"]["status"] for c in told} == {"COMPLETED"}


@pytest.mark.parametrize("point, most_runs", [
    ("dispatch.after_claim", 1),  # claimed, nothing sent: the redelivery claims the next attempt
    # RunPod runs it, unrecorded: the redelivery runs it again (unless the first result came before it and
    # ended the job); the first result wins, the newer run is cancelled.
    ("dispatch.after_run", 2),
    ("dispatch.after_start", 1),  # recorded IN_PROGRESS: the redelivery finds it started
    ("callbacks.before_record", 1),  # RunPod sends its webhook again
    ("callbacks.after_terminal", 1),  # the notice is owed: the sweep queues it
    ("delivery.before_post", 1),  # the notice comes back to the queue
    ("delivery.after_post", 1),  # posted, unrecorded: posted again, with the same webhook-id
])
def test_a_job_whose_function_dies_at_a_step_boundary_ends_once_and_its_caller_is_told(
        api, stack, receiver, crash, gpu_runs, point, most_runs):
    crash(point)
    text = f"dying at {point}"
    job_id = api.submit("echo", {"text": text}, webhook=receiver.url)
    job, told = ended_and_told(api, stack, receiver, job_id)
    assert crash_points.hits() == {point: 1}, crash_points.hits()
    assert_ended_once_and_told_once(job, told, text)
    assert 1 <= gpu_runs[job_id] <= most_runs


def test_a_sweep_that_dies_after_settling_a_lost_webhook_loses_nothing(api, stack, receiver, crash, faults):
    faults("local", drop_webhook_rate=1.0)  # RunPod never calls back: the sweeper settles the job
    crash("sweeper.after_settle")
    job_id = api.submit("echo", {"text": "settled by a dying sweep"}, webhook=receiver.url)
    job, told = ended_and_told(api, stack, receiver, job_id)
    assert crash_points.hits() == {"sweeper.after_settle": 1}
    assert_ended_once_and_told_once(job, told, "settled by a dying sweep")


@pytest.fixture
def council_endpoints(stack):
    """One endpoint per echo model, as tests/integration/test_council.py has them."""
    registry = container().registry
    base = stack.standin.api_base()
    forget_statistics("alpha", "beta", "gamma")
    for name, endpoint_id, model in (("alpha", "local", "echo-a"), ("beta", "east", "echo-b"), ("gamma", "west", "echo-c")):
        registry.put({"name": name, "endpoint_id": endpoint_id, "base_url": base, "models": [model]})
    registry.update("local", enabled=False)
    yield
    for name in ("alpha", "beta", "gamma"):
        registry.update(name, enabled=False)
    forget_statistics("alpha", "beta", "gamma")
    registry.update("local", enabled=True)


@pytest.mark.parametrize("point", ["council.after_run", "council.after_record"])
def test_a_council_whose_task_dies_mid_step_completes_with_one_webhook(
        api, stack, receiver, crash, gpu_runs, council_endpoints, point):
    crash(point)
    job_id = api.submit("council", {"prompt": "Oak or chestnut?", "models": ["echo-a", "echo-b", "echo-c"]},
                        webhook=receiver.url)
    job, told = ended_and_told(api, stack, receiver, job_id, timeout=90)
    assert crash_points.hits() == {point: 1}
    assert job["status"] == "COMPLETED", job.get("error")
    assert job["output"]["final"].startswith("echo-a says:")
    assert [e["status"] for e in job["events"]].count("COMPLETED") == 1
    assert {c["headers"].get("webhook-id") for c in told} == {f"msg_{job_id}"}
    # Four members (3 answers, the chair), each asked once; the one whose task died after /run twice (a
    # member whose callback is late is asked again by the workflow's own timeout: not the crash's doing).
    assert gpu_runs[job_id] >= 4
    if point == "council.after_run":
        assert gpu_runs.most_per_step(job_id) >= 2
