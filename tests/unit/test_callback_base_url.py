"""Where RunPod posts results: a configured URL wins; on AWS the stack's URL comes from SSM (the
template cannot hand a function the URL of the HttpApi that integrates it: circular dependency)."""
import boto3
import pytest

from stillhouse import aws, secrets
from stillhouse.config import get_settings


@pytest.fixture
def fresh(monkeypatch, aws_mock):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for cached in (get_settings.cache_clear, aws.reset, secrets.reset):
        cached()
    yield monkeypatch
    for cached in (get_settings.cache_clear, aws.reset, secrets.reset):
        cached()


def test_a_configured_base_url_is_used_as_is(fresh):
    fresh.setenv("STILLHOUSE_CALLBACK_BASE_URL", "https://hooks.example.com/")
    assert secrets.callback_base_url() == "https://hooks.example.com"


def test_without_one_the_stacks_ssm_parameter_is_read(fresh):
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name="/stillhouse/dev/callback-base-url", Value="https://abc.execute-api.us-east-1.amazonaws.com", Type="String")
    fresh.setenv("STILLHOUSE_CALLBACK_BASE_URL", "")
    fresh.setenv("STILLHOUSE_CALLBACK_BASE_URL_PARAMETER", "/stillhouse/dev/callback-base-url")
    assert secrets.callback_base_url() == "https://abc.execute-api.us-east-1.amazonaws.com"


def test_with_neither_the_error_names_both_settings(fresh):
    fresh.setenv("STILLHOUSE_CALLBACK_BASE_URL", "")
    fresh.delenv("STILLHOUSE_CALLBACK_BASE_URL_PARAMETER", raising=False)
    with pytest.raises(RuntimeError, match="STILLHOUSE_CALLBACK_BASE_URL_PARAMETER"):
        secrets.callback_base_url()
