"""Composition root: builds the services from settings and the clients factory, once per process.

Everything is lazy so a Lambda pays at cold start only for what its first request uses.
"""
from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlencode

from stillhouse import aws, secrets
from stillhouse.auth import ApiKeyStore
from stillhouse.config import get_settings
from stillhouse.delivery.signing import callback_token
from stillhouse.delivery.webhooks import notify
from stillhouse.jobs.dispatch import Dispatcher, Endpoint
from stillhouse.jobs.model import Job, Priority
from stillhouse.jobs.queue import JobQueue
from stillhouse.jobs.service import CouncilDefaults, JobService
from stillhouse.jobs.store import JobStore, MemberStore
from stillhouse.jobs.sweeper import Sweeper, redrive
from stillhouse.outputs.cache import ResultCache
from stillhouse.outputs.spill import ResultStore
from stillhouse.routing.breaker import Breaker
from stillhouse.routing.registry import EndpointRegistry
from stillhouse.routing.router import Router
from stillhouse.routing.state import EndpointStateStore
from stillhouse.runpod.callbacks import CallbackRecorder, report_outcome
from stillhouse.runpod.client import RunPodClient
from stillhouse.workflows.council import CouncilTasks
from stillhouse.workflows.recovery import RecoveryTasks
from stillhouse.workflows.stepfunctions import Workflows


@lru_cache(maxsize=1)
def results() -> ResultStore:
    return ResultStore(aws.client("s3"), get_settings().results_bucket)


@lru_cache(maxsize=1)
def result_cache() -> ResultCache:
    settings = get_settings()
    return ResultCache(aws.table(settings.cache_table), ttl_s=settings.cache_ttl_s)


@lru_cache(maxsize=1)
def job_store() -> JobStore:
    return JobStore(aws.table(get_settings().jobs_table), results())


@lru_cache(maxsize=1)
def api_keys() -> ApiKeyStore:
    return ApiKeyStore(aws.table(get_settings().api_keys_table))


@lru_cache(maxsize=1)
def registry() -> EndpointRegistry:
    settings = get_settings()
    return EndpointRegistry(aws.table(settings.config_table), ttl_s=settings.parameters_max_age_s)


@lru_cache(maxsize=1)
def router() -> Router:
    settings = get_settings()
    store = EndpointStateStore(aws.table(settings.endpoint_state_table))
    return Router(registry(), Breaker(store, settings.breaker), settings=settings.route)


@lru_cache(maxsize=8)
def runpod_client(secret_ref: str | None = None) -> RunPodClient:
    return RunPodClient(secrets.runpod_api_key(secret_ref), timeout_s=get_settings().runpod_timeout_s)


def client_for(endpoint: Endpoint) -> RunPodClient:
    return runpod_client(endpoint.secret_ref)


@lru_cache(maxsize=1)
def workflows() -> Workflows:
    settings = get_settings()
    return Workflows(aws.client("stepfunctions"), settings.recovery_state_machine_arn,
                     settings.council_state_machine_arn)


def cancel_on_runpod(job: Job) -> None:
    """Best effort: the job is already CANCELLED here; stop its workflow and the RunPod work."""
    if job.execution_arn:
        workflows().stop(job.execution_arn, "cancelled by caller")
    in_flight = [(m["endpoint"], m["runpod_id"]) for m in (job.members or {}).values() if not m.get("done")]
    if job.endpoint and job.runpod_id:
        in_flight.append((job.endpoint, job.runpod_id))
    for endpoint_name, runpod_id in in_flight:
        stop_runpod_job(endpoint_name, runpod_id)


def stop_runpod_job(endpoint_name: str, runpod_id: str) -> None:
    """Free the endpoint's in-flight slot and ask RunPod to cancel (best effort: the job's own record is
    already final; at worst a GPU finishes for nothing and its late webhook is ignored)."""
    router().released(endpoint_name)
    try:
        endpoint = registry().get(endpoint_name)
        client_for(endpoint).cancel(endpoint.base_url, endpoint.endpoint_id, runpod_id)
    except Exception:  # noqa: BLE001
        pass


@lru_cache(maxsize=1)
def job_service() -> JobService:
    settings = get_settings()
    queue = JobQueue(
        aws.client("sqs"),
        {Priority.HIGH: settings.high_queue_url, Priority.NORMAL: settings.normal_queue_url},
    )
    defaults = CouncilDefaults(tuple(settings.council_models), settings.council_chair)
    return JobService(job_store(), queue, canceller=cancel_on_runpod, council_defaults=defaults,
                      cache=result_cache(), notify=notify_caller)


def callback_url(job: Job, attempt: int, endpoint: Endpoint, member: str = "") -> str:
    token = callback_token(secrets.signing_secret(), job.id, attempt, endpoint.name, member)
    params = {"attempt": attempt, "endpoint": endpoint.name, "token": token}
    if member:
        params["member"] = member
    return f"{secrets.callback_base_url()}/callbacks/runpod/{job.id}?{urlencode(params)}"


@lru_cache(maxsize=1)
def member_store() -> MemberStore:
    return MemberStore(aws.table(get_settings().jobs_table))


@lru_cache(maxsize=1)
def dispatcher() -> Dispatcher:
    settings = get_settings()
    return Dispatcher(
        store=job_store(),
        router=router(),
        client_for=client_for,
        callback_url=callback_url,
        policy={"executionTimeout": settings.execution_timeout_ms, "ttl": settings.job_ttl_ms},
        max_receive_count=settings.max_receive_count,
        workflows=workflows(),
        workflow_mode=settings.workflow_mode,
    )


def fetch_status(endpoint_name: str, runpod_id: str) -> dict:
    endpoint = registry().get(endpoint_name)
    return client_for(endpoint).status(endpoint.base_url, endpoint.endpoint_id, runpod_id)


@lru_cache(maxsize=1)
def callbacks() -> CallbackRecorder:
    return CallbackRecorder(
        store=job_store(),
        secret=secrets.signing_secret,
        fetch_status=fetch_status,
        notify=notify_caller,
        learn=lambda *outcome: report_outcome(router(), *outcome),
        members=member_store(),
        cache=result_cache(),
        workflows=workflows(),
        stop_runpod_job=stop_runpod_job,
    )


def public_view(job: Job) -> Job:
    """The job as callers see it: a result kept in S3 is given as a presigned URL."""
    url = results().url(job.output)
    return job.model_copy(update={"output": None, "output_url": url}) if url else job


def notify_caller(job: Job) -> None:
    notify(public_view(job), secrets.signing_secret())


@lru_cache(maxsize=1)
def workflow_tasks() -> RecoveryTasks:
    settings = get_settings()
    council = CouncilTasks(store=job_store(), members=member_store(), router=router(), client_for=client_for,
                           callback_url=callback_url, policy=dispatcher().policy, notify=notify_caller,
                           stop_runpod_job=stop_runpod_job)
    return RecoveryTasks(store=job_store(), dispatcher=dispatcher(), callbacks=callbacks(),
                         fetch_status=fetch_status, notify=notify_caller, max_attempts=settings.max_attempts,
                         council=council)


def reset() -> None:
    """Forget every built object (the embedded stack calls this after pointing at a new moto)."""
    for fn in (sweeper, results, result_cache, job_store, member_store, api_keys, registry, router, workflows, workflow_tasks, runpod_client, job_service, dispatcher, callbacks):
        fn.cache_clear()
    secrets.reset()
    aws.reset()


@lru_cache(maxsize=1)
def sweeper() -> Sweeper:
    return Sweeper(store=job_store(), callbacks=callbacks(), fetch_status=fetch_status,
                   execution_status=workflows().status, notify=notify_caller,
                   stale_after_s=get_settings().sweep_after_s)


def redrive_dlqs() -> int:
    settings = get_settings()
    sqs = aws.client("sqs")
    pairs = [(settings.high_dlq_url, settings.high_queue_url), (settings.normal_dlq_url, settings.normal_queue_url)]
    return sum(redrive(sqs, dlq, queue) for dlq, queue in pairs if dlq and queue)
