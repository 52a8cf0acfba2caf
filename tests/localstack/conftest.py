"""One embedded stack whose AWS is LocalStack (Lambdas in-process, RunPod stand-in with the real worker)."""
import os
import socket

import pytest
from stillhouse_local.localstack_env import LocalStackUnavailable
from stillhouse_local.stack import EmbeddedStack, StackOptions

from stillhouse.container import container
from tests.support.fixtures import api, other_tenant, receiver, two_endpoints  # noqa: F401 (shared fixtures)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    options = StackOptions(
        aws="localstack",
        port=0,
        endpoints=["local", "east", "west"],
        # Short, as in tests/integration: redelivery in seconds, a breaker that recovers within a test.
        parameters={"QueueVisibilityTimeout": "3", "MaxReceiveCount": "2", "ExecutionTimeoutMs": "20000",
                    "WebhookRetryScheduleSeconds": "[1, 1]", "WebhookMaxTries": "3",
                    "SweepEverySeconds": "60", "SettleFloorSeconds": "2"},  # tests invoke the sweeper themselves
        environment={"STILLHOUSE_BREAKER__COOLDOWN_S": "1.5", "STILLHOUSE_BREAKER__MAX_COOLDOWN_S": "3",
                     "STILLHOUSE_SETTLE_DLQS": "false",  # the DLQ test looks at what lands there
                     "STILLHOUSE_WEBHOOK_RESOLVER": "loopback-only",  # webhook names: no DNS lookups
                     "STILLHOUSE_BATCH__CHUNK_LINES": "2",  # a small batch still runs as several chunks
                     "STILLHOUSE_TENANT_LIMITS__DEADLINE_S": "120"},  # a job left waiting ends, not retries all day
        webhook_retry_delay_s=0.2,
        log_dir=tmp_path_factory.mktemp("logs"),
    )
    with pytest.MonkeyPatch.context() as mp:
        # A LocalStack of the tier's own on a free port, unless LOCALSTACK_HOST names a running one.
        mp.setenv("LOCALSTACK_HOST", os.environ.get("LOCALSTACK_HOST") or f"127.0.0.1:{free_port()}")
        try:
            running = EmbeddedStack(options).start()
        except LocalStackUnavailable as exc:
            pytest.skip(f"LocalStack could not be installed or started: {exc}")
        try:
            for name in ("east", "west"):  # only `local` takes jobs unless a test says otherwise
                container().registry.update(name, enabled=False)
            yield running
        finally:
            running.stop()
