"""template.yaml -> what the embedded stack creates: the one source of truth for resources.

The SAM template is translated offline with aws-sam-translator; local CodeUri/ContentUri are
swapped for S3 URIs first (the translator insists), and the parts moto must not run itself are
taken out and returned separately: SQS event source mappings (our pollers run them, honouring
BatchSize and partial batch responses) and the HTTP API (our HTTP shim serves it). Alarms and the
dashboard are left out: nothing local reads them.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CODE_BUCKET = "stillhouse-local-code"
#: What only an operator of the deployed stack needs: alarms, their topic and the dashboard. Nothing local
#: reads them, and moto's CloudFormation would only warn about the types it does not model.
NOT_EMBEDDED = frozenset({"AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard", "AWS::SNS::Topic",
                          "AWS::SNS::Subscription",
                          # Each function's published version and its alias `live` (AutoPublishAlias, for
                          # SnapStart): the embedded stack invokes the code in-process, and the event sources
                          # that name the alias are its own (its queue pollers, gateway, schedules).
                          "AWS::Lambda::Version", "AWS::Lambda::Alias"})
#: What moto's CloudFormation does not model, and moto would not enforce anyway: the results bucket's
#: TLS-only policy (the embedded stack's S3 is plain http on loopback).
NOT_MODELLED = frozenset({"AWS::S3::BucketPolicy"})


@dataclass
class FunctionSpec:
    logical_id: str
    code_dir: Path
    handler: str  # "app.handler"


@dataclass
class QueueMapping:
    function: str  # logical id
    queue: str  # logical id of the queue
    batch_size: Any  # int or {"Ref": parameter}
    report_batch_item_failures: bool
    #: ScalingConfig.MaximumConcurrency: int, {"Ref": parameter}, or None (Lambda's own scaling, no cap)
    maximum_concurrency: Any = None


@dataclass
class HttpRoute:
    function: str
    method: str  # "GET", "POST", "ANY"
    path: str  # "/v1/{proxy+}"

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in ("ANY", method):
            return None
        pattern = "^"
        for part in re.split(r"(\{[^}]+\})", self.path):
            if part.startswith("{") and part.endswith("+}"):
                pattern += f"(?P<{part[1:-2]}>.+)"
            elif part.startswith("{"):
                pattern += f"(?P<{part[1:-1]}>[^/]+)"
            else:
                pattern += re.escape(part)
        found = re.match(pattern + "$", path)
        return found.groupdict() if found else None

    @property
    def specificity(self) -> tuple[int, int]:
        # API Gateway prefers the most specific route: fewer greedy/variable parts, longer literal.
        greedy = self.path.count("+}")
        variables = self.path.count("{")
        return (greedy, variables - len(self.path) / 1000)


@dataclass
class StreamedRoute:
    """A route the embedded gateway serves through a streaming function (its Metadata `StreamedRoutes`):
    the function's `StreamHandler` answers with chunks, sent as they come."""

    function: str
    method: str
    path: str


@dataclass
class Schedule:
    function: str  # logical id
    expression: str  # "rate(1 minute)"

    @property
    def period_s(self) -> float:
        found = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", self.expression.strip())
        if not found:
            raise ValueError(f"the embedded scheduler runs rate() expressions only, not {self.expression!r}")
        unit = {"minute": 60, "hour": 3600, "day": 86400}[found.group(2).rstrip("s")]
        return int(found.group(1)) * unit


@dataclass
class StateMachineSpec:
    logical_id: str
    definition_text: str  # the .asl.json with ${...} placeholders
    substitutions: dict[str, Any]  # raw: literals, {"Ref": p} or {"Fn::GetAtt": [fn, "Arn"]}


@dataclass
class LocalTemplate:
    cloudformation: dict[str, Any]  # what the embedded stack creates in moto
    deployed: dict[str, Any] = field(default_factory=dict)  # the whole translation, as AWS would get it
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    queue_mappings: list[QueueMapping] = field(default_factory=list)
    routes: list[HttpRoute] = field(default_factory=list)
    streamed_routes: list[StreamedRoute] = field(default_factory=list)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    state_machines: dict[str, StateMachineSpec] = field(default_factory=dict)
    schedules: list[Schedule] = field(default_factory=list)


def load_sam(path: Path) -> dict[str, Any]:
    from cfnlint.decode import cfn_yaml  # understands !Ref, !Sub, !GetAtt ...

    return cfn_yaml.load(str(path))


def _strip_marks(value: Any) -> Any:
    """cfn-lint's YAML nodes carry line marks; plain dicts/lists/str are what the translator wants."""
    if isinstance(value, dict):
        return {str(k): _strip_marks(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_marks(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


class _NoPolicies:
    def load(self) -> dict[str, str]:
        return {}


def translate(template_path: Path) -> LocalTemplate:
    from samtranslator.translator.transform import transform

    root = template_path.parent
    sam = _strip_marks(load_sam(template_path))
    local = LocalTemplate(cloudformation={})
    for name, res in sam["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::Serverless::Function":
            stream_handler = res.get("Metadata", {}).get("StreamHandler")
            # A streaming function runs behind the Lambda Web Adapter on AWS; here the gateway calls its
            # stream handler itself, so the adapter's layer is not needed (nor known to moto).
            local.functions[name] = FunctionSpec(name, root / props["CodeUri"], stream_handler or props["Handler"])
            if stream_handler:
                props.pop("Layers", None)
                for route in res["Metadata"].get("StreamedRoutes", []):
                    method, path = route.split(" ", 1)
                    local.streamed_routes.append(StreamedRoute(name, method.upper(), path))
            props["CodeUri"] = f"s3://{CODE_BUCKET}/{name}.zip"
            for event in props.get("Events", {}).values():
                ep = event.get("Properties", {})
                if event["Type"] == "HttpApi":
                    local.routes.append(HttpRoute(name, ep["Method"].upper(), ep["Path"]))
                elif event["Type"] == "Schedule":
                    local.schedules.append(Schedule(name, ep["Schedule"]))
                elif event["Type"] == "SQS":
                    local.queue_mappings.append(QueueMapping(
                        function=name,
                        queue=ep["Queue"]["Fn::GetAtt"][0] if isinstance(ep["Queue"]["Fn::GetAtt"], list)
                        else ep["Queue"]["Fn::GetAtt"].split(".")[0],
                        batch_size=ep.get("BatchSize", 10),
                        report_batch_item_failures="ReportBatchItemFailures" in ep.get("FunctionResponseTypes", []),
                        maximum_concurrency=(ep.get("ScalingConfig") or {}).get("MaximumConcurrency"),
                    ))
        elif res["Type"] == "AWS::Serverless::LayerVersion":
            props["ContentUri"] = f"s3://{CODE_BUCKET}/{name}.zip"
        elif res["Type"] == "AWS::SecretsManager::Secret":
            local.secrets[name] = props  # moto's CloudFormation has no secrets: created directly
        elif res["Type"] == "AWS::Serverless::StateMachine":
            # moto's CloudFormation creates state machines in its non-executing backend and ignores
            # DefinitionSubstitutions: the stack creates them itself from the same definition file.
            text = (root / props.pop("DefinitionUri")).read_text()
            # Substitutions stay in the translation too, so `deployed` keeps the machine's dependencies.
            local.state_machines[name] = StateMachineSpec(name, text, props.get("DefinitionSubstitutions", {}))
            props["Definition"] = {"StartAt": "Placeholder", "States": {"Placeholder": {"Type": "Succeed"}}}
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    cfn = transform(copy.deepcopy(sam), {}, _NoPolicies())
    local.deployed = copy.deepcopy(cfn)
    drop = [
        name for name, res in cfn["Resources"].items()
        if res["Type"].startswith("AWS::ApiGatewayV2::")
        or res["Type"] in ("AWS::StepFunctions::StateMachine", "AWS::Events::Rule")
        or res["Type"] in ("AWS::Lambda::EventSourceMapping", "AWS::Lambda::Permission", "AWS::Lambda::Url")
        or res["Type"] in NOT_EMBEDDED | NOT_MODELLED
    ]
    for name in drop:
        del cfn["Resources"][name]
    cfn.pop("Outputs", None)  # they reference the HTTP API, which is ours locally
    local.cloudformation = cfn
    local.routes.sort(key=lambda r: r.specificity)
    return local
