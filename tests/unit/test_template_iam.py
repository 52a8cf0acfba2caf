"""Least privilege in template.yaml: every statement a function's role gets names the resources it may
touch. A wildcard is allowed only where it is listed below with the reason AWS leaves no narrower choice."""
import json
import re
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from stillhouse_local.template import load_sam

ROOT = Path(__file__).resolve().parents[2]

#: (function, action) -> why its Resource may contain `*`. Anything else with a `*` fails the test.
WILDCARDS_ALLOWED = {
    **{(fn, action): "task tokens name no resource: Step Functions takes only Resource '*' for SendTask*"
       for fn in ("WebhookFunction", "SweeperFunction", "WorkflowTasksFunction")
       for action in ("states:SendTaskSuccess", "states:SendTaskFailure")},
    **{(fn, "secretsmanager:GetSecretValue"): "per-endpoint RunPod keys (EndpointSpec.secret_ref), named at run "
       "time; only their own prefix stillhouse/${Stage}/runpod/, which reaches no other secret of ours"
       for fn in ("ApiFunction", "DispatchFunction", "WebhookFunction", "SweeperFunction", "WorkflowTasksFunction",
                  "BatchesFunction")},
    **{(fn, action): "executions are named per job at run time; only this stack's state machines"
       for fn, action in (("ApiFunction", "states:StopExecution"), ("SweeperFunction", "states:DescribeExecution"),
                          ("BatchesFunction", "states:StopExecution"))},
}
#: Who may resume a waiting workflow task: the code paths that record a RunPod result for a job a
#: workflow waits for (runpod/callbacks.py: the webhook, the sweeper's status check, the workflow tasks).
RESUMES_TASKS = {"WebhookFunction", "SweeperFunction", "WorkflowTasksFunction"}


@pytest.fixture(scope="module")
def template():
    return json.loads(json.dumps(load_sam(ROOT / "template.yaml")))


def statements(template):
    """(function, statement) for every inline statement of every function's policies."""
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for policy in resource["Properties"].get("Policies", []):
            if isinstance(policy, dict) and "Statement" in policy:
                for statement in policy["Statement"]:
                    yield name, statement


def listed(value):
    return value if isinstance(value, list) else [value]


def text(resource):
    """A Resource as written: a string, or the template of a !Sub."""
    if isinstance(resource, dict):
        sub = resource.get("Fn::Sub")
        return sub if isinstance(sub, str) else sub[0] if sub else json.dumps(resource)
    return resource


def test_no_resource_is_a_wildcard_unless_allowed_with_a_reason(template):
    unexplained = []
    for function, statement in statements(template):
        for action in listed(statement["Action"]):
            for resource in map(text, listed(statement["Resource"])):
                if "*" in resource and not WILDCARDS_ALLOWED.get((function, action)):
                    unexplained.append((function, action, resource))
    assert unexplained == []


def test_a_bare_star_only_where_aws_allows_nothing_narrower(template):
    for function, statement in statements(template):
        if "*" in map(text, listed(statement["Resource"])):
            assert {a for a in listed(statement["Action"])} <= {"states:SendTaskSuccess", "states:SendTaskFailure"}, (
                function, statement)


def test_secrets_are_scoped_to_the_stage(template):
    for function, statement in statements(template):
        for action in listed(statement["Action"]):
            if action.startswith("secretsmanager:"):
                for resource in map(text, listed(statement["Resource"])):
                    assert ":secret:stillhouse/${Stage}/" in resource, (function, resource)


def test_only_the_functions_that_resume_workflow_tasks_may_send_task_results(template):
    senders = {function for function, statement in statements(template)
               for action in listed(statement["Action"]) if action.startswith("states:SendTask")}
    assert senders == RESUMES_TASKS


def test_no_function_gets_a_star_action_or_a_heartbeat_nobody_sends(template):
    for function, statement in statements(template):
        for action in listed(statement["Action"]):
            assert "*" not in action, (function, action)
            assert action != "states:SendTaskHeartbeat", function


def test_the_allow_list_has_no_stale_entries(template):
    used = {(function, action) for function, statement in statements(template)
            for action in listed(statement["Action"])
            if any("*" in text(r) for r in listed(statement["Resource"]))}
    assert set(WILDCARDS_ALLOWED) == used


def test_the_delivery_function_reads_webhook_secrets_and_not_the_callback_key(template):
    policies = json.dumps(template["Resources"]["DeliveryFunction"]["Properties"]["Policies"])
    assert "CallbackKeySecret" not in policies and "WebhookSecretsTable" in policies
    assert "CallbackKeySecret" not in json.dumps(template["Resources"]["ApiFunction"]["Properties"]["Policies"])


# --- which secrets each role can read, against the table in docs/security.md ------------------------------

#: Who may read the callback keyring: the functions that mint callback tokens (dispatch, workflow tasks) or
#: check them (webhook). Whoever else can read it can forge any job's result.
SIGNS_OR_VERIFIES_CALLBACKS = {"DispatchFunction", "WebhookFunction", "WorkflowTasksFunction"}
#: A secret's ARN is its name, a hyphen and six random characters.
ARN_SUFFIX = "-AbC123"


def declared_secrets(template):
    """logical id -> name (as written, `${Stage}` and all) of each secret the template declares."""
    return {logical_id: text(resource["Properties"]["Name"]) for logical_id, resource in template["Resources"].items()
            if resource["Type"] == "AWS::SecretsManager::Secret"}


def reachable_secrets(template):
    """function -> what its role may read from Secrets Manager: each secret the template declares that a
    grant reaches (by reference, or matched by a wildcard grant as IAM matches its ARN), plus each wildcard
    grant itself as its name pattern (secrets made after deploy, such as per-endpoint RunPod keys)."""
    declared = declared_secrets(template)
    reach = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        got = set()
        for policy in resource["Properties"].get("Policies", []):
            assert isinstance(policy, dict), (name, policy)  # a managed policy by name could read anything
            if "AWSSecretsManagerGetSecretValuePolicy" in policy:
                got.add(declared[policy["AWSSecretsManagerGetSecretValuePolicy"]["SecretArn"]["Ref"]])
            for statement in policy.get("Statement", []):
                if not any(action.startswith("secretsmanager:") for action in listed(statement["Action"])):
                    continue
                for arn in map(text, listed(statement["Resource"])):
                    pattern = arn.split(":secret:", 1)[1]
                    got.add(pattern)
                    got |= {secret for secret in declared.values() if fnmatchcase(secret + ARN_SUFFIX, pattern)}
        reach[name] = got
    for name, resource in template["Resources"].items():  # a function given another's role reads what it reads
        role = resource.get("Properties", {}).get("Role") if resource["Type"] == "AWS::Serverless::Function" else None
        if role is not None:
            owner = role["Fn::GetAtt"][0] if isinstance(role["Fn::GetAtt"], list) else role["Fn::GetAtt"].split(".")[0]
            reach[name] = reach[owner.removesuffix("Role")]
    return reach


def documented_secrets():
    """The table under "Secrets each function may read" in docs/security.md: function -> names."""
    doc = (ROOT / "docs" / "security.md").read_text()
    section = doc.split("### Secrets each function may read", 1)[1]
    table = {}
    for line in section.splitlines()[1:]:
        if table and not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        found = re.fullmatch(r"`(\w+Function)`", cells[0]) if line.startswith("|") else None
        if found:
            table[found.group(1)] = {name.replace("{Stage}", "${Stage}") for name in re.findall(r"`([^`]+)`", cells[1])}
    return table


def test_the_secrets_each_role_can_read_are_the_ones_docs_security_lists(template):
    assert reachable_secrets(template) == documented_secrets()


def test_only_the_functions_that_sign_or_verify_callbacks_can_read_the_callback_keyring(template):
    keyring = declared_secrets(template)["CallbackKeySecret"]
    readers = {function for function, names in reachable_secrets(template).items() if keyring in names}
    assert readers == SIGNS_OR_VERIFIES_CALLBACKS


def test_per_endpoint_runpod_keys_are_granted_under_their_own_prefix_which_reaches_no_declared_secret(template):
    patterns = {name for names in reachable_secrets(template).values() for name in names if "*" in name}
    assert patterns == {"stillhouse/${Stage}/runpod/*"}
    for secret in declared_secrets(template).values():
        assert not fnmatchcase(secret + ARN_SUFFIX, "stillhouse/${Stage}/runpod/*"), secret


def test_no_secret_ref_can_name_a_secret_the_template_declares(template):
    """The prefix an endpoint's secret_ref must start with, as the template sets it, names none of the
    stack's own secrets: not the callback keyring, not the default RunPod key."""
    from stillhouse.config import Settings
    from stillhouse.routing.registry import EndpointPolicy, EndpointSpec, InvalidEndpointConfig, allowed_origins

    variable = "STILLHOUSE_" + "runpod_secret_prefix".upper()
    assert "runpod_secret_prefix" in Settings.model_fields
    prefix = text(template["Globals"]["Function"]["Environment"]["Variables"][variable])
    assert prefix == "stillhouse/${Stage}/runpod/"
    policy = EndpointPolicy(origins=allowed_origins(EndpointSpec.model_fields["base_url"].default, []),
                            secret_prefix=prefix.replace("${Stage}", "prod"))
    policy.check(EndpointSpec(name="ep", endpoint_id="abc", secret_ref="stillhouse/prod/runpod/ep-key"))
    for secret in declared_secrets(template).values():
        spec = EndpointSpec(name="ep", endpoint_id="abc", secret_ref=secret.replace("${Stage}", "prod"))
        with pytest.raises(InvalidEndpointConfig) as refused:
            policy.check(spec)
        assert refused.value.field == "secret_ref"
