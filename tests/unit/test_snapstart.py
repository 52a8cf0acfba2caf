"""SnapStart's hooks (stillhouse/snapstart.py): before the snapshot a function loads and checks what its first
event needs and keeps no buffered metrics; after each restore its copy draws its own random numbers and
shares no AWS client, credentials, built object or cache with the other copies of the same snapshot.
Outside Lambda's runtime (no `snapshot_restore_py`) nothing is registered."""
import random
import sys
import types

import pytest

from stillhouse import aws, container, snapstart
from stillhouse.config import get_settings
from stillhouse.telemetry.metrics import metrics


@pytest.fixture
def lambda_registry(monkeypatch):
    """Lambda's `snapshot_restore_py`, recording what is registered."""
    registry = types.ModuleType("snapshot_restore_py")
    registry.before, registry.after = [], []
    registry.register_before_snapshot = lambda func, *args: registry.before.append((func, args))
    registry.register_after_restore = lambda func, *args: registry.after.append((func, args))
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", registry)
    return registry


@pytest.fixture
def fresh(aws_mock):
    container.reset()
    yield
    container.reset()


def test_outside_lambda_nothing_is_registered(monkeypatch):
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # `import` raises ImportError
    assert snapstart.prepare("stillhouse.jobs.dispatch") is False


def test_in_lambda_the_hooks_are_registered_with_the_functions_modules(lambda_registry):
    assert snapstart.prepare("stillhouse.http.runpod_callbacks") is True
    assert lambda_registry.before == [(snapstart.before_snapshot, (("stillhouse.http.runpod_callbacks",),))]
    assert lambda_registry.after == [(snapstart.restored, ())]


def test_before_the_snapshot_the_core_is_built_and_no_metric_is_left_buffered(fresh, lambda_registry, monkeypatch):
    class Recording:
        def __init__(self):
            self.pending = 0

        def record(self, metric, value, dimensions):
            self.pending += 1

        def flush(self):
            self.pending = 0

    sink = Recording()
    monkeypatch.setattr(metrics, "sinks", [sink])
    metrics.breaker_changed("ep-1", "CLOSED", "OPEN")  # a data point of the init, not yet flushed
    assert sink.pending > 0
    snapstart.prepare("stillhouse.routing.router")
    (hook, args), = lambda_registry.before

    hook(*args)

    assert container._current is not None  # settings checked, live configuration looked up
    assert container._current.settings is container.startup_check()
    assert sink.pending == 0


def test_after_a_restore_random_is_reseeded(fresh):
    random.seed(1234)
    in_snapshot = [random.random() for _ in range(4)]  # what every copy would draw next, unseeded
    random.seed(1234)

    snapstart.restored()

    assert [random.random() for _ in range(4)] != in_snapshot


def test_after_a_restore_no_client_credentials_object_or_setting_is_shared(fresh):
    sqs = aws.client("sqs")
    credentials = sqs._request_signer._credentials
    dynamodb = aws.table("jobs").meta.client
    built = container.container()
    live = container.live_config()
    settings = get_settings()
    api_keys = built.api_keys  # a cache of keys and tenants

    snapstart.restored()

    assert aws.client("sqs") is not sqs and aws.client("sqs")._request_signer._credentials is not credentials
    assert aws.table("jobs").meta.client is not dynamodb
    assert container.live_config() is not live
    assert get_settings() is not settings
    rebuilt = container.container()
    assert rebuilt is not built and rebuilt.api_keys is not api_keys
