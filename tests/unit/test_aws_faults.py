"""AWS faults for tests and the soak (stillhouse_local.aws_faults): off by default, seeded, counted per kind,
raised as the ClientError AWS would answer, above botocore's retries; and the one place an AWS error becomes
a 503 (stillhouse.aws.unavailable), by its code."""
import pytest
from botocore.exceptions import ClientError
from stillhouse_local.aws_faults import STANDARD_OPERATIONS, AwsFaults

from stillhouse import aws
from stillhouse.errors import AwsUnavailable


@pytest.fixture
def clients(aws_mock, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    aws.reset()
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="results")
    yield sqs, url, s3
    aws.reset()


def send(sqs, url):
    return sqs.send_message(QueueUrl=url, MessageBody="{}")


def test_nothing_is_injected_until_installed_nor_after_uninstall(clients):
    sqs, url, _ = clients
    faults = AwsFaults({("sqs", "SendMessage"): 1.0})
    assert not faults.installed
    send(sqs, url)  # not installed: a rate alone changes nothing
    with faults, pytest.raises(ClientError):
        send(sqs, url)
    send(sqs, url)  # uninstalled: its handlers are off the client, though its rate is still 1
    assert faults.total() == 1
    assert faults.calls() == {"sqs.SendMessage": 1}  # only the installed call was even looked at


def test_a_fault_is_the_error_aws_would_answer_with_its_code_and_status(clients):
    sqs, url, s3 = clients
    with AwsFaults({("s3", "PutObject"): 1.0, ("sqs", "SendMessage"): 1.0}) as faults:
        with pytest.raises(ClientError) as put:
            s3.put_object(Bucket="results", Key="k", Body=b"x")
        with pytest.raises(ClientError) as sent:
            send(sqs, url)
        assert s3.list_objects_v2(Bucket="results")["KeyCount"] == 0
    assert put.value.response["Error"]["Code"] in ("SlowDown", "ServiceUnavailable")
    assert put.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert sent.value.operation_name == "SendMessage"
    assert sorted(faults.counts()) == sorted(
        [f"s3.PutObject/{put.value.response['Error']['Code']}", f"sqs.SendMessage/{sent.value.response['Error']['Code']}"])


def test_dynamodb_throttles_raise_the_modelled_exception_on_every_operation_with_a_star(clients, jobs_table):
    table = aws.table("jobs")
    with AwsFaults({("dynamodb", "*"): 1.0}, errors={"dynamodb": (("ProvisionedThroughputExceededException", 400),)}):
        with pytest.raises(table.meta.client.exceptions.ProvisionedThroughputExceededException) as raised:
            table.put_item(Item={"id": "j1"})
        with pytest.raises(ClientError):
            table.get_item(Key={"id": "j1"})
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "Item" not in table.get_item(Key={"id": "j1"})  # the faulted write never reached the table


def test_a_fault_is_injected_above_botocores_retries_it_is_not_retried(clients):
    sqs, url, _ = clients
    before = aws.api_calls[("sqs", "SendMessage")]
    faults = AwsFaults({("sqs", "SendMessage"): 1.0}, errors={"sqs": (("ThrottlingException", 400),)})
    with faults, pytest.raises(ClientError) as raised:
        send(sqs, url)
    # One draw for one call: botocore's standard mode (3 attempts) never saw a throttle to retry.
    assert faults.calls() == {"sqs.SendMessage": 1}
    assert raised.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    assert aws.api_calls[("sqs", "SendMessage")] == before  # nothing went to SQS


def test_rates_are_shares_of_calls_and_a_seed_repeats_the_same_faults(clients):
    def pattern(seed, rate=0.3, n=2000):
        faults = AwsFaults({("dynamodb", "PutItem"): rate}, seed=seed)
        return [faults.draw("dynamodb", "PutItem") is not None for _ in range(n)], faults

    first, faults = pattern(seed=1)
    again, _ = pattern(seed=1)
    other, _ = pattern(seed=2)
    assert first == again
    assert first != other
    assert 0.25 < sum(first) / len(first) < 0.35
    assert faults.total() == sum(first)
    assert set(faults.counts()) == {"dynamodb.PutItem/ProvisionedThroughputExceededException",
                                    "dynamodb.PutItem/ThrottlingException"}


def test_each_operation_draws_on_its_own_so_others_do_not_shift_its_faults():
    alone = AwsFaults({("sqs", "SendMessage"): 0.5}, seed=3)
    mixed = AwsFaults({("sqs", "SendMessage"): 0.5, ("sqs", "DeleteMessage"): 0.5}, seed=3)
    sends = []
    for _ in range(200):
        mixed.draw("sqs", "DeleteMessage")
        sends.append(mixed.draw("sqs", "SendMessage") is not None)
    assert sends == [alone.draw("sqs", "SendMessage") is not None for _ in range(200)]


def test_rates_are_checked_and_zero_or_clear_turns_them_off():
    faults = AwsFaults.standard(0.1)
    assert {faults.rate(s, o if o != "*" else "Query") for s, o in STANDARD_OPERATIONS} == {0.1}
    assert faults.rate("sqs", "ReceiveMessage") == 0.0
    faults.set_rates({("sqs", "SendMessage"): 0})
    assert faults.rate("sqs", "SendMessage") == 0.0
    faults.clear()
    assert faults.rate("dynamodb", "PutItem") == 0.0
    with pytest.raises(ValueError):
        AwsFaults({("sqs", "SendMessage"): 1.5})
    with pytest.raises(ValueError):
        AwsFaults({("lambda", "Invoke"): 0.1})


@pytest.mark.parametrize("code,status", [("ProvisionedThroughputExceededException", 400), ("ThrottlingException", 400),
                                         ("SlowDown", 503), ("ServiceUnavailable", 503), ("InternalError", 500)])
def test_throttled_or_unavailable_aws_errors_are_a_503_with_retry_after(code, status):
    err = ClientError({"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                      "PutItem")
    busy = aws.unavailable(err)
    assert isinstance(busy, AwsUnavailable) and busy.retry_after_s >= 1
    wrapped = RuntimeError("Failed to save in progress record")  # as Powertools' idempotency wraps it
    wrapped.__cause__ = err
    assert isinstance(aws.unavailable(wrapped), AwsUnavailable)


def test_other_aws_errors_are_not_unavailable():
    refused = ClientError({"Error": {"Code": "ConditionalCheckFailedException", "Message": "Throttling"},
                           "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutItem")
    assert aws.unavailable(refused) is None  # the code decides, never the message
    assert aws.unavailable(ValueError("ThrottlingException")) is None
