"""Composition root: builds every object the functions use, once per process, from settings and the
one AWS clients factory. Only building happens here; behaviour lives in the concept packages.

Each object is built on first use, so a Lambda pays at cold start only for what its first request uses.
Tests and the embedded stack call `reset()` after pointing the factory at another backend.
"""
from __future__ import annotations

import json
from functools import cached_property, partial
from threading import Lock
from typing import TYPE_CHECKING, Any

from stillhouse import aws, secrets
from stillhouse.audit import AuditLog
from stillhouse.auth import ApiKeyStore
from stillhouse.batches.chunks import ChunkJobs, ChunkObjects
from stillhouse.batches.files import FileStore
from stillhouse.batches.service import BatchService
from stillhouse.batches.steps import BatchSteps
from stillhouse.batches.store import BatchStore, batch_of
from stillhouse.config import Settings, get_settings
from stillhouse.delivery.destinations import RESOLVERS, WebhookGuard
from stillhouse.delivery.tenant_secrets import WebhookSecretStore
from stillhouse.delivery.webhooks import CallerNotifier, DeliveryQueue, GuardedPost, Notice, WebhookDeliverer
from stillhouse.jobs.deadlines import SettleDeadlines
from stillhouse.jobs.dispatch import BatchLane, Dispatcher
from stillhouse.jobs.model import Job, Priority, Task
from stillhouse.jobs.queue import JobQueue
from stillhouse.jobs.service import CouncilDefaults, JobService
from stillhouse.jobs.stats import JobStats
from stillhouse.jobs.store import JobStore, MemberStore
from stillhouse.jobs.sweeper import Sweeper, SweepRounds
from stillhouse.live_config import LiveConfigStore
from stillhouse.outputs.cache import ResultCache
from stillhouse.outputs.spill import ResultStore
from stillhouse.routing.breaker import Breaker
from stillhouse.routing.feedback import report_outcome
from stillhouse.routing.registry import EndpointPolicy, EndpointRegistry, allowed_origins
from stillhouse.routing.router import Router
from stillhouse.routing.runpod_gateway import RunPodGateway
from stillhouse.routing.state import EndpointStateStore
from stillhouse.runpod.callback_urls import CallbackUrls
from stillhouse.runpod.callbacks import CallbackRecorder
from stillhouse.tenants.quotas import Quotas
from stillhouse.tenants.store import TenantStore
from stillhouse.workflows.council import CouncilTasks
from stillhouse.workflows.recovery import RecoveryTasks
from stillhouse.workflows.stepfunctions import Workflows

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer


class Container:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # --- stores --------------------------------------------------------------------------------
    @cached_property
    def spill(self) -> ResultStore:
        return ResultStore(aws.client("s3"), self.settings.results_bucket, link_s=self.settings.output_link_s)

    @cached_property
    def result_cache(self) -> ResultCache:
        return ResultCache(aws.table(self.settings.cache_table), ttl_s=self.settings.cache_ttl_s)

    @cached_property
    def job_store(self) -> JobStore:
        s = self.settings
        store = JobStore(aws.table(s.jobs_table), self.spill, watch_s=s.sweep_after_s,
                         retain_s=s.job_retention_days * 86_400)
        store.on_finished = self._job_finished
        return store

    def _job_finished(self, job: Job) -> None:
        self.quotas.release_finished(job.tenant_id, job.quota_hold)  # its in-flight places, given back
        if job.task is Task.BATCH:  # a batch's chunk: its lines are counted (built only when one ends)
            self.batch_service.chunk_ended(job)

    @cached_property
    def deadlines(self) -> SettleDeadlines:
        s = self.settings
        return SettleDeadlines(floor_s=s.settle_floor_s, factor=s.settle_factor,
                               execution_timeout_s=s.execution_timeout_ms / 1000, watch_s=s.sweep_after_s,
                               run_floor_s=s.run_timeout_floor_s)

    @cached_property
    def member_store(self) -> MemberStore:
        return MemberStore(aws.table(self.settings.jobs_table))

    @cached_property
    def api_keys(self) -> ApiKeyStore:
        s = self.settings
        return ApiKeyStore(aws.table(s.api_keys_table), cache_ttl_s=s.api_key_cache_ttl_s,
                           negative_ttl_s=s.api_key_negative_cache_ttl_s, max_keys_per_tenant=s.max_keys_per_tenant,
                           default_lifetime_s=s.api_key_default_expiry_s)

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(aws.table(self.settings.config_table))

    @cached_property
    def tenants(self) -> TenantStore:
        s = self.settings
        return TenantStore(aws.table(s.tenants_table), s.tenant_limits, cache_ttl_s=s.api_key_cache_ttl_s)

    @cached_property
    def quotas(self) -> Quotas:
        return Quotas(self.tenants, live_batches=lambda ids: self.batch_store.live_ids(ids))

    @cached_property
    def webhook_secrets(self) -> WebhookSecretStore:
        return WebhookSecretStore(aws.table(self.settings.webhook_secrets_table),
                                  grace_s=self.settings.webhook_secret_grace_s,
                                  cache_ttl_s=self.settings.webhook_secret_cache_ttl_s)

    @cached_property
    def idempotency(self) -> DynamoDBPersistenceLayer:
        # Imported here: only the API uses it, and its import is a large share of every other function's cold start.
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

        return DynamoDBPersistenceLayer(table_name=self.settings.idempotency_table,
                                        boto3_client=aws.client("dynamodb"))

    @cached_property
    def queue(self) -> JobQueue:
        s = self.settings
        return JobQueue(aws.client("sqs"), {Priority.HIGH: s.high_queue_url, Priority.NORMAL: s.normal_queue_url,
                                            Priority.BATCH: s.batch_queue_url},
                        {Priority.HIGH: s.high_dlq_url, Priority.NORMAL: s.normal_dlq_url, Priority.BATCH: s.batch_dlq_url})

    @cached_property
    def job_stats(self) -> JobStats:
        s = self.settings
        return JobStats(self.job_store, self.queue, self.api_keys, router_usd_per_job=s.cost_router_usd_per_job,
                        gpu_usd_per_s=s.cost_gpu_usd_per_s)

    # --- routing and RunPod --------------------------------------------------------------------
    @cached_property
    def registry(self) -> EndpointRegistry:
        s = self.settings
        policy = EndpointPolicy(origins=allowed_origins(s.runpod_base_url, s.endpoint_hosts),
                                secret_prefix=s.runpod_secret_prefix)
        return EndpointRegistry(aws.table(s.config_table), ttl_s=s.parameters_max_age_s, policy=policy)

    @cached_property
    def router(self) -> Router:
        store = EndpointStateStore(aws.table(self.settings.endpoint_state_table))
        return Router(self.registry, Breaker(store, self.settings.breaker), settings=self.settings.route)

    @cached_property
    def runpod(self) -> RunPodGateway:
        return RunPodGateway(self.registry, self.router, secrets.runpod_api_key, self.settings.runpod_timeout_s)

    @cached_property
    def callback_urls(self) -> CallbackUrls:
        return CallbackUrls(secrets.callback_keyring, secrets.callback_base_url, ttl_s=self.settings.callback_token_ttl_s)

    @cached_property
    def workflows(self) -> Workflows:
        s = self.settings
        return Workflows(aws.client("stepfunctions"), s.recovery_state_machine_arn, s.council_state_machine_arn)

    @cached_property
    def delivery_queue(self) -> DeliveryQueue:
        return DeliveryQueue(aws.client("sqs"), self.settings.delivery_queue_url, self.settings.delivery_dlq_url)

    @cached_property
    def notify_caller(self) -> CallerNotifier:
        return CallerNotifier(self.delivery_queue, self.spill)

    @cached_property
    def webhook_guard(self) -> WebhookGuard:
        return WebhookGuard(allow_loopback=self.settings.webhook_allow_loopback,
                            resolve=RESOLVERS[self.settings.webhook_resolver])

    @cached_property
    def deliverer(self) -> WebhookDeliverer:
        return WebhookDeliverer(self.job_store, self.spill, self.webhook_secrets.signing_secrets, self.delivery_queue,
                                schedule_s=self.settings.webhook_retry_schedule_s,
                                timeout_s=self.settings.webhook_timeout_s, send=GuardedPost(self.webhook_guard))

    # --- what the functions call ---------------------------------------------------------------
    @cached_property
    def job_service(self) -> JobService:
        defaults = CouncilDefaults(tuple(self.settings.council_models), self.settings.council_chair)
        return JobService(self.job_store, self.queue, workflows=self.workflows, runpod=self.runpod,
                          council_defaults=defaults, cache=self.result_cache, notify=self.notify_caller,
                          limits=self.settings.input_limits, quotas=self.quotas,
                          check_webhook=self.webhook_guard.check)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        s = self.settings
        return Dispatcher(
            store=self.job_store,
            router=self.router,
            client_for=self.runpod.client_for,
            callback_url=self.callback_urls.for_attempt,
            policy={"executionTimeout": s.execution_timeout_ms, "ttl": s.job_ttl_ms},
            max_receive_count=s.max_receive_count,
            workflows=self.workflows,
            workflow_mode=s.workflow_mode,
            deadlines=self.deadlines,
            payload_for=self.chunk_objects.payload,
            lane=BatchLane(share=s.batch.lane_share, defers=s.batch.lane_defers, slots=s.batch.lane_slots),
            defer=lambda receipt: self.queue.defer(Priority.BATCH, receipt, s.batch.defer_s),
            notify=self.notify_caller,
        )

    @cached_property
    def callbacks(self) -> CallbackRecorder:
        return CallbackRecorder(
            store=self.job_store,
            verify_token=self.callback_urls.verify,
            fetch_status=self.runpod.status,
            notify=self.notify_caller,
            learn=partial(report_outcome, self.router),
            members=self.member_store,
            cache=self.result_cache,
            workflows=self.workflows,
            stop_runpod_job=self.runpod.stop,
        )

    @cached_property
    def workflow_tasks(self) -> RecoveryTasks:
        council = CouncilTasks(store=self.job_store, members=self.member_store, router=self.router,
                               client_for=self.runpod.client_for, callback_url=self.callback_urls.for_attempt,
                               policy=self.dispatcher.policy, notify=self.notify_caller,
                               stop_runpod_job=self.runpod.stop, deadlines=self.deadlines)
        return RecoveryTasks(store=self.job_store, dispatcher=self.dispatcher, callbacks=self.callbacks,
                             fetch_status=self.runpod.status, notify=self.notify_caller,
                             max_attempts=self.settings.max_attempts, council=council)

    @cached_property
    def sweeper(self) -> Sweeper:
        return Sweeper(store=self.job_store, callbacks=self.callbacks, fetch_status=self.runpod.status,
                       execution_status=self.workflows.status, notify=self.notify_caller,
                       deadlines=self.deadlines, queue=self.queue,
                       settle_dlqs=self.settings.settle_dlqs,
                       in_queue_give_up_s=self.settings.in_queue_give_up_s,
                       breakers=lambda: [view.health for view in self.router.describe()],
                       batches=lambda: self.batch_service.sweep(), cancel_runpod=self.runpod.cancel,
                       heal_quotas=lambda: self.quotas.heal(self.job_store.quota_holds))

    # --- the Batch API ----------------------------------------------------------------------------
    @cached_property
    def files(self) -> FileStore:
        s = self.settings
        return FileStore(aws.table(s.batches_table), aws.client("s3"), s.results_bucket, s.batch,
                         retain_s=s.job_retention_days * 86_400)

    @cached_property
    def batch_store(self) -> BatchStore:
        return BatchStore(aws.table(self.settings.batches_table), retain_s=self.settings.job_retention_days * 86_400)

    @cached_property
    def chunk_objects(self) -> ChunkObjects:
        return ChunkObjects(aws.client("s3"), self.settings.results_bucket)

    @cached_property
    def batch_service(self) -> BatchService:
        s = self.settings
        return BatchService(
            files=self.files, batches=self.batch_store,
            chunk_jobs=ChunkJobs(aws.table(s.jobs_table), watch_s=s.sweep_after_s),
            chunk_objects=self.chunk_objects, steps=BatchSteps(aws.client("sqs"), s.batch_control_queue_url),
            lane=self.queue, settings=s.batch, limits=s.input_limits,
            served=lambda model: bool(self.registry.candidates(model)),
            cancel_job=lambda job: self.job_service.stop(job, "its batch ended"),
            quotas=self.quotas, ended=self.notify_batch_ended, check_webhook=self.webhook_guard.check)

    def notify_batch_ended(self, item: dict[str, Any]) -> bool:
        """Queue a batch's end for the webhook it was created with (signed as a job's notice is)."""
        if not item.get("webhook"):
            return False
        batch = batch_of(item)
        body = {"type": f"batch.{batch.status.value}", "id": batch.id, "data": batch.model_dump(mode="json")}
        self.delivery_queue.send(Notice(job_id=batch.id, webhook=item["webhook"], tenant_id=item["tenant_id"],
                                        trace_id=item.get("trace_id"), body=json.dumps(body, separators=(",", ":"))))
        return True

    @cached_property
    def sweep_rounds(self) -> SweepRounds:
        return SweepRounds(self.sweeper, every_s=self.settings.sweep_every_s)


_current: Container | None = None
_live: LiveConfigStore | None = None
_lock = Lock()


def live_config() -> LiveConfigStore:
    """The live configuration's store (`GET/PUT /v1/config`)."""
    global _live
    with _lock:
        if _live is None:
            settings = get_settings()
            _live = LiveConfigStore(aws.table(settings.config_table), max_age_s=settings.parameters_max_age_s)
        return _live


def container() -> Container:
    """This process's objects (built on first use), for the current settings: the environment's with the
    live configuration over them. When the live configuration changes, the objects are built again."""
    global _current
    settings = live_config().effective(get_settings())  # cached: reads the table at most every max age
    with _lock:
        if _current is None or _current.settings is not settings:
            _current = Container(settings)
        return _current


def startup_check() -> Settings:
    """Validate every setting now, at a function's start-up, not at first use: the environment's (a bad
    value fails the start) and the live configuration (a bad stored one is logged and not used)."""
    return container().settings


def reset() -> None:
    """Forget every built object and client (the embedded stack calls this after pointing at a new moto)."""
    global _current, _live
    with _lock:
        _current = None
        _live = None
    secrets.reset()
    aws.reset()
