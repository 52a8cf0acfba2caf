"""One settings model for every function, read from the environment (template.yaml sets it)."""
from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from stillhouse.routing.breaker import BreakerSettings
from stillhouse.routing.router import RouteSettings


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STILLHOUSE_", env_nested_delimiter="__", extra="ignore")

    region: str = Field(default="us-east-1", validation_alias="AWS_REGION")
    # Where AWS is: empty = real AWS; a URL = LocalStack or the embedded moto server.
    aws_endpoint_url: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL")
    localstack: bool = False

    jobs_table: str = "stillhouse-jobs"
    api_keys_table: str = "stillhouse-api-keys"
    config_table: str = "stillhouse-config"
    endpoint_state_table: str = "stillhouse-endpoint-state"
    idempotency_table: str = "stillhouse-idempotency"
    cache_table: str = "stillhouse-result-cache"
    cache_ttl_s: int = 86_400
    results_bucket: str = ""  # outputs over ~350 KB go here (DynamoDB items stop at 400 KB)
    high_queue_url: str = ""
    normal_queue_url: str = ""
    high_dlq_url: str = ""
    normal_dlq_url: str = ""
    max_receive_count: int = 3
    sweep_after_s: float = 300

    # Workflows (Step Functions): the ARNs are set only on the functions that start or resume them.
    recovery_state_machine_arn: str = ""
    council_state_machine_arn: str = ""
    workflow_mode: str = Field(default="on_failure", pattern="^(on_failure|always)$")
    max_attempts: int = 5
    council_models: list[str] = Field(default_factory=list)  # default council when a job names none
    council_chair: str | None = None

    # RunPod: base of the hosted API and the secret that holds the API key.
    runpod_base_url: str = "https://api.runpod.ai/v2"
    runpod_api_key_secret: str = "stillhouse/runpod-api-key"
    runpod_timeout_s: float = 10.0
    execution_timeout_ms: int = 600_000
    job_ttl_ms: int = 86_400_000

    # Our public base URL: RunPod posts results to {callback_base_url}/callbacks/runpod/{job_id}.
    # Empty on AWS when the stack's own API URL is used: it is then read from this SSM parameter
    # (template.yaml: a function cannot refer to the HttpApi that integrates it).
    callback_base_url: str = "http://127.0.0.1:3000"
    callback_base_url_parameter: str = ""
    signing_secret_name: str = "stillhouse/signing-secret"
    parameters_max_age_s: int = 5
    # Routing policy and breaker thresholds (docs/routing.md), e.g. STILLHOUSE_ROUTE__POLICY=weighted,
    # STILLHOUSE_BREAKER__COOLDOWN_S=10.
    route: RouteSettings = Field(default_factory=RouteSettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)

    max_body_bytes: int = 1_048_576
    list_limit_max: int = 100


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
