import boto3
import pytest
from moto import mock_aws


@pytest.fixture
def aws_mock(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield


@pytest.fixture
def jobs_table(aws_mock):
    ddb = boto3.resource("dynamodb", region_name="us-east-1")
    return ddb.create_table(
        TableName="jobs",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "tenant_id", "AttributeType": "S"},
            {"AttributeName": "tenant_sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[{
            "IndexName": "ByTenant",
            "KeySchema": [{"AttributeName": "tenant_id", "KeyType": "HASH"},
                          {"AttributeName": "tenant_sk", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["status", "task", "created_at", "updated_at"]},
        }],
    )


def create_hash_table(ddb, name, key):
    """A table keyed by one string attribute (api keys, endpoint state, result cache)."""
    return ddb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
    )


@pytest.fixture
def keys_table(aws_mock):
    return create_hash_table(boto3.resource("dynamodb", region_name="us-east-1"), "keys", "key_hash")


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


def create_config_table(ddb, name):
    """The ConfigTable layout (Powertools Parameters' DynamoDBProvider: id + sk)."""
    return ddb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
    )


def create_state_table(ddb, name):
    """The EndpointStateTable layout (one item per endpoint name)."""
    return create_hash_table(ddb, name, "name")
