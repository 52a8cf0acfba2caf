"""Secrets and run-time parameters read through Powertools Parameters (cached with a TTL, so a
rotation or a changed value needs no redeploy)."""
from __future__ import annotations

from functools import lru_cache

from aws_lambda_powertools.utilities.parameters import SecretsProvider, SSMProvider

from stillhouse import aws
from stillhouse.config import get_settings


@lru_cache(maxsize=1)
def _provider() -> SecretsProvider:
    return SecretsProvider(boto3_client=aws.client("secretsmanager"))


def get_secret(name: str, *, refresh: bool = False) -> str:
    """`name`'s value, cached for 5 minutes; `refresh` reads it again now (after a rotation was noticed)."""
    value = _provider().get(name, max_age=300, force_fetch=refresh)
    return value if isinstance(value, str) else value.decode()


def callback_keyring(refresh: bool = False) -> str:
    """The keyring RunPod callback tokens are minted and verified with, as stored (never shared with anyone;
    read by stillhouse.runpod.callback_urls.Keyring.parse)."""
    return get_secret(get_settings().callback_key_secret, refresh=refresh)


def runpod_api_key(secret_ref: str | None = None) -> str:
    return get_secret(secret_ref or get_settings().runpod_api_key_secret)


@lru_cache(maxsize=1)
def _ssm() -> SSMProvider:
    return SSMProvider(boto3_client=aws.client("ssm"))


def callback_base_url() -> str:
    """Where RunPod posts our results: configured directly, else the stack's SSM parameter."""
    settings = get_settings()
    if settings.callback_base_url:
        return settings.callback_base_url.rstrip("/")
    if not settings.callback_base_url_parameter:
        raise RuntimeError("set STILLHOUSE_CALLBACK_BASE_URL or STILLHOUSE_CALLBACK_BASE_URL_PARAMETER")
    return str(_ssm().get(settings.callback_base_url_parameter, max_age=300)).rstrip("/")


def reset() -> None:
    _provider.cache_clear()
    _ssm.cache_clear()
