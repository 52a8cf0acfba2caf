"""Secrets read through Powertools Parameters (cached with a TTL, so rotation needs no redeploy)."""
from __future__ import annotations

from functools import lru_cache

from aws_lambda_powertools.utilities.parameters import SecretsProvider

from stillhouse import aws
from stillhouse.config import get_settings


@lru_cache(maxsize=1)
def _provider() -> SecretsProvider:
    return SecretsProvider(boto3_client=aws.client("secretsmanager"))


def get_secret(name: str) -> str:
    value = _provider().get(name, max_age=300)
    return value if isinstance(value, str) else value.decode()


def signing_secret() -> str:
    return get_secret(get_settings().signing_secret_name)


def runpod_api_key(secret_ref: str | None = None) -> str:
    return get_secret(secret_ref or get_settings().runpod_api_key_secret)


def reset() -> None:
    _provider.cache_clear()
