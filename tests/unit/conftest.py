"""Unit tier: the core's rules in-process. Pure and fast: no subprocesses, no servers, no real models;
AWS is moto's in-memory mock (`aws_mock` per test, `module_dynamodb` per module), tables are built from
template.yaml (tests/support/tables.py). Needs only the dev extra. Takes about 30 s on 2 cores.
Run: `make test-unit`.
"""
import boto3
import pytest
from moto import mock_aws

from tests.support.tables import create_jobs_table, create_keys_table


@pytest.fixture
def aws_mock(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield


@pytest.fixture
def jobs_table(aws_mock):
    return create_jobs_table(boto3.resource("dynamodb", region_name="us-east-1"), "jobs")


@pytest.fixture
def keys_table(aws_mock):
    return create_keys_table(boto3.resource("dynamodb", region_name="us-east-1"), "keys")


@pytest.fixture(scope="module")
def module_dynamodb():
    """One moto backend for a whole module (starting one costs ~0.3 s); tests empty their tables."""
    with pytest.MonkeyPatch.context() as mp:
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            mp.setenv(var, "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            yield boto3.resource("dynamodb", region_name="us-east-1")
