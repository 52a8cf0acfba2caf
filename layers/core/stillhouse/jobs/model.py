"""Pydantic models and enums shared by every function: the vocabulary of the router."""
from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, StrictBool, WithJsonSchema

from stillhouse.errors import ErrorClass
from stillhouse.jobs.status import JobStatus


class Task(StrEnum):
    GENERATE = "generate"
    EMBED = "embed"
    COUNCIL = "council"
    ECHO = "echo"  # diagnostic
    SLEEP = "sleep"  # diagnostic
    BATCH = "batch"  # a chunk of a batch's lines (stillhouse.batches): made by the Batch API, never submitted


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    BATCH = "batch"  # the batches' lane (jobs.queue): yields to the others; never asked for by a caller


def _submittable(value: StrEnum) -> StrEnum:
    if value in (Task.BATCH, Priority.BATCH):
        raise ValueError(f"{value.value!r} is kept for the Batch API's own jobs; send lines through /v1/batches")
    return value


def _public(enum: type[StrEnum], internal: StrEnum) -> Any:
    """An enum as callers may use it: its internal member refused, and left out of the schema."""
    return Annotated[enum, AfterValidator(_submittable),
                     WithJsonSchema({"type": "string", "enum": [m.value for m in enum if m is not internal]})]


SubmittedTask = _public(Task, Task.BATCH)
SubmittedPriority = _public(Priority, Priority.BATCH)


#: The longest deadline a job may have: a day, as RunPod keeps a job (its default policy.ttl), and within
#: what one recovery workflow's history holds while it waits with backoff (statemachines/recovery.asl.json).
MAX_DEADLINE_S = 86_400

#: The longest model name a job may carry (the OpenAI routes' `model` is longer: it may name a council).
MODEL_NAME_CHARS = 200


class JobRequest(BaseModel):
    """Body of POST /v1/jobs."""

    model_config = ConfigDict(extra="forbid")

    task: SubmittedTask
    input: dict[str, Any]
    model: str | None = Field(default=None, max_length=MODEL_NAME_CHARS)
    params: dict[str, Any] = Field(default_factory=dict)
    priority: SubmittedPriority = Priority.NORMAL
    webhook: HttpUrl | None = None
    cache: StrictBool = False  # strict: the schema says boolean, so 0 and "false" are 422, not a guess
    # Seconds from submission to finish before the job ends TIMED_OUT (default: the tenant's `deadline_s`).
    deadline_s: int | None = Field(default=None, ge=5, le=MAX_DEADLINE_S)
    # Seconds from submission to start on a GPU before the job is dropped TIMED_OUT (RunPod's policy.ttl);
    # one past the deadline is the deadline (a job must finish by then whatever it waits for).
    ttl_s: int | None = Field(default=None, ge=5, le=MAX_DEADLINE_S)


class JobEvent(BaseModel):
    """One entry of a job's timeline, appended on every transition."""

    at: str
    status: JobStatus
    actor: str
    endpoint: str | None = None
    attempt: int = 0
    runpod_id: str | None = None  # the RunPod job an attempt started (IN_PROGRESS): its callbacks must name it
    detail: str | None = None


class WebhookDelivery(BaseModel):
    """One try of pushing the finished job to the caller's webhook."""

    at: str
    try_: int = Field(alias="try")
    status_code: int | None = None
    error: str | None = None
    next: str | None = None  # after a failed try: "retry", or "stopped: in the dead-letter queue"

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class CouncilMember(BaseModel):
    """One council member's RunPod job, kept in its job's `members` map while the workflow waits for it."""

    model: str
    stage: str
    endpoint: str
    runpod_id: str
    task_token: str  # resumes the workflow's waiting task: a capability, never shown to callers
    started_ms: int
    done: bool = False  # its result was taken (by its webhook, or by a retry that stopped it)


class Job(BaseModel):
    """A job as stored in the jobs table and shown to its tenant."""

    id: str
    tenant_id: str
    task: Task
    status: JobStatus
    input: dict[str, Any]
    # Where an input too big for the job's item is kept ({"bytes": n}; outputs.spill): the item holds this
    # in place of `input`, and the job store loads the input back when it reads the job. Never shown.
    input_ref: dict[str, Any] | None = Field(default=None, exclude=True)
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    webhook: str | None = None
    cache: bool = False
    cache_key: str | None = Field(default=None, exclude=True)
    cached_from: str | None = None  # the job whose result answered this one (cache: true)
    trace_id: str | None = None  # the W3C trace every hop of the job carries (stillhouse.telemetry.tracing)
    created_at: str
    updated_at: str
    deadline_at: str | None = None  # when the job ends TIMED_OUT if it has not finished (deadline_s)
    start_by: str | None = None  # when the job ends TIMED_OUT if it has not started on a GPU (ttl_s)
    endpoint: str | None = None
    runpod_id: str | None = None
    attempts: int = 0
    output: Any = None
    output_url: str | None = None  # presigned S3 URL when the output was too large to keep inline
    # Where such an output is kept ({"bytes": n}; outputs.spill): beside the output, never shown.
    output_ref: dict[str, Any] | None = Field(default=None, exclude=True)
    error: str | None = None
    error_class: ErrorClass | None = None
    # The workflow running this job, if any: an AWS resource name (account, region, stack), never shown.
    execution_arn: str | None = Field(default=None, exclude=True)
    # The Step Functions callback token of the attempt in flight: a capability, never shown to callers.
    task_token: str | None = Field(default=None, exclude=True)
    # The executionTimeout (s) RunPod was given for the attempt in flight (jobs.deadlines.run_timeout_s).
    run_timeout_s: int | None = Field(default=None, exclude=True)
    # The in-flight places the job holds on its tenant's quota ("{shard}*{weight}", tenants.quotas): given
    # back when it ends. Internal, never shown.
    quota_hold: str | None = Field(default=None, exclude=True)
    council: dict[str, Any] | None = None  # council jobs: answers so far, the label -> model map
    # Council members in flight (model, endpoint, RunPod id, task token): internal, never shown.
    members: dict[str, CouncilMember] | None = Field(default=None, exclude=True)
    events: list[JobEvent] = Field(default_factory=list)
    deliveries: list[WebhookDelivery] = Field(default_factory=list)  # tries of the caller's webhook

    @property
    def gpu_runs(self) -> int:
        """RunPod jobs started for this job: the attempts RunPod accepted (a refused /run ran no GPU)."""
        return sum(1 for e in self.events if e.status is JobStatus.IN_PROGRESS and e.runpod_id)


class CouncilInput(BaseModel):
    """`input` of a council job: one prompt to several models, then a chair synthesises."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)  # its length is bounded by settings (InputLimits.prompt_chars)
    models: list[str] | None = Field(default=None, min_length=2, max_length=8)
    chair: str | None = Field(default=None, min_length=1, max_length=200)
    rank: StrictBool = False
    max_new_tokens: int | None = Field(default=None, ge=1)  # at most InputLimits.max_new_tokens

    def gpu_jobs(self) -> int:
        """The RunPod jobs this council runs (stillhouse.workflows.council): one answer per member, one
        ranking per member when it ranks, and the chair's synthesis. Quotas count it (tenants.quotas)."""
        members = len(self.models or ())
        return members * (2 if self.rank else 1) + 1


class JobSummary(BaseModel):
    id: str
    status: JobStatus
    task: Task
    created_at: str
    updated_at: str


class JobAccepted(BaseModel):
    id: str
    status: JobStatus


class JobPage(BaseModel):
    items: list[JobSummary]
    cursor: str | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


