"""The embedded SQS event source mapping behaves like Lambda's: batches of the template's BatchSize,
only the records a function reports as failed stay on the queue, a raised error keeps the whole batch."""
import boto3
import pytest
from stillhouse_local.pollers import QueuePoller


class Function:
    """Records each batch it gets and answers with what the test tells it to."""

    def __init__(self, answer=None):
        self.batches = []
        self.answer = answer

    def invoke(self, event):
        self.batches.append([r["body"] for r in event["Records"]])
        return self.answer(event) if callable(self.answer) else self.answer


class Registry:
    def __init__(self, fn):
        self.fn = fn

    def get(self, name):
        return self.fn


@pytest.fixture
def sqs(aws_mock):
    return boto3.client("sqs", region_name="us-east-1")


def queue_with(sqs, n):
    # Visibility 0: a message left on the queue is visible again at once, so the test can count it.
    url = sqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "0"})["QueueUrl"]
    for i in range(n):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    return url


def remaining(sqs, url):
    bodies = set()
    for _ in range(5):
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            bodies.add(m["Body"])
    return bodies


def poller(sqs, url, fn, batch_size=3, partial=True):
    return QueuePoller(sqs, url, "DispatchFunction", Registry(fn), batch_size=batch_size,
                       report_batch_item_failures=partial, wait_s=0)


def test_a_batch_is_at_most_batch_size_records(sqs):
    url = queue_with(sqs, 7)
    fn = Function()
    assert poller(sqs, url, fn, batch_size=3).poll_once() == 3
    assert len(fn.batches) == 1 and len(fn.batches[0]) == 3


def test_only_the_reported_failures_stay_on_the_queue(sqs):
    url = queue_with(sqs, 3)

    def fail_m1(event):
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "m1"]}

    poller(sqs, url, Function(fail_m1), batch_size=10).poll_once()
    assert remaining(sqs, url) == {"m1"}


def test_a_function_error_keeps_the_whole_batch(sqs):
    url = queue_with(sqs, 3)

    def crash(event):
        raise RuntimeError("boom")

    poller(sqs, url, Function(crash), batch_size=10).poll_once()
    assert remaining(sqs, url) == {"m0", "m1", "m2"}


def test_without_report_batch_item_failures_a_returned_list_is_ignored(sqs):
    """As on Lambda: the response is only read when the mapping enables ReportBatchItemFailures."""
    url = queue_with(sqs, 2)

    def fail_all(event):
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]}

    poller(sqs, url, Function(fail_all), batch_size=10, partial=False).poll_once()
    assert remaining(sqs, url) == set()
