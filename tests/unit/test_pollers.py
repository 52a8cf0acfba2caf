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


def test_a_mapping_runs_as_many_batches_at_once_as_its_maximum_concurrency_and_the_stack_allow():
    """StackOptions.mapping_concurrency caps each mapping's ScalingConfig.MaximumConcurrency; a mapping
    without one (Lambda's own scaling) takes the cap. The default, 1, is one batch at a time everywhere."""
    from stillhouse_local.stack import REPO_ROOT, batches_at_once
    from stillhouse_local.template import translate

    local = translate(REPO_ROOT / "template.yaml")
    by_queue = {m.queue: m for m in local.queue_mappings}

    def at_once(queue, cap, parameters=None):
        return batches_at_once(local, by_queue[queue], parameters or {}, cap)

    assert {q: at_once(q, 1) for q in by_queue} == {q: 1 for q in by_queue}
    # The job queues: DispatchMaxConcurrency (20 by default); the batch lane: BatchDispatchMaxConcurrency (2).
    dispatch = [m.queue for m in local.queue_mappings if m.function == "DispatchFunction"]
    batch_lane = [q for q in dispatch if by_queue[q].maximum_concurrency == {"Ref": "BatchDispatchMaxConcurrency"}]
    assert len(dispatch) == 3 and len(batch_lane) == 1
    assert {q: at_once(q, 4) for q in dispatch} == {q: 2 if q in batch_lane else 4 for q in dispatch}
    assert at_once(dispatch[0] if dispatch[0] not in batch_lane else dispatch[1], 50) == 20
    assert at_once(batch_lane[0], 50, {"BatchDispatchMaxConcurrency": "3"}) == 3
    assert at_once("WebhookDeliveryQueue", 7) == 7  # no ScalingConfig: only the stack's cap
