"""`stillhouse deploy`: the deploy file's validation, and the planner against RunPod's management API and
the router's registry (here the stand-in's management records and an in-memory registry; the HTTP path
end to end is tests/integration/test_deploy.py)."""
import copy
from pathlib import Path

import pytest
from stillhouse_local.deploy.plan import Deployer
from stillhouse_local.deploy.spec import DeployFileError, load, parse
from stillhouse_local.runpod_standin.management import Management

REPO = Path(__file__).resolve().parents[2]

FILE = {
    "runpod": {"serverless_url": "https://api.runpod.ai/v2"},
    "templates": {"worker-llama": {"image": "ghcr.io/x/worker:1", "env": {"MODEL": "llama-8b", "WORKER_CONCURRENCY": 8}}},
    "endpoints": {"llama-a": {"template": "worker-llama", "gpu_types": ["NVIDIA GeForce RTX 4090"],
                              "workers": {"min": 0, "max": 2}, "scaler": {"type": "REQUEST_COUNT", "value": 3},
                              "models": ["llama-8b"], "weight": 2, "max_in_flight": 16,
                              "secret_ref": "stillhouse/prod/runpod/llama-a"}},
}


def edited(**paths):
    """FILE with `a__b__c=value` edits."""
    data = copy.deepcopy(FILE)
    for path, value in paths.items():
        *head, last = path.split("__")
        node = data
        for key in head:
            node = node[key]
        node[last] = value
    return data


class RunPod:
    """RunPod's management API as the planner calls it, on the stand-in's records (no HTTP)."""

    def __init__(self):
        self.started, self.restarted, self.writes = [], [], 0
        self.records = Management(lambda ep, env, record: self.started.append((ep, env)),
                                  lambda ep, env: self.restarted.append((ep, env)))

    def list_templates(self):
        return self.records.list_templates()

    def list_endpoints(self):
        return self.records.list_endpoints()

    def create_template(self, body):
        self.writes += 1
        return self.records.create_template(body)

    def update_template(self, template_id, changes):
        self.writes += 1
        return self.records.update_template(template_id, changes)

    def create_endpoint(self, body):
        self.writes += 1
        return self.records.create_endpoint(body)

    def update_endpoint(self, endpoint_id, changes):
        self.writes += 1
        return self.records.update_endpoint(endpoint_id, changes)


class Router:
    """The router's registry as PUT /v1/endpoints/{name} keeps it: a full spec adds, a partial one merges."""

    def __init__(self):
        self.rows, self.writes = {}, 0

    def endpoints(self):
        return copy.deepcopy(self.rows)

    def put(self, name, spec):
        self.writes += 1
        self.rows[name] = {**self.rows.get(name, {"name": name}), **spec}


@pytest.fixture
def deployer():
    return Deployer(RunPod(), Router())


def actions(plan):
    return [(c.action, c.kind, c.name) for c in plan.changes]


# --- the deploy file --------------------------------------------------------------------------------

def test_the_example_deploy_file_validates():
    spec = load(REPO / "deploy" / "runpod.yaml")
    assert spec.endpoints and all(e.models for e in spec.endpoints.values())


@pytest.mark.parametrize(("edit", "field"), [
    ({"endpoints__llama-a__workers": {"min": 3, "max": 1}}, "endpoints.llama-a.workers"),
    ({"endpoints__llama-a__scaler": {"type": "GPU_UTIL", "value": 1}}, "endpoints.llama-a.scaler.type"),
    ({"endpoints__llama-a__scaler": {"type": "QUEUE_DELAY", "value": 0}}, "endpoints.llama-a.scaler.value"),
    ({"endpoints__llama-a__gpu_count": 9}, "endpoints.llama-a.gpu_count"),
    ({"endpoints__llama-a__gpu_types": []}, "endpoints.llama-a.gpu_types"),
    ({"endpoints__llama-a__idle_timeout_s": 0}, "endpoints.llama-a.idle_timeout_s"),
    ({"endpoints__llama-a__execution_timeout_ms": 10}, "endpoints.llama-a.execution_timeout_ms"),
    ({"endpoints__llama-a__template": "nope"}, "endpoints.llama-a.template"),
    ({"endpoints__llama-a__models": ["qwen-7b"]}, "endpoints.llama-a.models"),
    ({"endpoints__llama-a__workers_max": 3}, "endpoints.llama-a.workers_max"),
    ({"templates__worker-llama__container_disk_gb": 0}, "templates.worker-llama.container_disk_gb"),
    ({"templates__worker-llama__image": ""}, "templates.worker-llama.image"),
    ({"runpod__serverless_url": "ftp://x"}, "runpod.serverless_url"),
])
def test_a_bad_deploy_file_is_refused_naming_the_field(edit, field):
    with pytest.raises(DeployFileError) as caught:
        parse(edited(**edit))
    assert caught.value.field == field, caught.value


def test_an_endpoint_may_not_promise_a_model_its_template_does_not_serve():
    with pytest.raises(DeployFileError, match="qwen-7b not in template 'worker-llama'"):
        parse(edited(**{"endpoints__llama-a__models": ["llama-8b", "qwen-7b"]}))


def test_an_unreadable_file_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("endpoints: [unclosed")
    with pytest.raises(DeployFileError) as caught:
        load(tmp_path / "bad.yaml")
    assert caught.value.field == "file"


# --- the planner --------------------------------------------------------------------------------

def test_a_first_deploy_creates_template_endpoint_and_registry_entry_and_a_second_changes_nothing(deployer):
    spec = parse(FILE)
    assert [c.action for c in deployer.apply(spec).changes] == ["create", "create", "create"]
    [template] = deployer.runpod.list_templates()
    [endpoint] = deployer.runpod.list_endpoints()
    assert (template["imageName"], template["env"], template["isServerless"]) == (
        "ghcr.io/x/worker:1", {"MODEL": "llama-8b", "WORKER_CONCURRENCY": "8"}, True)
    assert endpoint["templateId"] == template["id"] and endpoint["name"] == "llama-a -fb"  # flashboot's suffix
    assert (endpoint["workersMax"], endpoint["scalerType"], endpoint["scalerValue"]) == (2, "REQUEST_COUNT", 3)
    assert deployer.runpod.started == [(endpoint["id"], {"MODEL": "llama-8b", "WORKER_CONCURRENCY": "8"})]
    assert deployer.router.rows["llama-a"] == {
        "name": "llama-a", "endpoint_id": endpoint["id"], "base_url": "https://api.runpod.ai/v2",
        "models": ["llama-8b"], "weight": 2.0, "max_in_flight": 16, "enabled": True,
        "secret_ref": "stillhouse/prod/runpod/llama-a", "streaming": False}

    writes = (deployer.runpod.writes, deployer.router.writes)
    again = deployer.apply(spec)
    assert actions(again) == [("unchanged", "template", "worker-llama"), ("unchanged", "endpoint", "llama-a"),
                              ("unchanged", "registry", "llama-a")]
    assert (deployer.runpod.writes, deployer.router.writes) == writes
    assert again.render().endswith("nothing to change")


def test_a_plan_changes_nothing_anywhere(deployer):
    plan = deployer.plan(parse(FILE))
    assert [c.action for c in plan.changes] == ["create", "create", "create"]
    assert (deployer.runpod.writes, deployer.router.writes) == (0, 0)
    assert "+ endpoint llama-a: create" in plan.render() and "3 changes" in plan.render()


def test_a_new_image_is_one_template_update_that_rolls_the_endpoint_s_workers(deployer):
    deployer.apply(parse(FILE))
    plan = deployer.apply(parse(edited(**{"templates__worker-llama__image": "ghcr.io/x/worker:2"})))
    assert [c for c in plan.changes if c.action != "unchanged"] == [plan.changes[0]]
    assert plan.changes[0].fields == {"imageName": "ghcr.io/x/worker:2"}
    assert "imageName 'ghcr.io/x/worker:1' -> 'ghcr.io/x/worker:2'" in plan.render()
    [endpoint] = deployer.runpod.list_endpoints()
    assert deployer.runpod.restarted == [(endpoint["id"], {"MODEL": "llama-8b", "WORKER_CONCURRENCY": "8"})]


def test_scaling_and_routing_edits_update_only_what_changed(deployer):
    deployer.apply(parse(FILE))
    plan = deployer.apply(parse(edited(**{"endpoints__llama-a__workers": {"min": 1, "max": 4},
                                          "endpoints__llama-a__weight": 0.5})))
    changed = {c.kind: c.fields for c in plan.changes if c.action == "update"}
    assert changed == {"endpoint": {"workersMin": 1, "workersMax": 4}, "registry": {"weight": 0.5}}
    [endpoint] = deployer.runpod.list_endpoints()
    assert (endpoint["workersMin"], endpoint["workersMax"], endpoint["version"]) == (1, 4, 1)
    assert deployer.router.rows["llama-a"]["weight"] == 0.5


def test_what_is_not_in_the_file_is_listed_and_left_alone(deployer):
    other = deployer.runpod.create_template({"name": "hand-made", "imageName": "x:1"})
    deployer.runpod.create_endpoint({"name": "by-hand", "templateId": other["id"], "gpuTypeIds": ["A100"]})
    writes = deployer.runpod.writes
    plan = deployer.apply(parse(FILE))
    assert ("unmanaged", "endpoint", "by-hand") in actions(plan)
    assert deployer.runpod.writes == writes + 2  # the file's template and endpoint, nothing else
    assert len(deployer.runpod.list_endpoints()) == 2


def test_a_streaming_template_registers_its_endpoints_as_streaming(deployer):
    deployer.apply(parse(edited(**{"templates__worker-llama__env": {"MODEL": "llama-8b", "WORKER_STREAMING": True}})))
    assert deployer.router.rows["llama-a"]["streaming"] is True


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_the_management_client_never_follows_a_redirect_with_our_key(status):
    """`stillhouse deploy` sends the RunPod key on every call: a redirect must be an error, never a hop."""
    from stillhouse_local.deploy.runpod_api import RunPodApiError, RunPodManagement

    from tests.support.receivers import Recorder

    target, redirecting = Recorder(), None
    try:
        redirecting = Recorder(status=status, location=f"{target.url}/v1/endpoints")
        api = RunPodManagement("rp_secret_key", base_url=f"{redirecting.url}/v1", timeout_s=10)
        with pytest.raises(RunPodApiError) as raised:
            api.list_endpoints()
        assert raised.value.status == status
        assert target.received == []  # neither the key nor the request went where the redirect pointed
        assert redirecting.received[0][2] == "Bearer rp_secret_key"
    finally:
        target.close()
        if redirecting is not None:
            redirecting.close()
