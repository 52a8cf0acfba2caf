"""`stillhouse deploy` end to end against the embedded stack: the plan, the apply against the RunPod
stand-in's management routes, the stand-in running a worker for the new endpoint with its template's
environment, the router's registry entry, and a job for the endpoint's model completing on it."""
import pytest
from stillhouse_local.cli_deploy import app
from typer.testing import CliRunner

from stillhouse.container import container

DEPLOY_FILE = """
templates:
  echo-worker:
    image: stillhouse-worker:test
    env: {MODEL: echo-deployed, WORKER_CONCURRENCY: 4}
endpoints:
  deployed:
    template: echo-worker
    gpu_types: ["NVIDIA GeForce RTX 4090"]
    workers: {min: 0, max: 1}
    scaler: {type: QUEUE_DELAY, value: 2}
    models: [echo-deployed]
    max_in_flight: 4
"""


@pytest.fixture(scope="module")
def deploy(stack, tmp_path_factory):
    """Runs `stillhouse deploy` against the stack; returns (exit code, output). The deployed endpoint is
    disabled in the registry after the module (the stand-in keeps its worker)."""
    path = tmp_path_factory.mktemp("deploy") / "runpod.yaml"
    path.write_text(DEPLOY_FILE)
    runner = CliRunner()

    def run(*extra, file=path):
        result = runner.invoke(app, [str(file), "--runpod-api-url", f"{stack.standin.base_url}/v1",
                                     "--serverless-url", stack.standin.api_base(), "--url", stack.url, *extra],
                               env={"RUNPOD_API_KEY": stack.runpod_api_key, "STILLHOUSE_API_KEY": stack.dev_api_key})
        return result.exit_code, result.output

    yield run
    # The stack is shared by the session: later tests must know where their jobs run.
    if "deployed" in {spec.name for spec in container().registry.list(force_fetch=True)}:
        container().registry.update("deployed", enabled=False)


def deployed_endpoints(stack):
    return [e for e in stack.standin.management.list_endpoints() if e["name"].startswith("deployed")]


def test_deploy_plans_applies_and_a_second_run_changes_nothing(stack, deploy):
    code, out = deploy("--dry-run")
    assert code == 0, out
    assert "+ template echo-worker: create" in out and "+ endpoint deployed: create" in out, out
    assert "+ registry deployed: create" in out and "dry run: nothing was changed" in out
    assert deployed_endpoints(stack) == [] and "deployed" not in {s.name for s in container().registry.list()}

    code, out = deploy()
    assert code == 0, out
    [endpoint] = deployed_endpoints(stack)
    assert endpoint["name"] == "deployed -fb"  # flashboot is on by default, and RunPod marks the name
    assert (endpoint["workersMax"], endpoint["scalerType"], endpoint["scalerValue"]) == (1, "QUEUE_DELAY", 2)
    # The stand-in runs a worker for the new endpoint, with its template's environment.
    assert endpoint["id"] in stack.standin.endpoints
    assert stack.standin.endpoint_env(endpoint["id"])["MODEL"] == "echo-deployed"
    spec = container().registry.get("deployed", force_fetch=True)
    assert (spec.endpoint_id, spec.models, spec.base_url, spec.max_in_flight) == (
        endpoint["id"], ["echo-deployed"], stack.standin.api_base(), 4)

    code, out = deploy()
    assert code == 0 and out.rstrip().endswith("nothing to change"), out
    assert len(deployed_endpoints(stack)) == 1


def test_a_job_for_the_deployed_model_completes_on_the_deployed_endpoint(stack, api, deploy):
    assert deploy()[0] == 0
    container().registry.update("local", enabled=False)
    try:
        job = api.wait(api.submit("generate", {"prompt": "hi"}, model="echo-deployed"), timeout=60)
    finally:
        container().registry.update("local", enabled=True)
    assert job["status"] == "COMPLETED", job
    assert job["endpoint"] == "deployed" and job["output"]["text"] == "echo-deployed says: hi"
    [endpoint] = deployed_endpoints(stack)
    assert stack.standin.stats(endpoint["id"]).get("COMPLETED", 0) >= 1


def test_a_bad_deploy_file_is_refused_before_anything_is_called(stack, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEPLOY_FILE.replace("max: 1", "max: 0"))
    result = CliRunner().invoke(app, [str(bad), "--url", stack.url],
                                env={"RUNPOD_API_KEY": "k", "STILLHOUSE_API_KEY": "k"})
    assert result.exit_code == 2 and "endpoints.deployed.workers.max" in result.output, result.output


def test_a_changed_template_rolls_the_endpoint_s_worker_onto_its_new_environment(stack, api, deploy, tmp_path):
    assert deploy()[0] == 0
    [endpoint] = deployed_endpoints(stack)
    first_worker = stack.standin._endpoints[endpoint["id"]].worker.pod_id
    rolled = tmp_path / "rolled.yaml"
    rolled.write_text(DEPLOY_FILE.replace("stillhouse-worker:test", "stillhouse-worker:test2")
                      .replace("echo-deployed", "echo-rolled"))
    code, out = deploy(file=rolled)
    assert code == 0 and "~ template echo-worker" in out and "imageName 'stillhouse-worker:test' -> " in out, out
    assert stack.standin.endpoint_env(endpoint["id"])["MODEL"] == "echo-rolled"
    assert stack.standin._endpoints[endpoint["id"]].worker.pod_id != first_worker  # a new release
    assert container().registry.get("deployed", force_fetch=True).models == ["echo-rolled"]
    container().registry.update("local", enabled=False)
    try:
        job = api.wait(api.submit("generate", {"prompt": "hi"}, model="echo-rolled"), timeout=60)
    finally:
        container().registry.update("local", enabled=True)
    assert job["status"] == "COMPLETED" and job["output"]["text"] == "echo-rolled says: hi", job
    assert deploy()[0] == 0  # back to the module's file, for whoever runs next
