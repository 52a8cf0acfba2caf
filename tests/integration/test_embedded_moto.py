"""The embedded stack's moto server keeps DynamoDB's promise that a conditional write is atomic:
of several writers racing on the same condition, exactly one wins."""
import sys
import threading

import boto3
import pytest
from botocore.exceptions import ClientError
from stillhouse_local.moto_env import FAKE_CREDENTIALS, free_port, moto_server

TABLE = "moto-atomicity-check"  # moto's backends are per process: keep clear of the stack's tables


@pytest.fixture
def moto_url():
    port = free_port()
    server = moto_server("127.0.0.1", port)  # the embedded stack's, without touching its environment
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_racing_conditional_writes_have_exactly_one_winner(moto_url):
    credentials = {"aws_access_key_id": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                   "aws_secret_access_key": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
    make = lambda: boto3.client("dynamodb", endpoint_url=moto_url, region_name="us-east-1", **credentials)  # noqa: E731
    admin, writers = make(), [make() for _ in range(4)]
    admin.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                       KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                       AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a gap between check and write shows
    try:
        rounds_with_two_winners = 0
        for round_no in range(100):
            key = {"id": {"S": str(round_no)}}
            admin.put_item(TableName=TABLE, Item={**key, "status": {"S": "IN_QUEUE"}})
            winners = []

            def move(client, target):
                try:
                    client.update_item(TableName=TABLE, Key=key, UpdateExpression="SET #s = :t",
                                       ConditionExpression="#s = :q", ExpressionAttributeNames={"#s": "status"},
                                       ExpressionAttributeValues={":t": {"S": target}, ":q": {"S": "IN_QUEUE"}})
                    winners.append(target)
                except ClientError as err:
                    assert err.response["Error"]["Code"] == "ConditionalCheckFailedException"

            threads = [threading.Thread(target=move, args=(c, f"W{i}")) for i, c in enumerate(writers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(winners) >= 1
            stored = admin.get_item(TableName=TABLE, Key=key)["Item"]["status"]["S"]
            assert stored in winners
            rounds_with_two_winners += len(winners) > 1
    finally:
        sys.setswitchinterval(interval)
        admin.delete_table(TableName=TABLE)
    assert rounds_with_two_winners == 0
