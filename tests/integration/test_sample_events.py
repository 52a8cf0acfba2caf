"""events/*.json are real events: each handler accepts its sample (what `sam local invoke` sends)."""
import json
from pathlib import Path

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

EVENTS = Path(__file__).resolve().parents[2] / "events"


def load(name):
    return json.loads((EVENTS / name).read_text())


def test_the_api_sample_submits_a_job(stack):
    event = load("api_submit_job.json")
    event["headers"]["authorization"] = f"Bearer {stack.dev_api_key}"
    response = stack.functions.get("ApiFunction").invoke(event)
    assert response["statusCode"] == 202
    assert json.loads(response["body"])["status"] == "IN_QUEUE"


def test_the_dispatch_sample_fails_for_an_unknown_job_so_the_message_is_retried(stack):
    # A batch whose every record failed is raised (Powertools' default): the whole batch returns to
    # the queue, as a partial failure of every record would.
    with pytest.raises(BatchProcessingError, match="All records failed"):
        stack.functions.get("DispatchFunction").invoke(load("dispatch_sqs_batch.json"))


def test_the_dispatch_sample_batch_reports_only_the_failed_record(api, stack):
    event = load("dispatch_sqs_batch.json")
    good = dict(event["Records"][0], messageId="m-2", body=json.dumps({"job_id": api.submit()}))
    event["Records"].append(good)
    response = stack.functions.get("DispatchFunction").invoke(event)
    assert response == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}


def test_the_webhook_sample_with_its_placeholder_token_is_refused(stack):
    response = stack.functions.get("WebhookFunction").invoke(load("webhook_runpod_completed.json"))
    assert response["statusCode"] in (401, 404)
    assert json.loads(response["body"])["error"]["code"] in ("unauthorized", "not_found")
