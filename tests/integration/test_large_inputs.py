"""A job with a large input, end to end on the embedded stack: the input is kept in S3 at submission, the
job's item stays small on every write, and the worker still gets the whole input (the echo task answers
with what it was sent). The same for a long chat through the OpenAI-compatible route."""
import json

import openai

from stillhouse import aws
from stillhouse.config import get_settings
from stillhouse.outputs.spill import input_key

#: What a finished echo job's item may weigh beside its output, whatever its input weighs.
ITEM_BOUND = 3_000


def item_without_output(job_id):
    item = aws.table(get_settings().jobs_table).get_item(Key={"id": job_id}, ConsistentRead=True)["Item"]
    item.pop("output", None)
    return item


def kept_input(job_id):
    body = aws.client("s3").get_object(Bucket=get_settings().results_bucket, Key=input_key(job_id))["Body"].read()
    return json.loads(body)


def test_a_job_with_a_100_kb_input_completes_with_a_small_item_and_the_whole_input_reaches_the_worker(api):
    sent = {"text": "short", "blob": "0123456789" * 10_240}  # 100 KB
    job_id = api.submit("echo", sent)
    job = api.wait(job_id)
    assert job["status"] == "COMPLETED", job
    assert job["output"]["echo"]["blob"] == sent["blob"]  # what the worker was given
    assert job["input"] == sent  # the job's view shows its input as before
    item = item_without_output(job_id)
    assert "input" not in item and len(json.dumps(item, default=str)) < ITEM_BOUND
    assert kept_input(job_id) == sent


def test_a_long_chat_through_the_openai_route_is_kept_in_s3_and_answered(stack, api):
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.dev_api_key, max_retries=0, timeout=60)
    long = "first " + "context " * 3_000  # 24 KB of chat context, within the prompt's bound
    raw = client.chat.completions.with_raw_response.create(
        model="echo-a", messages=[{"role": "user", "content": long}], max_tokens=4)
    job_id = raw.headers["x-stillhouse-job-id"]
    assert raw.parse().choices[0].message.content == "echo-a says: first context"
    assert kept_input(job_id)["messages"][0]["content"] == long
    assert "input" not in item_without_output(job_id)
