"""One embedded stack (moto + in-process Lambdas + RunPod stand-in with the real worker) per session."""
import pytest
from stillhouse_local.stack import EmbeddedStack, StackOptions

from stillhouse.container import container
from tests.support.fixtures import api, other_tenant, receiver, two_endpoints  # noqa: F401 (shared fixtures)
from tests.support.stack import forget_statistics


# Package-scoped: it stops when tests/integration is done, before tests/localstack starts its own stack
# (one embedded stack per process at a time).
@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    options = StackOptions(
        port=0,
        endpoints=["local", "east", "west"],
        parameters={
            # Short, so redelivery and the DLQ run in seconds; but longer than one dispatch under a busy
            # CI machine, else a redelivery races the first delivery and claims a second attempt.
            "QueueVisibilityTimeout": "3", "MaxReceiveCount": "2",
            # Step Functions sleeps are real: short backoffs and callback timeouts keep tests quick.
            "RetryIntervalSeconds": "1", "CapacityIntervalSeconds": "1", "RetryBackoffRate": "2",
            "RetryMaxAttempts": "3", "RetryMaxDelaySeconds": "4", "CallbackTimeoutSeconds": "4",
            "StatusPollSeconds": "1", "MaxAttempts": "6", "WaitForEndpointIntervalSeconds": "1",
            # A RunPod job lost inside a worker times out (-> worker_lost -> retried) within a test.
            "ExecutionTimeoutMs": "20000",
            # A caller's webhook that fails is tried again within a test: 3 tries, 1 s apart.
            "WebhookRetryScheduleSeconds": "[1, 1]", "WebhookMaxTries": "3",
            # Tests invoke the sweeper themselves: the schedule's own runs sweep once, without idling. A job
            # in flight is due for a /status look 2 s after its start at the earliest.
            "SweepEverySeconds": "60", "SettleFloorSeconds": "2",
        },
        # Short breaker cool-down so recovery is observable within a test.
        environment={"STILLHOUSE_BREAKER__COOLDOWN_S": "1.5", "STILLHOUSE_BREAKER__MAX_COOLDOWN_S": "3",
                     # The DLQ tests look at what lands there: the every-minute sweep must not take it first
                     # (the DLQ policy itself is tested in tests/unit/test_sweeper.py).
                     "STILLHOUSE_SETTLE_DLQS": "false",
                     # Webhook names are looked up by no DNS: localhost only, every other name refused.
                     "STILLHOUSE_WEBHOOK_RESOLVER": "loopback-only",
                     # A batch of a dozen lines runs as several chunks (several jobs, several GPU micro-batches).
                     "STILLHOUSE_BATCH__CHUNK_LINES": "4",
                     # A job a test leaves waiting (an endpoint refusing every run) ends at its deadline, not
                     # after a day of retries beside every later test.
                     "STILLHOUSE_TENANT_LIMITS__DEADLINE_S": "120"},
        webhook_retry_delay_s=0.2,
        log_dir=tmp_path_factory.mktemp("logs"),
    )
    with EmbeddedStack(options) as running:
        # Only `local` takes jobs unless a test says otherwise: assertions need to know where jobs run.
        for name in ("east", "west"):
            container().registry.update(name, enabled=False)
        yield running


@pytest.fixture
def faults(stack):
    """Set fault knobs on stand-in endpoints. What the router learnt of an endpoint (breaker, latency and
    success statistics) is forgotten when a test first touches it and again afterwards, so a fault test
    sees exactly its own faults' effect; every knob is reset after the test."""
    touched = set()

    def set_faults(endpoint="local", **knobs):
        if endpoint not in touched:
            touched.add(endpoint)
            forget_statistics(endpoint)
        stack.standin.set_faults(endpoint, **knobs)

    yield set_faults
    for endpoint in touched:
        stack.standin.reset_faults(endpoint)
        forget_statistics(endpoint)
