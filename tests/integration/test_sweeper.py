"""The sweeper: lost webhooks, lost RunPod jobs and dead workflows still end in a terminal status."""
import json

from stillhouse import aws
from stillhouse.container import container
from tests.support.stack import execution_arn, settled


def sweep(stack, **event):
    """Look at every live job now, due or not."""
    return stack.functions.get("SweeperFunction").invoke({"ahead_s": 3600, **event})


def test_a_short_jobs_lost_webhook_costs_seconds_not_the_sweep_interval(api, stack, faults):
    faults("local", drop_webhook_rate=1.0)
    job_id = api.submit("echo", {"text": "soon"})
    api.wait(job_id, statuses={"IN_PROGRESS"})

    def one_round():  # what each round of the schedule does: only jobs that are due
        stack.functions.get("SweeperFunction").invoke({"ahead_s": 0})
        return api.get(f"/v1/jobs/{job_id}").json()

    # Due SettleFloorSeconds (2 s) after its start; SweepAfterSeconds (300 s) would have been the wait before.
    job = settled(one_round, lambda job: job["status"] == "COMPLETED", 30, interval=0.5)
    assert job["output"]["text"] == "soon"
    assert job["events"][-1]["actor"] == "sweeper"


def test_a_fast_path_job_whose_webhook_was_lost_is_completed_by_the_sweeper(api, stack, faults):
    faults("local", drop_webhook_rate=1.0)
    job_id = api.submit("echo", {"text": "quiet"})
    job = api.wait(job_id, statuses={"IN_PROGRESS"})
    # RunPod finished it; nobody told us.
    assert settled(lambda: stack.standin.job_status(job["runpod_id"])["status"], lambda s: s == "COMPLETED", 10) \
        == "COMPLETED"
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "IN_PROGRESS"
    result = sweep(stack)
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert result.get("settled", 0) >= 1
    assert job["status"] == "COMPLETED" and job["output"]["text"] == "quiet"
    assert job["events"][-1]["actor"] == "sweeper"


def test_a_job_runpod_no_longer_knows_goes_to_the_recovery_workflow(api, stack, faults):
    faults("local", drop_webhook_rate=1.0)
    job_id = api.submit("echo", {"text": "vanished"})
    runpod_id = api.wait(job_id, statuses={"IN_PROGRESS"})["runpod_id"]
    # Its (dropped) webhook is behind us once it is COMPLETED: nothing can arrive later.
    settled(lambda: stack.standin.job_status(runpod_id)["status"], lambda status: status == "COMPLETED", 10)
    container().job_store.annotate(job_id, {"runpod_id": "no-such-runpod-job"})  # as if RunPod purged it
    stack.standin.reset_faults("local")
    sweep(stack)
    job = api.wait(job_id, timeout=30)
    assert job["status"] == "COMPLETED" and job["attempts"] == 2
    statuses = [e["status"] for e in job["events"]]
    assert "RETRYING" in statuses
    assert any(e["actor"] == "sweeper" for e in job["events"])


def test_a_retrying_job_whose_workflow_died_is_failed(api, stack, faults):
    faults("local", error_rate=1.0)
    job_id = api.submit()
    api.wait(job_id, statuses={"RETRYING"}, timeout=15)
    arn = settled(lambda: execution_arn(job_id), bool, 15)
    aws.client("stepfunctions").stop_execution(executionArn=arn)
    settled(lambda: container().workflows.status(arn), lambda status: status != "RUNNING", 10,
            interval=0.1)
    sweep(stack)
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "FAILED" and "workflow ended" in job["error"]


def test_running_jobs_are_left_alone(api, stack):
    # Long enough that a sweep of every live job (16 index partitions a status) ends well before it does.
    job_id = api.submit("sleep", {"seconds": 6})
    api.wait(job_id, statuses={"IN_PROGRESS"})
    result = sweep(stack)
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "IN_PROGRESS"
    assert result.get("still_running", 0) >= 1
    assert api.wait(job_id)["status"] == "COMPLETED"


def test_redrive_moves_dlq_messages_back_to_their_queue(stack):
    sqs = aws.client("sqs")
    for dlq in ("JobsNormalDLQ", "WebhookDeliveryDLQ"):  # only this test's messages: none an earlier test left
        sqs.purge_queue(QueueUrl=stack.queue_url(dlq))
    sqs.send_message(QueueUrl=stack.queue_url("JobsNormalDLQ"), MessageBody=json.dumps({"job_id": "redriven-poison"}))
    sqs.send_message(QueueUrl=stack.queue_url("WebhookDeliveryDLQ"), MessageBody=json.dumps({"job_id": "stopped"}))
    moved = stack.functions.get("SweeperFunction").invoke({"action": "redrive"})
    assert moved == {"redriven": 1, "webhooks_redriven": 1}
    left = sqs.get_queue_attributes(QueueUrl=stack.queue_url("JobsNormalDLQ"), AttributeNames=["ApproximateNumberOfMessages"])
    assert left["Attributes"]["ApproximateNumberOfMessages"] == "0"
