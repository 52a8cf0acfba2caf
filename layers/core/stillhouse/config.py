"""One settings model for every function, read from the environment (template.yaml sets it).

The routing policy and breaker thresholds are here too, so reading settings imports no behaviour."""
from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Policy(StrEnum):
    WEIGHTED = "weighted"  # random, proportional to spec.weight
    LEAST_OUTSTANDING = "least_outstanding"  # fewest in flight per unit of weight
    ADAPTIVE = "adaptive"  # learned: weight x success^a / latency^b, plus exploration


class RouteSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Policy = Policy.ADAPTIVE
    exploration: float = Field(default=0.05, ge=0, le=1)  # adaptive: share of uniform first picks
    success_exponent: float = Field(default=2.0, ge=0)
    # 2, not 1: at 1 a 5x slower endpoint would still get 1/6 of the traffic.
    latency_exponent: float = Field(default=2.0, ge=0)
    latency_floor_ms: float = Field(default=50.0, gt=0)  # below this, faster is not better
    # Panic (Envoy's panic threshold): when fewer than this share of the endpoints that could take a job
    # pass their breakers, route to all of them. A breaker shifts traffic to healthier endpoints; when
    # there are none, it must not turn a 50% error rate into a 100% outage. 0 disables.
    panic_below: float = Field(default=0.5, ge=0, le=1)
    # How old the endpoint states a dispatcher routes on may be: within it, a batch routes on what its
    # process knows (its own writes included) instead of reading the table again. Other instances' news
    # (a breaker opened, their in-flight jobs) reach it this much later. 0: read for every batch.
    state_max_age_s: float = Field(default=1.0, ge=0, le=60)


class BreakerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    consecutive_failures: int = Field(default=5, ge=1)
    window_size: int = Field(default=20, ge=1, le=500)  # outcomes kept for the failure rate
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    min_volume: int = Field(default=10, ge=1)  # outcomes in the window before the rate counts
    cooldown_s: float = Field(default=30.0, gt=0)
    cooldown_growth: float = Field(default=2.0, ge=1)  # per failed probe round
    max_cooldown_s: float = Field(default=300.0, gt=0)
    half_open_probes: int = Field(default=3, ge=1)  # probes allowed at once: one unlucky probe must not re-open it
    half_open_successes: int = Field(default=1, ge=1)  # probe successes needed to close
    probe_timeout_s: float = Field(default=300.0, gt=0)  # an unreported probe frees its slot after this
    capacity_backoff_s: float = Field(default=5.0, ge=0)  # 429 without Retry-After
    ema_alpha: float = Field(default=0.2, gt=0, le=1)
    baseline_alpha: float = Field(default=0.02, gt=0, le=1)
    anomaly_factor: float = Field(default=3.0, ge=0)  # 0 disables the latency check
    # ...and the EMA must also exceed the baseline by this much: queue delay under a burst swings
    # short jobs by a few hundred ms, which is load (routing's business), not a sick endpoint.
    anomaly_min_excess_ms: float = Field(default=2000.0, ge=0)
    min_samples: int = Field(default=20, ge=1)  # outcomes since close before predictive checks
    success_rate_floor: float = Field(default=0.25, ge=0, lt=1)  # 0 disables


class InputLimits(BaseModel):
    """Per-task bounds checked at the API (422 naming the field), so that a job the GPU worker would refuse
    is refused before it is queued and billed. The worker's own limits (gpu_handler/settings.py and
    schemas.py) are the ceiling: tests/unit/test_input_limits.py fails if a bound here exceeds the worker's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(default=2048, ge=1)  # the worker's MAX_NEW_TOKENS_LIMIT
    prompt_chars: int = Field(default=32_000, ge=1)  # a prompt, or all of a chat's messages together
    messages: int = Field(default=256, ge=1)
    stop_strings: int = Field(default=16, ge=0)  # the worker's `stop` list
    embed_texts: int = Field(default=512, ge=1)  # the worker's MAX_EMBED_TEXTS
    text_chars: int = Field(default=32_000, ge=1)  # each text of an embed job
    council_models: int = Field(default=8, ge=2, le=8)  # 8: CouncilInput's ceiling
    sleep_s: float = Field(default=60.0, ge=0)  # the worker's MAX_SLEEP_S
    params_bytes: int = Field(default=16_384, ge=2)  # `params` as compact JSON
    # Nesting of the request body. DynamoDB refuses items nested deeper than 32 levels, and a job keeps
    # its input two levels down; very deep JSON would also exhaust the parser's recursion.
    json_depth: int = Field(default=24, ge=2, le=30)


class TenantLimits(BaseModel):
    """A tenant's quotas; each tenant's own values override these defaults field by field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int = Field(default=600, ge=1, le=1_000_000)  # GPU jobs submitted, a token bucket
    stream_polls_per_minute: int = Field(default=600, ge=1, le=1_000_000)  # GET /v1/jobs/{id}/stream calls
    max_in_flight: int = Field(default=100, ge=1, le=5_000)  # jobs not yet ended
    max_council_models: int = Field(default=4, ge=2, le=8)
    # Lines in this tenant's batches that have not ended (the Batch API): a batch that would pass it is 429.
    max_batch_lines: int = Field(default=200_000, ge=1, le=10_000_000)
    allow_high_priority: bool = False
    # The deadline of this tenant's jobs that name none (`deadline_s`): submitted -> finished, in seconds.
    deadline_s: int = Field(default=86_400, ge=5, le=86_400)


class OpenAISettings(BaseModel):
    """The OpenAI-compatible front door (docs/openai.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # How long a non-streamed call waits for its job. API Gateway's HTTP API gives up after 30 s, and the
    # API function's own timeout is 30 s: past this bound the caller gets 504 naming the job, which goes on.
    wait_s: float = Field(default=25.0, gt=0, le=900)
    # How long a stream may run before it ends with an error event naming the job (the streaming
    # front's function timeout bounds it too).
    stream_max_s: float = Field(default=600.0, gt=0, le=900)
    # Between two looks at a job while waiting: the first looks come quickly (short jobs), then this.
    poll_s: float = Field(default=0.25, gt=0, le=5)
    # `model: "council:<preset>"`: named councils, each a list of member models (the first chairs
    # unless `council_chair` says otherwise). `model: "council"` is the default council (council_models).
    council_presets: dict[str, list[str]] = Field(default_factory=dict)


class BatchSettings(BaseModel):
    """The Batch API (docs/batches.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # OpenAI's limits for a batch input file.
    file_max_lines: int = Field(default=50_000, ge=1, le=50_000)
    file_max_bytes: int = Field(default=200 * 1024 * 1024, ge=1, le=200 * 1024 * 1024)
    # Lines per chunk (one RunPod job, one GPU micro-batch), and the most bytes of input a chunk carries.
    chunk_lines: int = Field(default=128, ge=1, le=512)
    chunk_max_bytes: int = Field(default=1_000_000, ge=10_000, le=5_000_000)
    # What a "24h" completion window lasts here: tests shorten it to see a batch expire.
    window_s: float = Field(default=86_400.0, gt=0, le=86_400)
    # The lane: a chunk starts on an endpoint only while the endpoint's jobs in flight stay under this share
    # of its max_in_flight, leaving the rest to interactive jobs. A chunk put back this many times goes
    # anyway (so a batch is never starved), and waits `defer_s` between tries.
    lane_share: float = Field(default=0.5, gt=0, le=1)
    # ...and never while it has this many or more in flight, whatever its max_in_flight says: RunPod serves an
    # endpoint's queue first come first served, so chunks queued there wait in front of interactive jobs.
    lane_slots: int = Field(default=8, ge=1, le=10_000)
    lane_defers: int = Field(default=5, ge=0, le=100)
    defer_s: int = Field(default=2, ge=0, le=900)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STILLHOUSE_", env_nested_delimiter="__", extra="ignore")

    region: str = Field(default="us-east-1", validation_alias="AWS_REGION")
    # Where AWS is: empty = real AWS; a URL = LocalStack or the embedded moto server.
    aws_endpoint_url: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL")
    localstack: bool = False

    jobs_table: str = "stillhouse-jobs"
    api_keys_table: str = "stillhouse-api-keys"
    tenants_table: str = "stillhouse-tenants"
    # How long an API key (and its tenant's limits) is trusted from this process's memory: a revoked key
    # or changed limits take effect within this many seconds on every warm function.
    api_key_cache_ttl_s: float = Field(default=30.0, ge=0)
    # How long a digest found in no key is remembered as unknown: a flood of wrong keys costs one read per
    # distinct key per this time. Short: only a key someone guessed before it was minted waits this long.
    api_key_negative_cache_ttl_s: float = Field(default=10.0, ge=0)
    # Live (neither revoked nor expired) keys a tenant may hold at once: a stolen key cannot mint without end.
    max_keys_per_tenant: int = Field(default=20, ge=1)
    # Lifetime of a minted key when its minter gives none; unset: such keys never expire.
    api_key_default_expiry_s: int | None = Field(default=None, ge=1)
    # Per-tenant webhook secrets (delivery/tenant_secrets.py); a rotated-out secret still signs this long.
    webhook_secrets_table: str = "stillhouse-webhook-secrets"
    webhook_secret_grace_s: int = 86_400
    # How long the delivery function signs with a tenant's secrets as read (a rotation reaches deliveries
    # within this; the previous secret signs for the whole grace period anyway).
    webhook_secret_cache_ttl_s: float = Field(default=60.0, ge=0)
    config_table: str = "stillhouse-config"
    endpoint_state_table: str = "stillhouse-endpoint-state"
    idempotency_table: str = "stillhouse-idempotency"
    cache_table: str = "stillhouse-result-cache"
    cache_ttl_s: int = Field(default=86_400, ge=1, le=31_536_000)  # live (live_config.py)
    results_bucket: str = ""  # outputs over ~350 KB go here (DynamoDB items stop at 400 KB)
    # How long a finished job is kept: its terminal write sets `expires_at` this many days on, and the
    # jobs table's TTL removes it then (the results bucket's lifecycle rule matches). 0: kept forever.
    job_retention_days: int = Field(default=0, ge=0, le=3650)
    # How long a presigned `output_url` works; S3's SigV4 links stop at 7 days.
    output_link_s: int = Field(default=3600, ge=60, le=604_800)
    high_queue_url: str = ""
    normal_queue_url: str = ""
    high_dlq_url: str = ""
    normal_dlq_url: str = ""
    batch_queue_url: str = ""  # chunks of batches: the dispatch function's lane that yields to the others
    batch_dlq_url: str = ""
    batch_control_queue_url: str = ""  # a batch's own steps: start (validate, plan) and finish (assemble)
    batches_table: str = "stillhouse-batches"
    max_receive_count: int = 3
    # Callers' webhooks: a queue of notices and the delays between tries (Standard Webhooks' schedule;
    # the queue's maxReceiveCount in template.yaml is one more than the number of delays).
    delivery_queue_url: str = ""
    delivery_dlq_url: str = ""
    webhook_retry_schedule_s: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0])
    # One try's deadline, from connecting to the answer's status (delivery/webhooks.py GuardedPost). A batch's
    # tries run at once, so a batch ends within about this, well inside the function's Timeout (30 s).
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=20)
    # Callers' webhooks may be http:// and on loopback (never private ranges): for a stack whose callers
    # listen on 127.0.0.1, the embedded one. Off everywhere else (delivery/destinations.py).
    webhook_allow_loopback: bool = False
    # Who answers the webhook guard's lookups: "system" (the host's resolver), or "loopback-only", where
    # localhost and *.localhost are 127.0.0.1 and every other name is refused without a lookup. Tests and
    # benchmarks use the latter: names they generate (fuzzing: "https://0.com") must never become DNS
    # queries that leave the machine.
    webhook_resolver: Literal["system", "loopback-only"] = "system"
    sweep_after_s: float = 300  # a live job not in flight on RunPod is looked at this long after its last news
    # A job in flight on RunPod is looked at once it should have finished (jobs/deadlines.py): its
    # expected time times settle_factor, at least settle_floor_s, so a lost webhook costs seconds.
    settle_floor_s: float = Field(default=20.0, gt=0)
    settle_factor: float = Field(default=3.0, ge=1)
    # The shortest executionTimeout RunPod is given per job (jobs/deadlines.py run_timeout_s): a worker that
    # hangs on a short job is given up on after this, not after execution_timeout_ms.
    run_timeout_floor_s: float = Field(default=30.0, ge=5)
    # Sweep rounds per scheduled (1-minute) run: one every sweep_every_s seconds.
    sweep_every_s: float = Field(default=60.0, ge=5, le=60)
    in_queue_give_up_s: float = 3600  # a job not dispatched this long after its submission ends FAILED
    settle_dlqs: bool = True  # each sweep: DLQ messages of waiting jobs go back, the rest are dropped

    # Workflows (Step Functions): the ARNs are set only on the functions that start or resume them.
    recovery_state_machine_arn: str = ""
    council_state_machine_arn: str = ""
    workflow_mode: str = Field(default="on_failure", pattern="^(on_failure|always)$")  # live
    max_attempts: int = Field(default=5, ge=1, le=50)  # live
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
    # The keyring RunPod callback tokens are minted with (runpod/callback_urls.py), and how long a token lives.
    callback_key_secret: str = "stillhouse/callback-key"
    callback_token_ttl_s: int = 26 * 3600
    parameters_max_age_s: int = 5
    # Routing policy and breaker thresholds (docs/routing.md), e.g. STILLHOUSE_ROUTE__POLICY=weighted,
    # STILLHOUSE_BREAKER__COOLDOWN_S=10; both live: `PUT /v1/config` overrides them without a redeploy.
    route: RouteSettings = Field(default_factory=RouteSettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    # The OpenAI-compatible routes, e.g. STILLHOUSE_OPENAI__WAIT_S=20.
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    # The Batch API, e.g. STILLHOUSE_BATCH__CHUNK_LINES=32.
    batch: BatchSettings = Field(default_factory=BatchSettings)

    # Prices of the cost estimate each attempt's metrics carry (docs/cost.md): a GPU-second of the
    # endpoints' workers (RunPod flex, 24 GB) and the AWS share of a fast-path job.
    gpu_usd_per_s: float = Field(default=0.00019, ge=0)
    aws_usd_per_job: float = Field(default=0.0000172, ge=0)

    max_body_bytes: int = 1_048_576
    input_limits: InputLimits = Field(default_factory=InputLimits)
    tenant_limits: TenantLimits = Field(default_factory=TenantLimits)
    # Where an admin may point an endpoint: the host of runpod_base_url, plus these (https only).
    endpoint_hosts: list[str] = Field(default_factory=list)
    # Where per-endpoint RunPod keys live: an endpoint's secret_ref must name a secret under this prefix and
    # nothing else of ours (template.yaml sets stillhouse/{Stage}/runpod/, and grants only that prefix).
    runpod_secret_prefix: str = Field(default="stillhouse/runpod/", pattern=r"^[A-Za-z0-9/_+=.@-]+/$")
    list_limit_max: int = 100

    # The dashboard's cost estimate per job: the router's own AWS calls (measured by
    # benchmarks/overhead.py, see benchmarks/README.md) plus GPU time at this price per GPU-second.
    cost_router_usd_per_job: float = 17.17e-6
    cost_gpu_usd_per_s: float = 0.00019


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
