"""The one clients factory picks AWS, an endpoint URL (moto, LocalStack's Lambda runtime) or LocalStack
through localstack-client's sessions, by configuration alone. No request is sent: clients are only built."""
import pytest

from stillhouse import aws


@pytest.fixture
def fresh(monkeypatch):
    for var in ("AWS_ENDPOINT_URL", "STILLHOUSE_LOCALSTACK", "LOCALSTACK_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    aws.reset()
    yield monkeypatch
    aws.reset()


def test_localstack_clients_come_from_localstack_client_at_localstack_host(fresh):
    fresh.setenv("STILLHOUSE_LOCALSTACK", "true")
    fresh.setenv("LOCALSTACK_HOST", "127.0.0.1:4599")
    sqs = aws.client("sqs")
    assert sqs.meta.endpoint_url == "http://127.0.0.1:4599"
    assert sqs._request_signer._credentials.access_key == "accesskey"  # localstack-client's test credentials
    assert aws.table("jobs").meta.client.meta.endpoint_url == "http://127.0.0.1:4599"


def test_an_endpoint_url_wins_over_the_localstack_flag(fresh):
    fresh.setenv("STILLHOUSE_LOCALSTACK", "true")
    fresh.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5001")
    assert aws.client("dynamodb").meta.endpoint_url == "http://127.0.0.1:5001"


def test_without_either_it_is_aws(fresh):
    assert aws.client("sqs").meta.endpoint_url == "https://sqs.us-east-1.amazonaws.com"
