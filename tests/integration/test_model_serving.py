"""One image, one model per endpoint: the stand-in starts each endpoint's worker with that endpoint's
environment (`MODEL`), and a job the registry sends to a worker that does not serve its model fails at
once as misrouted (terminal, not retried), never answered by another model."""
import pytest

from stillhouse.container import container


@pytest.fixture
def pinned(stack):
    """An endpoint whose worker is deployed with MODEL=echo-pinned, but registered as serving any model
    (the misconfiguration a misroute comes from); the only enabled endpoint during the test."""
    stack.standin.add_endpoint("pinned", env={"MODEL": "echo-pinned"})
    container().registry.put({"name": "pinned", "endpoint_id": "pinned", "base_url": stack.standin.api_base(),
                              "models": ["*"]})
    container().registry.update("local", enabled=False)
    yield "pinned"
    container().registry.update("pinned", enabled=False)
    container().registry.update("local", enabled=True)


def test_the_stand_in_gives_each_endpoint_s_worker_its_own_environment(stack, pinned):
    assert stack.standin.endpoint_env(pinned)["MODEL"] == "echo-pinned"
    assert "MODEL" not in stack.standin.endpoint_env("local")


def test_a_job_for_the_endpoint_s_model_completes_on_it(api, pinned):
    job = api.wait(api.submit("generate", {"prompt": "hi"}, model="echo-pinned"), timeout=30)
    assert job["status"] == "COMPLETED", job
    assert job["endpoint"] == pinned and job["output"]["text"] == "echo-pinned says: hi"


def test_a_misrouted_job_fails_at_once_with_a_terminal_misroute_error(api, pinned):
    job = api.wait(api.submit("generate", {"prompt": "hi"}, model="echo-other"), timeout=30)
    assert job["status"] == "FAILED", job
    assert job["endpoint"] == pinned and job["attempts"] == 1
    assert job["error_class"] == "terminal"
    assert "ModelNotServed" in job["error"] and "'echo-other'" in job["error"] and "echo-pinned" in job["error"]
    assert "output" not in job or job["output"] is None
