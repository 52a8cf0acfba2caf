"""template.yaml is the one description of the stack: these check what the embedded runtime and
AWS both rely on."""
import json
import re
from pathlib import Path

import pytest
from stillhouse_local.template import translate

from stillhouse import errors

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def local():
    return translate(ROOT / "template.yaml")


def substituted(spec, parameters):
    text = spec.definition_text
    for key, raw in spec.substitutions.items():
        if isinstance(raw, dict) and "Ref" in raw:
            value = parameters[raw["Ref"]]["Default"]
        else:
            value = "arn:aws:lambda:us-east-1:123456789012:function:f"
        text = text.replace("${" + key + "}", str(value))
    return text


def test_both_workflows_are_declared(local):
    assert set(local.state_machines) == {"RecoveryStateMachine", "CouncilStateMachine"}


def test_every_definition_placeholder_has_a_substitution_and_parses(local):
    parameters = local.cloudformation["Parameters"]
    for spec in local.state_machines.values():
        placeholders = set(re.findall(r"\$\{(\w+)\}", spec.definition_text))
        assert placeholders == set(spec.substitutions), spec.logical_id
        definition = json.loads(substituted(spec, parameters))
        assert definition["StartAt"] in definition["States"]


def _states(definition):
    for name, state in definition["States"].items():
        yield name, state
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            yield from _states(processor)


def test_retry_and_catch_names_are_our_error_classes_or_states_errors(local):
    parameters = local.cloudformation["Parameters"]
    ours = errors.WORKFLOW_ERROR_NAMES  # the one table of names a task may raise
    for spec in local.state_machines.values():
        for name, state in _states(json.loads(substituted(spec, parameters))):
            for rule in state.get("Retry", []) + state.get("Catch", []):
                for error in rule["ErrorEquals"]:
                    # Lambda's own names for a function that died (a timeout, an exit) count as Lambda's.
                    assert error.startswith(("States.", "Lambda.", "Sandbox.", "Runtime.")) or error in ours, \
                        (spec.logical_id, name, error)


def test_every_lambda_task_retries_lambdas_own_transient_errors(local):
    """Throttling or a service hiccup of Lambda itself is not the job's failure (AWS's recommended retrier)."""
    parameters = local.cloudformation["Parameters"]
    for spec in local.state_machines.values():
        for name, state in _states(json.loads(substituted(spec, parameters))):
            if state["Type"] == "Task":
                retried = {e for rule in state.get("Retry", []) for e in rule["ErrorEquals"]}
                assert {"Lambda.ServiceException", "Lambda.TooManyRequestsException"} <= retried, (spec.logical_id, name)


def test_every_task_runs_again_when_its_function_died_mid_step(local):
    """A Lambda killed between two calls (a timeout: Sandbox.Timedout; an exit) fails its task; every task
    of ours is safe to run again (stillhouse.crash_points), so each is retried rather than failing the job."""
    parameters = local.cloudformation["Parameters"]
    for spec in local.state_machines.values():
        for name, state in _states(json.loads(substituted(spec, parameters))):
            if state["Type"] == "Task":
                retried = {e for rule in state.get("Retry", []) for e in rule["ErrorEquals"]}
                assert {"Sandbox.Timedout", "Runtime.ExitError", "Lambda.Unknown"} <= retried, (spec.logical_id, name)


def test_every_retry_uses_full_jitter_and_a_bounded_backoff(local):
    parameters = local.cloudformation["Parameters"]
    for spec in local.state_machines.values():
        for name, state in _states(json.loads(substituted(spec, parameters))):
            for rule in state.get("Retry", []):
                assert rule["JitterStrategy"] == "FULL", name
                assert rule["MaxAttempts"] >= 1 and rule["BackoffRate"] >= 1, name


def test_every_terminal_path_records_the_job(local):
    """Each workflow ends through a task that writes the job, so none ends silently."""
    parameters = local.cloudformation["Parameters"]
    for spec in local.state_machines.values():
        states = json.loads(substituted(spec, parameters))["States"]
        assert states["RecordFailure"]["Next"] == "Failed"
        assert "record_failure" in json.dumps(states["RecordFailure"])


def test_queues_trigger_their_functions_with_partial_batch_failures(local):
    targets = {m.queue: m.function for m in local.queue_mappings}
    assert targets == {"JobsHighQueue": "DispatchFunction", "JobsNormalQueue": "DispatchFunction",
                       "JobsBatchQueue": "DispatchFunction", "WebhookDeliveryQueue": "DeliveryFunction",
                       "BatchControlQueue": "BatchesFunction"}
    assert all(m.report_batch_item_failures for m in local.queue_mappings)


def test_callers_webhook_notices_have_a_dlq_after_their_tries(local):
    redrive = local.cloudformation["Resources"]["WebhookDeliveryQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"]["Fn::GetAtt"][0] == "WebhookDeliveryDLQ"
    assert redrive["maxReceiveCount"] == {"Ref": "WebhookMaxTries"}


def test_each_job_queue_has_a_dlq_with_a_redrive_policy(local):
    resources = local.cloudformation["Resources"]
    for queue in ("JobsHighQueue", "JobsNormalQueue"):
        redrive = resources[queue]["Properties"]["RedrivePolicy"]
        assert redrive["deadLetterTargetArn"]["Fn::GetAtt"][0] == queue.replace("Queue", "DLQ")
        assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}


def test_every_function_handler_exists(local):
    for spec in local.functions.values():
        module, _, attr = spec.handler.rpartition(".")
        source = (spec.code_dir / f"{module}.py").read_text()
        assert f"def {attr}(" in source, spec.logical_id


def test_handlers_stay_thin(local):
    for spec in local.functions.values():
        lines = (spec.code_dir / "app.py").read_text().splitlines()
        assert len(lines) <= 40, f"{spec.logical_id} has {len(lines)} lines; logic belongs in the core"


def test_the_http_api_routes_reach_the_right_functions(local):
    routes = {(r.method, r.path): r.function for r in local.routes}
    assert routes[("ANY", "/v1/{proxy+}")] == "ApiFunction"
    assert routes[("POST", "/callbacks/runpod/{job_id}")] == "WebhookFunction"


def _references(value):
    """Logical ids a CloudFormation value depends on (Ref, GetAtt, ${X} / ${X.Attr} in Sub)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                yield inner
            elif key == "Fn::GetAtt":
                yield inner[0] if isinstance(inner, list) else inner.split(".")[0]
            elif key == "Fn::Sub":
                text = inner[0] if isinstance(inner, list) else inner
                yield from (name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text))
                if isinstance(inner, list):
                    yield from _references(inner[1])
            else:
                yield from _references(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _references(inner)


def test_the_deployed_template_has_no_circular_dependency(local):
    """CloudFormation refuses a cycle (e.g. a function reading the URL of the HttpApi that integrates it)."""
    resources = local.deployed["Resources"]
    graph = {}
    for name, res in resources.items():
        depends = res.get("DependsOn", [])
        refs = set(_references(res.get("Properties", {}))) | set([depends] if isinstance(depends, str) else depends)
        graph[name] = {r for r in refs if r in resources and r != name}
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph[node]:
            assert state.get(nxt) != "open", f"circular dependency: {' -> '.join([*path, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [])


def _statements(local, function):
    for policy in local.deployed["Resources"][f"{function}Role"]["Properties"]["Policies"]:
        yield from policy["PolicyDocument"]["Statement"]


def _allowed(local, function, action, resource_ref=None):
    for statement in _statements(local, function):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if action in actions and (resource_ref is None or resource_ref in set(_references(statement["Resource"]))):
            return True
    return False


def test_functions_that_resume_workflows_may_send_task_results_and_only_they(local):
    """Recording a RunPod result resumes the task waiting for it: the webhook, the sweeper's status check
    and the workflow tasks do (runpod/callbacks.py); the API and dispatch never do."""
    for action in ("states:SendTaskSuccess", "states:SendTaskFailure"):
        for function in ("WebhookFunction", "SweeperFunction", "WorkflowTasksFunction"):
            assert _allowed(local, function, action), (function, action)
        for function in ("ApiFunction", "DispatchFunction", "DeliveryFunction"):
            assert not _allowed(local, function, action), (function, action)


def test_functions_that_release_an_endpoint_slot_may_write_endpoint_state(local):
    """A cancel (api), a result (webhook, sweeper, workflow tasks) or a dispatch moves in-flight counters."""
    for function in ("ApiFunction", "DispatchFunction", "WebhookFunction", "SweeperFunction", "WorkflowTasksFunction"):
        assert _allowed(local, function, "dynamodb:UpdateItem", "EndpointStateTable"), function


def test_waiting_for_an_endpoint_has_its_own_long_retry(local):
    """No endpoint available is not a failure of the job: it waits far longer than an error is retried."""
    parameters = local.cloudformation["Parameters"]
    spec = local.state_machines["RecoveryStateMachine"]
    submit = json.loads(substituted(spec, parameters))["States"]["Submit"]
    (wait,) = [r for r in submit["Retry"] if r["ErrorEquals"] == ["NoEndpointAvailable"]]
    (errors_retry,) = [r for r in submit["Retry"] if "TransientError" in r["ErrorEquals"]]
    assert "NoEndpointAvailable" not in errors_retry["ErrorEquals"]
    assert wait["MaxAttempts"] > errors_retry["MaxAttempts"]
    assert wait["IntervalSeconds"] and wait["MaxDelaySeconds"]


# --- operations: alarms page someone; the embedded stack leaves them out quietly --------------------


def _alarms(local):
    return {name: res["Properties"] for name, res in local.deployed["Resources"].items()
            if res["Type"] == "AWS::CloudWatch::Alarm"}


def test_every_alarm_pages_the_alarm_topic(local):
    alarms = _alarms(local)
    assert len(alarms) >= 20
    for name, props in alarms.items():
        assert props.get("AlarmActions") == [{"Ref": "AlarmTopic"}], name
    topic = local.deployed["Resources"]["AlarmTopic"]
    assert topic["Type"] == "AWS::SNS::Topic"
    subscription = local.deployed["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"  # no email given: no subscription to confirm
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}


def _watched(props):
    """(namespace, metric name, dimension value refs) of every metric an alarm reads."""
    if "MetricName" in props:
        yield props["Namespace"], props["MetricName"], [d["Value"] for d in props.get("Dimensions", [])]
    for query in props.get("Metrics", []):
        if "MetricStat" in query:
            metric = query["MetricStat"]["Metric"]
            yield metric["Namespace"], metric["MetricName"], [d["Value"] for d in metric.get("Dimensions", [])]


def test_the_alarms_cover_what_operators_are_paged_for(local):
    watched = [w for props in _alarms(local).values() for w in _watched(props)]
    resources = local.deployed["Resources"]
    queues = {n for n, r in resources.items() if r["Type"] == "AWS::SQS::Queue"}
    dlqs = {q for q in queues if q.endswith("DLQ")}
    for queue in dlqs:
        assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", [{"Fn::GetAtt": [queue, "QueueName"]}]) in watched
    for queue in queues - dlqs:
        assert ("AWS/SQS", "ApproximateAgeOfOldestMessage", [{"Fn::GetAtt": [queue, "QueueName"]}]) in watched
    for fn in (n for n, r in resources.items() if r["Type"] == "AWS::Lambda::Function"):
        for metric in ("Errors", "Throttles"):
            assert ("AWS/Lambda", metric, [{"Ref": fn}]) in watched, (fn, metric)
    for machine in (n for n, r in resources.items() if r["Type"] == "AWS::StepFunctions::StateMachine"):
        assert ("AWS/States", "ExecutionsFailed", [{"Ref": machine}]) in watched, machine
    ours = {name for namespace, name, dims in watched if namespace == "stillhouse"}
    assert {"JobsFailed", "JobsFinished", "EndToEndLatency", "BreakerOpenFor", "WebhookDeliveryFailures"} <= ours
    for namespace, _, dims in watched:
        if namespace == "stillhouse":
            assert dims == ["stillhouse"]  # the service roll-up every EMF blob carries


def test_every_alarm_threshold_is_a_parameter_with_a_default(local):
    parameters = local.deployed["Parameters"]
    for name, props in _alarms(local).items():
        threshold = props["Threshold"]
        if isinstance(threshold, dict):
            assert "Default" in parameters[threshold["Ref"]], name
        else:
            assert threshold == 0 and "DLQ" in name, name  # only "a DLQ is not empty" is fixed


def test_the_dashboard_shows_the_metrics_the_code_emits(local):
    from stillhouse.telemetry.metrics import CATALOGUE

    (body,) = [r["Properties"]["DashboardBody"] for r in local.deployed["Resources"].values()
               if r["Type"] == "AWS::CloudWatch::Dashboard"]
    text = body["Fn::Sub"]
    names = {m.name for m in CATALOGUE}
    shown = set(re.findall(r'"stillhouse",\s*"(\w+)"', text)) | set(re.findall(r'MetricName=\\"(\w+)', text))
    assert shown <= names, shown - names  # no widget reads a metric nobody emits
    assert {"JobsCompleted", "JobsFailed", "EndToEndLatency", "BreakerOpenFor", "EstimatedCost"} <= shown


def test_the_embedded_stack_creates_only_what_moto_can_model(local):
    from moto.cloudformation.parsing import get_model_map

    modelled = set(get_model_map())
    # The secrets are created directly, not through moto's CloudFormation (moto_env._physical_secrets).
    left = {res["Type"] for name, res in local.cloudformation["Resources"].items() if name not in local.secrets}
    assert left <= modelled, left - modelled  # else moto warns at every `stillhouse up`
    assert not any(t.startswith("AWS::CloudWatch::") for t in left)


def test_every_lambda_task_of_the_workflows_passes_the_jobs_traceparent_on(local):
    parameters = local.cloudformation["Parameters"]
    for spec in local.state_machines.values():
        for name, state in _states(json.loads(substituted(spec, parameters))):
            if state["Type"] == "Task":
                payload = state["Parameters"].get("Payload", state["Parameters"])
                assert payload.get("traceparent.$") == "$$.Execution.Input.traceparent", (spec.logical_id, name)


def test_traces_capture_no_response_or_error_bodies_in_any_function():
    """Powertools' Tracer records a handler's response and error as X-Ray metadata unless told not to; the
    API's responses carry API keys and webhook secrets shown once, and every function handles job outputs."""
    from stillhouse_local.template import load_sam

    template = load_sam(ROOT / "template.yaml")
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"
    assert variables["POWERTOOLS_TRACER_CAPTURE_ERROR"] == "false"
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            own = resource["Properties"].get("Environment", {}).get("Variables", {})
            assert not {"POWERTOOLS_TRACER_CAPTURE_RESPONSE", "POWERTOOLS_TRACER_CAPTURE_ERROR"} & set(own), name
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        app = ROOT / resource["Properties"]["CodeUri"] / "app.py"
        source = app.read_text()
        assert "Tracer(" not in source and "capture_response" not in source, app  # only lambda_tracer()
        # A Lambda handler is traced through lambda_tracer(); the streaming front is a web app behind the
        # Lambda Web Adapter (Handler: run.sh), with no handler of its own to trace.
        if resource["Properties"]["Handler"] != "run.sh":
            assert "tracer = lambda_tracer()" in source, app
