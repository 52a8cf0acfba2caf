"""template.yaml's scaling knobs: every numeric parameter is bounded, each function's reserved
concurrency is a parameter (0 = none reserved), the dispatch event source mappings take their batch
size, batching window and maximum concurrency from parameters, and the job queues' visibility follows
the dispatch timeout."""
from pathlib import Path

import pytest
from stillhouse_local.template import load_sam, translate

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = {"ApiFunction": "ApiReservedConcurrency", "DispatchFunction": "DispatchReservedConcurrency",
             "WebhookFunction": "WebhookReservedConcurrency", "DeliveryFunction": "DeliveryReservedConcurrency",
             "WorkflowTasksFunction": "WorkflowTasksReservedConcurrency",
             "SweeperFunction": "SweeperReservedConcurrency"}


@pytest.fixture(scope="module")
def sam():
    return load_sam(ROOT / "template.yaml")


@pytest.fixture(scope="module")
def cfn():
    return translate(ROOT / "template.yaml").cloudformation


def test_every_numeric_parameter_has_bounds_and_a_default_within_them(sam):
    for name, p in sam["Parameters"].items():
        if p["Type"] != "Number":
            continue
        assert "AllowedValues" in p or {"MinValue", "MaxValue"} <= set(p), f"{name} has no bounds"
        if "MinValue" in p:
            assert p["MinValue"] <= float(p["Default"]) <= p["MaxValue"], name


def test_the_integration_stack_s_parameters_are_within_the_bounds(sam):
    import ast
    import re

    source = (ROOT / "tests" / "integration" / "conftest.py").read_text()
    given = dict(re.findall(r'"(\w+)": "([^"]+)"', source))
    for name, value in given.items():
        p = sam["Parameters"].get(name)
        if p is None or p["Type"] != "Number":
            continue
        number = ast.literal_eval(value)
        assert p.get("MinValue", number) <= number <= p.get("MaxValue", number), (name, value)


def test_each_function_s_reserved_concurrency_is_a_parameter_reserving_nothing_by_default(sam, cfn):
    for function, parameter in FUNCTIONS.items():
        assert sam["Parameters"][parameter]["Default"] == 0
        reserved = cfn["Resources"][function]["Properties"]["ReservedConcurrentExecutions"]
        condition, when_set, otherwise = reserved["Fn::If"]
        assert (when_set, otherwise) == ({"Ref": parameter}, {"Ref": "AWS::NoValue"})
        assert cfn["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, 0]}]}


def test_every_dispatch_event_source_takes_batch_window_and_maximum_concurrency_from_parameters(sam):
    dispatch = sam["Resources"]["DispatchFunction"]["Properties"]
    events = {name: e["Properties"] for name, e in dispatch["Events"].items() if e["Type"] == "SQS"}
    assert set(events) == {"High", "Normal", "Batch"}
    for name, e in events.items():
        assert e["BatchSize"] == {"Ref": "DispatchBatchSize"}
        assert e["MaximumBatchingWindowInSeconds"] == {"Ref": "DispatchBatchingWindowSeconds"}
        # The batch lane has a concurrency of its own, so a large batch never takes the interactive queues' share.
        concurrency = "BatchDispatchMaxConcurrency" if name == "Batch" else "DispatchMaxConcurrency"
        assert e["ScalingConfig"] == {"MaximumConcurrency": {"Ref": concurrency}}
        assert e["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert dispatch["Timeout"] == {"Ref": "DispatchTimeoutSeconds"}


def test_the_job_queues_visibility_is_six_dispatch_timeouts_plus_the_longest_batching_window(sam):
    window = sam["Parameters"]["DispatchBatchingWindowSeconds"]["MaxValue"]
    table = sam["Mappings"]["DispatchTimeouts"]
    assert set(table) == set(sam["Parameters"]["DispatchTimeoutSeconds"]["AllowedValues"])
    for timeout, row in table.items():
        assert row["QueueVisibility"] == 6 * int(timeout) + window, timeout
    for queue in ("JobsHighQueue", "JobsNormalQueue"):
        visibility = sam["Resources"][queue]["Properties"]["VisibilityTimeout"]
        assert visibility == {"Fn::If": ["DeriveQueueVisibility",
                                         {"Fn::FindInMap": ["DispatchTimeouts", {"Ref": "DispatchTimeoutSeconds"},
                                                            "QueueVisibility"]},
                                         {"Ref": "QueueVisibilityTimeout"}]}


def test_moto_deploying_the_template_derives_the_queue_visibility_from_the_dispatch_timeout(aws_mock):
    """The embedded stack deploys this template with moto: with the defaults a job queue holds a message
    200 s (6 x 30 + 20); an explicit QueueVisibilityTimeout overrides it."""
    import json

    import boto3

    cloudformation = translate(ROOT / "template.yaml").cloudformation
    body = {**cloudformation, "Resources": {k: cloudformation["Resources"][k] for k in ("JobsHighQueue", "JobsHighDLQ")}}
    cfn, sqs = boto3.client("cloudformation", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
    for stack, parameters, expected in (("derived", [], "200"),
                                        ("given", [{"ParameterKey": "QueueVisibilityTimeout", "ParameterValue": "7"}],
                                         "7")):
        cfn.create_stack(StackName=stack, TemplateBody=json.dumps(body), Parameters=parameters)
        resources = cfn.describe_stack_resources(StackName=stack)["StackResources"]
        [url] = [r["PhysicalResourceId"] for r in resources if r["LogicalResourceId"] == "JobsHighQueue"]
        got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]
        assert got["VisibilityTimeout"] == expected, stack
