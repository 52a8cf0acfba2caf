"""The one AWS clients factory: the same boto3 code talks to AWS, LocalStack or embedded moto.

Which one is configuration only (`AWS_ENDPOINT_URL`, or `STILLHOUSE_LOCALSTACK=true` for localstack-client's
sessions: LocalStack at `LOCALSTACK_HOST`, its test credentials); business code never asks which. Clients are created lazily and
cached per process (boto3 client creation costs ~50 ms; Lambda cold starts pay only for what they use).
Every API call is counted, which is how the benchmarks price a job (docs/cost.md).
"""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from stillhouse.config import Settings, get_settings
from stillhouse.errors import AwsUnavailable

_lock = threading.Lock()
_clients: dict[tuple[str, str], Any] = {}
_resources: dict[tuple[str, str], Any] = {}

#: (service, operation) -> number of calls made through clients of this factory.
api_calls: Counter[tuple[str, str]] = Counter()

#: hook(client, service) for every client the factory makes: how benchmarks meter calls (later, metrics).
ClientHook = Callable[[Any, str], None]
_client_hooks: list[ClientHook] = []


def add_client_hook(hook: ClientHook) -> Callable[[], None]:
    """Call `hook` with each client created from now on and each one already cached (under the factory's
    lock, so exactly once per client: it must not call the factory). Returns the function that removes it."""
    with _lock:
        _client_hooks.append(hook)
        for (service, _), found in _clients.items():
            hook(found, service)
        for res in _resources.values():
            hook(res.meta.client, "dynamodb")
    return lambda: remove_client_hook(hook)


def remove_client_hook(hook: ClientHook) -> None:
    with _lock:
        if hook in _client_hooks:
            _client_hooks.remove(hook)


def endpoint_url(settings: Settings | None = None) -> str | None:
    settings = settings or get_settings()
    if settings.aws_endpoint_url:
        return settings.aws_endpoint_url
    if settings.localstack:
        import localstack_client.config  # only where LocalStack is the target

        return localstack_client.config.get_service_endpoint("sqs")
    return None


def _session(settings: Settings) -> Any:
    """A boto3 session, or localstack-client's stand-in for one when LocalStack is the target."""
    if settings.localstack and not settings.aws_endpoint_url:
        from localstack_client.session import Session  # only where LocalStack is the target

        return Session(region_name=settings.region)
    return boto3.session.Session()


def _count(service: str):
    def handler(event_name: str, **_: Any) -> None:
        # event_name looks like "before-call.sqs.SendMessage"
        api_calls[(service, event_name.rsplit(".", 1)[-1])] += 1

    return handler


def client(service: str, settings: Settings | None = None) -> Any:
    settings = settings or get_settings()
    url = endpoint_url(settings)
    key = (service, url or "")
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = _session(settings).client(
                service,
                region_name=settings.region,
                endpoint_url=url,
                config=Config(retries={"mode": "standard", "max_attempts": 3}),
            )
            found.meta.events.register("before-call", _count(service))
            _clients[key] = found
            for hook in _client_hooks:
                hook(found, service)
        return found


def table(name: str, settings: Settings | None = None) -> Any:
    """A DynamoDB Table resource sharing the factory's endpoint choice."""
    settings = settings or get_settings()
    url = endpoint_url(settings)
    key = ("dynamodb", url or "")
    with _lock:
        res = _resources.get(key)
        if res is None:
            res = _session(settings).resource(
                "dynamodb", region_name=settings.region, endpoint_url=url
            )
            res.meta.client.meta.events.register("before-call", _count("dynamodb"))
            _resources[key] = res
            for hook in _client_hooks:
                hook(res.meta.client, "dynamodb")
    return res.Table(name)


def reset() -> None:
    """Forget cached clients (tests and the embedded stack call this when the endpoint changes)."""
    with _lock:
        _clients.clear()
        _resources.clear()
    get_settings.cache_clear()


#: AWS error codes that mean "not now" (throttled, or the service briefly unavailable), whatever the
#: service: what botocore's standard retry mode retries as throttling or transient. The one list by which
#: an AWS error becomes AwsUnavailable (503 + Retry-After): matched by code, never by message text.
UNAVAILABLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "Throttling", "ThrottledException",
    "RequestThrottledException", "RequestThrottled", "TooManyRequestsException", "RequestLimitExceeded",
    "LimitExceededException", "BandwidthLimitExceeded", "TransactionInProgressException", "SlowDown",
    "EC2ThrottledException", "PriorRequestNotComplete", "ServiceUnavailable", "InternalError",
    "InternalFailure", "InternalServerError", "RequestTimeout", "RequestTimeoutException",
    "AWS.SimpleQueueService.ServiceUnavailable", "KMS.ThrottlingException",
})
#: HTTP statuses of an AWS answer that mean the same, whatever its code.
UNAVAILABLE_STATUSES = frozenset({500, 502, 503, 504})


def unavailable(exc: BaseException | None) -> AwsUnavailable | None:
    """The AwsUnavailable that `exc` stands for: an AWS ClientError with a throttling/unavailable code or a
    5xx status, itself or as the cause of what was raised (Powertools' idempotency wraps the ClientError
    of its table). None for anything else."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if error.get("Code") in UNAVAILABLE_CODES or status in UNAVAILABLE_STATUSES:
                return AwsUnavailable(f"{exc.operation_name} was throttled or unavailable at AWS; nothing was "
                                      "kept: send the same request again")
            return None
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None
