"""Failover between endpoints and the sweeper, with the router's state in DynamoDB Local and queues in LocalStack."""
import json
import time

from stillhouse import aws
from tests.support.stack import forget_statistics


def breaker(api, name):
    return {row["name"]: row for row in api.get("/v1/endpoints").json()}[name]["breaker"]


def test_a_hard_down_endpoint_opens_its_breaker_and_jobs_fail_over(api, stack, two_endpoints):
    stack.standin.set_faults("west", down=True)
    jobs = []
    while breaker(api, "west") == "CLOSED" and len(jobs) < 60:
        jobs.append(api.wait(api.submit("echo", {"text": "x"}), timeout=60))
    assert breaker(api, "west") == "OPEN"
    jobs += [api.wait(api.submit("echo", {"text": "y"}), timeout=60) for _ in range(5)]
    # Every job completed on the healthy endpoint, on its first dispatch (failover within the attempt).
    assert {j["status"] for j in jobs} == {"COMPLETED"}
    assert {j["endpoint"] for j in jobs} == {"east"} and {j["attempts"] for j in jobs} == {1}


def test_a_fast_path_job_whose_webhook_was_lost_is_completed_by_the_sweeper(api, stack):
    forget_statistics("local")
    stack.standin.set_faults("local", drop_webhook_rate=1.0)
    try:
        job_id = api.submit("echo", {"text": "quiet"})
        api.wait(job_id, statuses={"IN_PROGRESS"})
        time.sleep(1.0)  # RunPod finished it; nobody told us
        assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "IN_PROGRESS"
        result = stack.functions.get("SweeperFunction").invoke({"ahead_s": 3600})  # every live job, due or not
    finally:
        stack.standin.reset_faults("local")
        forget_statistics("local")
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert result.get("settled", 0) >= 1
    assert job["status"] == "COMPLETED" and job["output"]["text"] == "quiet"
    assert job["events"][-1]["actor"] == "sweeper"


def test_redrive_moves_dlq_messages_back_to_their_queue(stack):
    sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=stack.queue_url("JobsNormalDLQ"), MessageBody=json.dumps({"job_id": "redriven-poison"}))
    sqs.send_message(QueueUrl=stack.queue_url("WebhookDeliveryDLQ"), MessageBody=json.dumps({"job_id": "stopped"}))
    moved = stack.functions.get("SweeperFunction").invoke({"action": "redrive"})
    assert moved == {"redriven": 1, "webhooks_redriven": 1}
    left = sqs.get_queue_attributes(QueueUrl=stack.queue_url("JobsNormalDLQ"),
                                    AttributeNames=["ApproximateNumberOfMessages"])
    assert left["Attributes"]["ApproximateNumberOfMessages"] == "0"
