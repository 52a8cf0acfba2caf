"""LocalStack as the embedded runtime's AWS: the template's stack deployed into it, the Lambdas in-process.

The other backend of the embedded stack (moto_env.MotoEnvironment is the default); the stack picks one by
configuration (`StackOptions.aws`, `stillhouse up --aws localstack`) and the business code sees only
`STILLHOUSE_LOCALSTACK=true` + `LOCALSTACK_HOST`, read by the one clients factory (stillhouse.aws).

LocalStack here runs without Docker, so it has no Lambda: the template's tables, queues, bucket and SSM
parameters go to LocalStack's CloudFormation (which resolves their Refs, GetAtts and Conditions as AWS
would), the functions stay out of it, and what their environment would hold comes back as stack outputs.
The state machines are created as on moto; their executions cannot invoke Lambda tasks here.
If no LocalStack answers at LOCALSTACK_HOST, scripts/localstack.sh installs and starts one, and stops it again.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from stillhouse_local.lambdas import FunctionRegistry
from stillhouse_local.moto_env import _replace_refs, _resolve, _sub
from stillhouse_local.template import LocalTemplate

log = logging.getLogger(__name__)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "localstack.sh"
REGION = "us-east-1"
ACCOUNT = "000000000000"  # LocalStack's default account (localstack-client's credentials map to it)
#: Resource types LocalStack's CloudFormation creates here; the rest (Lambda, IAM, alarms) stays out.
SERVED = frozenset({"AWS::DynamoDB::Table", "AWS::SQS::Queue", "AWS::SQS::QueuePolicy", "AWS::S3::Bucket",
                    "AWS::SSM::Parameter"})


class LocalStackUnavailable(RuntimeError):
    """No LocalStack answers, and scripts/localstack.sh could not install or start one (the message says why)."""


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class LocalStackEnvironment:
    def __init__(self, host: str | None = None) -> None:
        # localstack-client's convention: LOCALSTACK_HOST=host:port (default localhost:4566).
        found = host or os.environ.get("LOCALSTACK_HOST") or "127.0.0.1:4566"
        name, _, port = found.partition(":")
        self.host = "127.0.0.1" if name in ("", "localhost") else name  # LocalStack listens on IPv4 here
        self.port = int(port or 4566)
        self.url = f"http://{self.host}:{self.port}"
        self.stack_name = f"stillhouse-{secrets.token_hex(3)}"  # a LocalStack outlives a run: names never clash
        self._started_here = False
        self._environment: dict[str, str] = {}

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
            os.environ.setdefault(key, value)
        os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
        if _answers(self.host, self.port):
            return
        if self.host != "127.0.0.1":
            raise LocalStackUnavailable(f"no LocalStack answers at {self.url}")
        self._script("start")
        self._started_here = True

    def stop(self) -> None:
        if self._started_here:
            self._script("stop")
            self._started_here = False

    def _script(self, command: str) -> None:
        env = {**os.environ, "LOCALSTACK_PORT": str(self.port)}
        done = subprocess.run([str(SCRIPT), command], check=False, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise LocalStackUnavailable(f"scripts/localstack.sh {command}: " + (lines[-1] if lines else f"exit {done.returncode}"))

    def process_environment(self) -> dict[str, str | None]:
        """What the functions' process needs to reach this LocalStack (None: unset)."""
        return {"STILLHOUSE_LOCALSTACK": "true", "LOCALSTACK_HOST": f"{self.host}:{self.port}", "AWS_ENDPOINT_URL": None}

    def client(self, service: str) -> Any:
        from localstack_client.session import Session

        return Session(region_name=REGION, localstack_host=f"{self.host}:{self.port}").client(service)

    # --- the template's stack --------------------------------------------------------------------
    def deploy(self, local: LocalTemplate, parameters: dict[str, str], secret_values: dict[str, str]) -> dict[str, str]:
        """Create the stack; return logical id -> physical id."""
        defaults = {k: str(v.get("Default", "")) for k, v in local.cloudformation.get("Parameters", {}).items()}
        resolved = {**defaults, **{k: str(v) for k, v in parameters.items()}}
        resources = self._secrets(local, resolved, secret_values)
        machines = {logical: f"{self.stack_name}-{logical}" for logical in local.state_machines}
        replacements = {logical: {"Ref": name} for logical, name in resources.items()}
        for logical, name in machines.items():
            arn = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"
            replacements[logical] = {"Ref": arn, "Arn": arn, "Name": name}
        template = _replace_refs(local.cloudformation, replacements)

        kept = {name: res for name, res in template["Resources"].items() if res["Type"] in SERVED}
        functions = {name: res for name, res in template["Resources"].items() if res["Type"] == "AWS::Lambda::Function"}
        literal, outputs, names = {}, {}, {}
        for fn in functions.values():
            for key, value in fn["Properties"].get("Environment", {}).get("Variables", {}).items():
                if not isinstance(value, dict):
                    literal[key] = str(value)
                elif _refers_only_to(value, kept, template):
                    output = f"Env{len(names)}"  # output names are alphanumeric; variable names are not
                    names[output], outputs[output] = key, {"Value": value}
                else:
                    log.warning("%s is left unset: it refers to a resource LocalStack does not run here", key)
        for res in kept.values():
            if isinstance(res.get("DependsOn"), list):
                res["DependsOn"] = [d for d in res["DependsOn"] if d in kept]
            elif isinstance(res.get("DependsOn"), str) and res["DependsOn"] not in kept:
                del res["DependsOn"]
        body = {**template, "Resources": kept, "Outputs": outputs}
        stack = self._create_stack(body, parameters)
        for page in self.client("cloudformation").get_paginator("list_stack_resources").paginate(StackName=self.stack_name):
            for summary in page["StackResourceSummaries"]:
                if summary.get("PhysicalResourceId"):
                    resources[summary["LogicalResourceId"]] = summary["PhysicalResourceId"]
        self._environment = {**literal, **{names[o["OutputKey"]]: o["OutputValue"] for o in stack.get("Outputs", [])}}
        for logical in functions:  # what the in-process functions are called (LocalStack has none of them)
            resources[logical] = f"{self.stack_name}-{logical}"

        sfn = self.client("stepfunctions")
        for logical, spec in local.state_machines.items():
            definition = spec.definition_text
            for key, raw in spec.substitutions.items():
                value = _resolve(raw, resolved, resources).replace(":123456789012:", f":{ACCOUNT}:")
                definition = definition.replace("${" + key + "}", value)
            json.loads(definition)  # fail here, clearly, on a placeholder left unresolved
            resources[logical] = sfn.create_state_machine(
                name=machines[logical], definition=definition, type="STANDARD",
                roleArn=f"arn:aws:iam::{ACCOUNT}:role/{machines[logical]}")["stateMachineArn"]
        return resources

    def _secrets(self, local: LocalTemplate, parameters: dict[str, str], values: dict[str, str]) -> dict[str, str]:
        """The template's secrets, created directly (their values are the stack's: the stand-in's API key);
        a secret left by an earlier run in the same LocalStack gets the new value."""
        sm = self.client("secretsmanager")
        created: dict[str, str] = {}
        for logical_id, props in local.secrets.items():
            name = _sub(props.get("Name", logical_id), parameters)
            value = values.get(logical_id) or secrets.token_urlsafe(36)
            try:
                sm.create_secret(Name=name, SecretString=value)
            except sm.exceptions.ResourceExistsException:
                sm.put_secret_value(SecretId=name, SecretString=value)
            created[logical_id] = name
        return created

    def _create_stack(self, body: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
        cfn = self.client("cloudformation")
        cfn.create_stack(StackName=self.stack_name, TemplateBody=json.dumps(body),
                         Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items()])
        deadline = time.monotonic() + 120
        while True:
            stack = cfn.describe_stacks(StackName=self.stack_name)["Stacks"][0]
            if stack["StackStatus"] == "CREATE_COMPLETE":
                return stack
            if not stack["StackStatus"].endswith("IN_PROGRESS") or time.monotonic() > deadline:
                events = cfn.describe_stack_events(StackName=self.stack_name)["StackEvents"]
                reasons = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}" for e in events
                           if e.get("ResourceStatusReason") and "FAILED" in e.get("ResourceStatus", "")]
                raise RuntimeError(f"LocalStack stack {self.stack_name} is {stack['StackStatus']}: {reasons[:5]}")
            time.sleep(0.2)

    def install_lambda_runtime(self, functions: FunctionRegistry) -> None:
        """Nothing to install: LocalStack runs no Lambda here; pollers, the HTTP shim and schedules call the
        functions in-process, as on moto."""

    def function_environment(self, physical_names: list[str]) -> dict[str, str]:
        """The functions' resolved environment (from the stack's outputs)."""
        return dict(self._environment)


def _refers_only_to(node: Any, kept: dict[str, Any], template: dict[str, Any]) -> bool:
    """Whether every Ref / GetAtt / ${...} in `node` names a parameter, a pseudo parameter or a kept resource."""
    known = set(kept) | set(template.get("Parameters", {}))

    def names(value: Any) -> list[str]:
        if isinstance(value, dict):
            found: list[str] = []
            for key, inner in value.items():
                if key == "Ref":
                    found.append(inner)
                elif key == "Fn::GetAtt":
                    found.append(inner[0] if isinstance(inner, list) else inner.split(".")[0])
                elif key == "Fn::Sub":
                    text = inner[0] if isinstance(inner, list) else inner
                    found += [part.split("}")[0].split(".")[0] for part in text.split("${")[1:]]
                    found += names(inner[1]) if isinstance(inner, list) else []
                else:
                    found += names(inner)
            return found
        if isinstance(value, list):
            return [n for item in value for n in names(item)]
        return []

    return all(name.startswith("AWS::") or name in known for name in names(node))
