"""The embedded stack: everything template.yaml declares, in one process, on 127.0.0.1."""
from __future__ import annotations

import logging
import os
import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stillhouse.auth import new_key, well_formed
from stillhouse.container import container, reset
from stillhouse.telemetry import tracing
from stillhouse.telemetry.metrics import metrics
from stillhouse.tenants.store import LimitsPatch
from stillhouse_local.http_gateway import HttpGateway
from stillhouse_local.lambdas import FunctionRegistry, InProcessFunction
from stillhouse_local.moto_env import MotoEnvironment, free_port
from stillhouse_local.otel import OtelSpans
from stillhouse_local.pollers import QueuePoller
from stillhouse_local.prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from stillhouse_local.prometheus import PrometheusSink
from stillhouse_local.scheduler import ScheduleRunner
from stillhouse_local.template import translate

REPO_ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger(__name__)


@dataclass
class StackOptions:
    port: int = 3000
    endpoints: list[str] = field(default_factory=lambda: ["local"])
    template: Path = REPO_ROOT / "template.yaml"
    dev_api_key: str | None = None
    #: the RunPod stand-in's port (0: any free one) and API key (None: a random one); fixed values let
    #: people outside this process use the stand-in and its fault knobs
    runpod_port: int = 0
    runpod_api_key: str | None = None
    #: template parameter overrides (e.g. short visibility timeouts in tests)
    parameters: dict[str, str] = field(default_factory=dict)
    start_workers: bool = True
    worker_env: dict[str, str] = field(default_factory=dict)
    #: extra worker environment per endpoint, on top of worker_env. An endpoint whose worker gets
    #: WORKER_STREAMING=true is registered with streaming=True (it takes the `stream: true` jobs).
    endpoint_env: dict[str, dict[str, str]] = field(default_factory=dict)
    worker_concurrency: int = 8  # jobs one stand-in worker takes at once (RunPod concurrency_modifier)
    #: the stand-in's workers per endpoint and their scaler (runpod_standin.Scaling; None: RunPod's
    #: defaults, as the deploy file's: up to 3 workers, QUEUE_DELAY 4 s, idle timeout 5 s)
    scaling: Any = None
    webhook_retry_delay_s: float = 1.0
    log_dir: Path | None = None
    poll_wait_s: int = 1
    #: extra environment for the functions (settings not in the template, e.g. breaker thresholds)
    environment: dict[str, str] = field(default_factory=dict)
    #: invocations at once of each function behind the HTTP API (and the sweeper, so a direct invocation
    #: does not wait for a scheduled run): API Gateway serves requests concurrently. A queue's function runs
    #: one instance per event source mapping (dispatch: the high, normal and batch queues), each loaded apart,
    #: as Lambda's mappings invoke it side by side; the rest take one at a time.
    http_concurrency: int = 8
    #: instances at once of named functions, over the above (e.g. {"DispatchFunction": 6})
    function_concurrency: dict[str, int] = field(default_factory=dict)
    #: batches one event source mapping processes at once, each on an instance of the function loaded apart:
    #: the mapping's ScalingConfig.MaximumConcurrency (no cap when it has none), capped by this. 1 (the
    #: default, what the tests are tuned to): one batch after another per queue; AWS runs up to
    #: MaximumConcurrency (DispatchMaxConcurrency, 20 by default) at once.
    mapping_concurrency: int = 1
    #: where AWS is: "moto" (in-process, the default) or "localstack" (at LOCALSTACK_HOST, started by
    #: scripts/localstack.sh when none answers; no Lambda there, so workflows cannot run their tasks)
    aws: str = "moto"


def aws_backend(name: str) -> Any:
    """The AWS the embedded stack deploys the template into; the code above it is the same for each."""
    if name == "moto":
        return MotoEnvironment()
    if name == "localstack":
        from stillhouse_local.localstack_env import LocalStackEnvironment

        return LocalStackEnvironment()
    raise ValueError(f"unknown AWS backend {name!r}: moto or localstack")


class EmbeddedStack:
    # moto's backends and the Lambda environment are process-global: two stacks in one process would
    # silently share tables and overwrite each other's settings, so a second one is refused.
    _running: EmbeddedStack | None = None
    _running_lock = threading.Lock()

    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.port = self.options.port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.moto = aws_backend(self.options.aws)  # named for the default; LocalStack has the same interface
        self._saved_environment: dict[str, str | None] = {}
        self.functions = FunctionRegistry()
        self.resources: dict[str, str] = {}
        self.pollers: list[QueuePoller] = []
        self.schedules: list[ScheduleRunner] = []
        self.gateway: HttpGateway | None = None
        self.standin: Any = None
        self.dev_api_key = self.options.dev_api_key or os.environ.get("STILLHOUSE_DEV_API_KEY") or new_key()
        if not well_formed(self.dev_api_key):  # the API refuses other shapes unread (auth.py)
            raise ValueError("STILLHOUSE_DEV_API_KEY must look like a key stillhouse makes: 'sh_' then 43 "
                             "base64url characters (python -c 'from stillhouse.auth import new_key; "
                             "print(new_key())')")
        self.runpod_api_key = self.options.runpod_api_key or "rp_local_" + secrets.token_urlsafe(16)
        #: tenant id -> the webhook secret (`whsec_...`) its deliveries are signed with, as created here
        self.webhook_secrets: dict[str, str] = {}
        self.prometheus = PrometheusSink()  # served at GET /metrics
        self.spans = OtelSpans()  # exported only when OTEL_EXPORTER_OTLP_ENDPOINT is set

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> EmbeddedStack:
        from stillhouse_local.runpod_standin import RunPodStandIn

        with EmbeddedStack._running_lock:
            if EmbeddedStack._running is not None:
                raise RuntimeError(
                    f"an embedded stack already runs in this process ({EmbeddedStack._running.url}); "
                    "moto and the Lambda environment are process-global: use that one")
            EmbeddedStack._running = self
        try:
            self.moto.start()
            local = translate(self.options.template)
            self.standin = RunPodStandIn(
                api_key=self.runpod_api_key,
                port=self.options.runpod_port,
                endpoints=list(self.options.endpoints),
                start_workers=self.options.start_workers,
                worker_concurrency=self.options.worker_concurrency,
                scaling=self.options.scaling,
                worker_env=self.options.worker_env,
                endpoint_env=self.options.endpoint_env,
                webhook_retry_delay_s=self.options.webhook_retry_delay_s,
                log_dir=self.options.log_dir,
            )
            self.standin.start()
            parameters = {"CallbackBaseUrl": self.url, "RunPodBaseUrl": self.standin.api_base(),
                          **self.options.parameters}
            self.resources = self.moto.deploy(local, parameters, {"RunPodApiKeySecret": self.runpod_api_key})
            concurrent = ({route.function for route in local.routes} | {r.function for r in local.streamed_routes}
                          | {"SweeperFunction"})
            # A queue's function: an instance per batch its event source mappings process at once (Lambda's
            # mappings invoke it side by side), each loaded apart, so the batch lane never waits for an
            # interactive queue's dispatch, and no two batches in flight share a module's state.
            mapping_concurrency = {id(m): batches_at_once(local, m, parameters, self.options.mapping_concurrency)
                                   for m in local.queue_mappings}
            mappings: Counter[str] = Counter()
            for m in local.queue_mappings:
                mappings[m.function] += mapping_concurrency[id(m)]
            for spec in local.functions.values():
                http = spec.logical_id in concurrent
                default = self.options.http_concurrency if http else max(1, mappings[spec.logical_id])
                self.functions.add(InProcessFunction(spec, self.resources[spec.logical_id],
                                                     self.options.function_concurrency.get(spec.logical_id, default),
                                                     per_instance=not http))
            self.moto.install_lambda_runtime(self.functions)
            self._configure_process(local)
            self._seed()
            metrics.add_sink(self.prometheus)
            tracing.add_span_starter(self.spans)
            self.gateway = HttpGateway(local.routes, self.functions, port=self.port,
                                       local_routes={("GET", "/metrics"): self._metrics_text},
                                       streamed_routes=local.streamed_routes)
            self.gateway.start()
            sqs = self.moto.client("sqs")
            for mapping in local.queue_mappings:
                batch = mapping.batch_size
                if isinstance(batch, dict):  # {"Ref": "DispatchBatchSize"}
                    batch = parameters.get(batch["Ref"]) or _default_parameter(local, batch["Ref"])
                poller = QueuePoller(sqs, self.resources[mapping.queue], mapping.function, self.functions,
                                     batch_size=int(batch), report_batch_item_failures=mapping.report_batch_item_failures,
                                     wait_s=self.options.poll_wait_s, concurrency=mapping_concurrency[id(mapping)])
                poller.start()
                self.pollers.append(poller)
            for schedule in local.schedules:
                runner = ScheduleRunner(schedule.function, schedule.period_s, self.functions)
                runner.start()
                self.schedules.append(runner)
        except BaseException:
            self.stop()
            raise
        return self

    @contextmanager
    def schedules_paused(self) -> Iterator[None]:
        """No scheduled run (the sweeper's) inside the block: a run in progress ends first."""
        for runner in self.schedules:
            runner.pause()
        try:
            yield
        finally:
            for runner in self.schedules:
                runner.pause(False)

    def stop(self) -> None:
        for poller in self.pollers:
            poller.stop()
        self.pollers.clear()
        for runner in self.schedules:
            runner.stop()
        self.schedules.clear()
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        if self.standin is not None:
            self.standin.stop()
            self.standin = None
        self.moto.stop()
        metrics.remove_sink(self.prometheus)
        tracing.remove_span_starter(self.spans)
        self.spans.shutdown()
        for key, value in self._saved_environment.items():  # the next stack in this process starts clean
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environment.clear()
        with EmbeddedStack._running_lock:
            if EmbeddedStack._running is self:
                EmbeddedStack._running = None

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- set-up ------------------------------------------------------------------------------
    def _configure_process(self, local: Any) -> None:
        """Lambda environment variables are process-global here: set them once, for every function."""
        env: dict[str, str | None] = {**self.moto.function_environment([self.resources[f] for f in local.functions])}
        env.update(self.moto.process_environment())
        env["AWS_REGION"] = "us-east-1"
        # Callers of a stack on 127.0.0.1 listen there too: their http://127.0.0.1 webhooks are allowed
        # (private and metadata addresses stay refused).
        env["STILLHOUSE_WEBHOOK_ALLOW_LOOPBACK"] = "true"
        env.update(self.options.environment)
        for key, value in env.items():
            self._saved_environment.setdefault(key, os.environ.get(key))
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset()

    def _seed(self) -> None:
        container().api_keys.add(self.dev_api_key, "dev", admin=True)
        # The dev tenant is the operator's: the benchmarks and the fault soak submit hundreds of jobs at once.
        container().tenants.create("dev", DEV_LIMITS, tenant_id="dev")
        self.webhook_secrets["dev"] = container().webhook_secrets.create("dev")
        for name in self.options.endpoints:
            # Read as gpu_handler's WorkerSettings reads it.
            flag = self.standin.endpoint_env(name).get("WORKER_STREAMING") or ""
            streaming = flag.strip().lower() in {"1", "true", "yes", "on"}
            # The worker's own models by name (what GET /v1/models lists), and "*" for any other (the
            # diagnostic echo family; a worker deployed with another MODEL refuses what it does not serve).
            container().registry.put({"name": name, "endpoint_id": name, "base_url": self.standin.api_base(),
                                      "models": [*WORKER_MODELS, "*"], "streaming": streaming})

    # --- conveniences for tests, benchmarks and the CLI ----------------------------------------
    @property
    def dev_webhook_secret(self) -> str:
        """The dev tenant's webhook secret: its deliveries verify with it (Standard Webhooks)."""
        return self.webhook_secrets["dev"]

    def create_api_key(self, tenant_id: str, *, admin: bool = False) -> str:
        """A key of `tenant_id`; a tenant new to this stack also gets a webhook secret (`webhook_secrets`)."""
        key = new_key()
        container().api_keys.add(key, tenant_id, admin=admin)
        if tenant_id not in self.webhook_secrets and not container().webhook_secrets.signing_secrets(tenant_id):
            self.webhook_secrets[tenant_id] = container().webhook_secrets.create(tenant_id)
        return key

    def _metrics_text(self) -> tuple[int, dict[str, str], bytes]:
        return 200, {"content-type": PROMETHEUS_CONTENT_TYPE}, self.prometheus.exposition()

    def queue_url(self, logical_id: str) -> str:
        return self.resources[logical_id]


#: The models the stand-in's workers load by default (gpu_handler.loading's packaged SmolLM2 and MiniLM).
WORKER_MODELS = ("SmolLM2-135M-Instruct", "all-MiniLM-L6-v2")

DEV_LIMITS = LimitsPatch(requests_per_minute=1_000_000, max_in_flight=5_000, max_council_models=8,
                        allow_high_priority=True, stream_polls_per_minute=1_000_000)


def batches_at_once(local: Any, mapping: Any, parameters: dict[str, str], cap: int) -> int:
    """Batches one event source mapping processes at once here: its ScalingConfig.MaximumConcurrency
    (a template parameter or a number; none: Lambda's own scaling, uncapped), capped by the stack's setting."""
    cap = max(1, int(cap))
    maximum = mapping.maximum_concurrency
    if isinstance(maximum, dict):  # {"Ref": "DispatchMaxConcurrency"}
        maximum = parameters.get(maximum["Ref"]) or _default_parameter(local, maximum["Ref"])
    return cap if maximum is None else max(1, min(cap, int(maximum)))


def _default_parameter(local: Any, name: str) -> str:
    return str(local.cloudformation.get("Parameters", {}).get(name, {}).get("Default", 10))
