"""The recovery workflow: retries with backoff, failover, callback timeout -> /status, giving up."""
import time

from stillhouse import aws
from stillhouse.container import container
from tests.support.stack import execution_arn, settled


def history(job):
    sfn = aws.client("stepfunctions")
    return sfn.get_execution_history(executionArn=execution_arn(job["id"]), maxResults=1000)["events"]


def wait_for(api, job_id, status, timeout=15.0):
    job = api.wait(job_id, statuses={status, "COMPLETED", "FAILED", "CANCELLED"}, timeout=timeout)
    assert job["status"] == status, job
    return job


def test_a_5xx_on_the_first_attempt_is_retried_by_the_workflow_and_completes(api, stack, faults):
    faults("local", error_rate=1.0)
    job_id = api.submit("echo", {"text": "again"})
    job = wait_for(api, job_id, "RETRYING")
    assert job["error_class"] == "transient" and execution_arn(job_id)
    assert "execution_arn" not in job  # an AWS resource name: not the caller's business
    stack.standin.reset_faults("local")
    job = api.wait(job_id, timeout=30)
    assert job["status"] == "COMPLETED" and job["output"]["text"] == "again"
    assert job["attempts"] >= 2
    actors = [e["actor"] for e in job["events"]]
    assert "recovery" in actors
    assert history(job)  # the execution exists and has a history


def test_429s_are_backed_off_and_the_job_completes_after_capacity_returns(api, stack, faults):
    faults("local", rate_limit_rate=1.0, retry_after_s=1)
    job_id = api.submit("echo", {"text": "busy"})
    wait_for(api, job_id, "RETRYING")
    # The workflow's first task may note "no endpoint available" (the endpoint is in its Retry-After
    # back-off) a moment before the dispatcher records why it handed the job over.
    job = settled(lambda: api.get(f"/v1/jobs/{job_id}").json(), lambda job: job.get("error_class"), 5)
    assert job["error_class"] == "capacity", (job, api.get("/v1/endpoints").json())
    # The workflow retried (and was refused) at least once before capacity returns.
    settled(lambda: [e for e in history(api.get(f"/v1/jobs/{job_id}").json())
                     if e["type"] in ("TaskFailed", "LambdaFunctionFailed")], bool, 10)
    stack.standin.reset_faults("local")
    job = api.wait(job_id, timeout=30)
    assert job["status"] == "COMPLETED"
    failures = [e for e in history(job) if e["type"] in ("TaskFailed", "LambdaFunctionFailed")]
    starts = [e["timestamp"] for e in history(job) if e["type"] == "TaskScheduled"]
    assert failures, "the workflow saw the capacity errors"
    # Throttled, then skipped while the endpoint's Retry-After back-off lasts: both mean "wait".
    assert all("CapacityError" in str(e) or "NoEndpointAvailable" in str(e) for e in failures)
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:])]
    # Full jitter: each wait lies in [0, min(MaxDelaySeconds=4, 1 * 2^n)] (plus scheduling slack).
    assert gaps and all(g <= 4 + 1.5 for g in gaps)


def test_when_every_run_is_refused_the_job_waits_until_its_deadline_and_says_why(api, faults):
    # A refused /run ran no GPU: it is retried with backoff until the job's deadline, not until a count ends.
    faults("local", error_rate=1.0)
    job_id = api.submit("echo", {"text": "doomed"}, deadline_s=8)
    job = api.wait(job_id, timeout=60)
    assert job["status"] == "TIMED_OUT", job
    # What it was waiting for: the endpoint's 500s, or (once they opened its breaker) any endpoint at all.
    assert "deadline" in job["error"], job["error"]
    assert "500" in job["error"] or "no endpoint available" in job["error"], job["error"]
    assert not [e for e in job["events"] if e["status"] == "IN_PROGRESS"]  # no GPU ran for it


def test_an_endpoint_refusing_half_the_runs_still_completes_every_job(api, faults):
    faults("local", error_rate=0.5)
    job_ids = [api.submit("echo", {"text": f"half {n}"}) for n in range(30)]
    jobs = [api.wait(job_id, timeout=120) for job_id in job_ids]
    assert [j["status"] for j in jobs] == ["COMPLETED"] * 30, [(j["status"], j.get("error")) for j in jobs]
    assert [j["output"]["text"] for j in jobs] == [f"half {n}" for n in range(30)]


def test_a_lost_webhook_is_recovered_through_the_status_check(api, stack, faults):
    faults("local", error_rate=1.0)
    job_id = api.submit("echo", {"text": "lost"})
    wait_for(api, job_id, "RETRYING")
    stack.standin.reset_faults("local")
    faults("local", drop_webhook_rate=1.0)  # the workflow's attempt succeeds but nobody is told
    # The every-minute sweep would settle it too (test_sweeper.py): this test is the workflow's own check.
    with stack.schedules_paused():
        job = api.wait(job_id, timeout=40)
    assert job["status"] == "COMPLETED" and job["output"]["text"] == "lost"
    assert job["events"][-1]["actor"] == "recovery"  # recorded by the status check, not a webhook
    names = [e.get("stateEnteredEventDetails", {}).get("name") for e in history(job)]
    assert "CheckStatus" in names


def test_a_crashed_worker_is_retried_as_an_infrastructure_fault(api, stack, faults):
    # The stand-in's worker "dies" (crash_mode=fail): RunPod reports FAILED with a bare text, no report
    # of ours. That is not an answer: the job is retried, and the endpoint is blamed, not the job.
    faults("local", crash_rate=1.0, crash_mode="fail")
    job_id = api.submit("echo", {"text": "survivor"})
    job = wait_for(api, job_id, "RETRYING")
    assert job["error_class"] == "worker_lost"
    stack.standin.reset_faults("local")
    job = api.wait(job_id, timeout=30)
    assert job["status"] == "COMPLETED" and job["output"]["text"] == "survivor"
    assert job["attempts"] >= 2


def test_a_hung_worker_is_given_up_on_and_the_job_completes_on_the_next_attempt(api, stack, faults):
    # crash_mode=hang: the worker never answers, RunPod keeps the job IN_PROGRESS until the executionTimeout
    # it was given for this job (here capped by the tier's ExecutionTimeoutMs=20000, not RunPod's 10 min).
    faults("local", crash_rate=1.0, crash_mode="hang")
    started = time.monotonic()
    job_id = api.submit("echo", {"text": "unstuck"})
    wait_for(api, job_id, "IN_PROGRESS")
    stack.standin.reset_faults("local")  # the hung attempt stays hung; the next one runs
    job = api.wait(job_id, timeout=60)
    assert job["status"] == "COMPLETED" and job["output"]["text"] == "unstuck"
    assert time.monotonic() - started < 60
    lost = [e for e in job["events"] if e["status"] == "RETRYING" and e["attempt"] == 1]
    assert lost, job["events"]
    runs = [e for e in job["events"] if e["status"] == "IN_PROGRESS" and e.get("runpod_id")]
    assert len(runs) == 2  # one hung run, one that answered


def test_a_handler_error_that_is_not_retryable_is_not_retried(api):
    job = api.wait(api.submit("sleep", {"seconds": 1, "snooze": True}))  # the worker refuses the field
    assert job["status"] == "FAILED" and job["error_class"] == "terminal"
    assert job["attempts"] == 1 and execution_arn(job["id"]) is None


def test_cancelling_a_retrying_job_stops_its_workflow(api, faults):
    faults("local", error_rate=1.0)
    job_id = api.submit()
    job = wait_for(api, job_id, "RETRYING")
    assert api.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "CANCELLED"
    sfn = aws.client("stepfunctions")
    settled(lambda: sfn.describe_execution(executionArn=execution_arn(job_id))["status"],
            lambda status: status != "RUNNING", 5, interval=0.1)
    # StopExecution ends it at its current step (moto reports the interrupted step's failure where AWS
    # says ABORTED); no retry, no RecordFailure runs after the cancel.
    assert sfn.describe_execution(executionArn=execution_arn(job_id))["status"] != "RUNNING"
    entered = [e["stateEnteredEventDetails"]["name"] for e in history(job) if "stateEnteredEventDetails" in e]
    assert "RecordFailure" not in entered
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "CANCELLED"


def test_with_no_endpoint_available_a_job_waits_without_spending_attempts(api):
    container().registry.update("local", enabled=False)  # east and west are disabled too: nothing serves
    try:
        job_id = api.submit("echo", {"text": "patient"})
        job = wait_for(api, job_id, "RETRYING")
        # Longer than the error Retry block lasts (1+2+4 s with the test's settings): still waiting.
        time.sleep(9)
        job = api.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "RETRYING" and "no endpoint available" in job["error"]
        assert job["attempts"] == 1  # the fast path's attempt only: waiting spends none
    finally:
        container().registry.update("local", enabled=True)
    job = api.wait(job_id, timeout=30)
    assert job["status"] == "COMPLETED" and job["output"]["text"] == "patient"
    assert job["attempts"] == 2
