"""The same store and queue code against LocalStack, where one is reachable (skipped elsewhere).

Run: `localstack start -d` then `make test` (or LOCALSTACK_URL=http://host:4566 pytest tests/localstack).
"""
import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest

from stillhouse import aws
from stillhouse.jobs.store import JobStore, now_iso
from stillhouse.jobs.model import Job, JobStatus, Priority, Task
from stillhouse.jobs.queue import JobQueue, job_id_of
from tests.support.tables import create_jobs_table

URL = os.environ.get("LOCALSTACK_URL", "http://localhost:4566")


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=0.5):
            return True
    except OSError:
        return False


pytestmark = [
    pytest.mark.localstack,
    pytest.mark.skipif(not reachable(URL), reason=f"no LocalStack at {URL}"),
]


@pytest.fixture
def localstack(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", URL)
    aws.reset()
    yield
    aws.reset()


def test_job_store_writes_are_conditional_on_localstack(localstack):
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    ddb = aws.client("dynamodb")
    create_jobs_table(ddb, name)  # the template's JobsTable schema, indexes included
    ddb.get_waiter("table_exists").wait(TableName=name)
    store = JobStore(aws.table(name))
    at = now_iso()
    store.create(Job(id="j", tenant_id="t", task=Task.ECHO, status=JobStatus.IN_QUEUE, input={},
                     created_at=at, updated_at=at, events=[]))
    store.transition("j", JobStatus.COMPLETED, actor="test", fields={"output": {"x": 1.5}})
    assert store.get("j").output == {"x": 1.5}
    ddb.delete_table(TableName=name)


def test_queue_round_trip_on_localstack(localstack):
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName=f"jobs-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    JobQueue(sqs, {Priority.NORMAL: url, Priority.HIGH: url}).send("job-1", Priority.NORMAL)
    message = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)["Messages"][0]
    assert job_id_of(message["Body"]) == "job-1"
    sqs.delete_queue(QueueUrl=url)
