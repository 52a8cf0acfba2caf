"""Fixtures every tier with an embedded stack shares (tests/integration on moto, tests/localstack on
LocalStack): each tier's conftest defines its own `stack` and imports these."""
import pytest

from stillhouse.container import container
from tests.support.stack import Api, Receiver, forget_statistics


@pytest.fixture
def api(stack):
    return Api(stack.url, stack.dev_api_key)


@pytest.fixture
def other_tenant(stack):
    return Api(stack.url, stack.create_api_key("other-tenant"))


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def two_endpoints(stack):
    """Route between `east` and `west` only, from fresh statistics and no faults; `local` is back afterwards."""
    forget_statistics("east", "west")
    for name in ("east", "west"):
        container().registry.update(name, enabled=True)
    container().registry.update("local", enabled=False)
    yield ("east", "west")
    for name in ("east", "west"):
        container().registry.update(name, enabled=False)
        stack.standin.reset_faults(name)
    forget_statistics("east", "west")
    container().registry.update("local", enabled=True)
