"""moto's server in a thread on 127.0.0.1, with the template's stack deployed into it."""
from __future__ import annotations

import io
import json
import logging
import os
import secrets
import socket
import threading
import warnings
import zipfile
from typing import Any

import boto3
import requests

from stillhouse_local.lambdas import FunctionRegistry
from stillhouse_local.template import CODE_BUCKET, LocalTemplate

STACK_NAME = "stillhouse"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OneDynamoDBCallAtATime:
    """WSGI middleware: moto's DynamoDB checks a ConditionExpression and then writes, with nothing held
    in between, so two threads can both pass the same condition (DynamoDB itself makes it atomic). Our
    exactly-once status changes rest on that atomicity, so DynamoDB calls take turns. Other services
    are left concurrent: an SQS long poll must not hold up everything else."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self._app(environ, start_response)
        with self._lock:
            return list(self._app(environ, start_response))  # the whole response, inside the lock


def moto_server(ip_address: str, port: int) -> Any:
    """moto's threaded server with DynamoDB's conditional writes made atomic."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from moto.server import ThreadedMotoServer
    from werkzeug.serving import make_server

    class AtomicDynamoDBMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:  # as moto's, with the app wrapped
            app = OneDynamoDBCallAtATime(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return AtomicDynamoDBMotoServer(ip_address=ip_address, port=port, verbose=False)


class MotoEnvironment:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None

    def start(self) -> None:
        # The ASL interpreter invokes Lambda at localhost:$MOTO_PORT; boto3 needs some credentials.
        os.environ["MOTO_PORT"] = str(self.port)
        for key, value in FAKE_CREDENTIALS.items():
            os.environ.setdefault(key, value)
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per AWS call drowns the CLI
        # moto has no CloudFormation model for alarms and dashboards (ops only, not needed embedded): it would
        # say so, twice per resource, at every start.
        logging.getLogger("moto").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", message=r"Tried to parse AWS::CloudWatch::", category=UserWarning)

        self._server = moto_server("127.0.0.1", self.port)
        self._server.start()
        requests.post(f"{self.url}/moto-api/config", json={"stepfunctions": {"execute_state_machine": True}},
                      timeout=5).raise_for_status()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1")

    def process_environment(self) -> dict[str, str | None]:
        """What the functions' process needs to reach this moto (None: unset)."""
        return {"AWS_ENDPOINT_URL": self.url, "STILLHOUSE_LOCALSTACK": None}

    def deploy(self, local: LocalTemplate, parameters: dict[str, str], secret_values: dict[str, str]) -> dict[str, str]:
        """Create the stack; return logical id -> physical id."""
        s3 = self.client("s3")
        s3.create_bucket(Bucket=CODE_BUCKET)
        placeholder = io.BytesIO()
        with zipfile.ZipFile(placeholder, "w") as archive:  # code runs in-process; moto only needs a zip
            archive.writestr("app.py", "def handler(event, context):\n    return event\n")
        for name, res in local.cloudformation["Resources"].items():
            if res["Type"] in ("AWS::Lambda::Function", "AWS::Lambda::LayerVersion"):
                s3.put_object(Bucket=CODE_BUCKET, Key=f"{name}.zip", Body=placeholder.getvalue())
        defaults = {k: str(v.get("Default", "")) for k, v in local.cloudformation.get("Parameters", {}).items()}
        resolved = {**defaults, **{k: str(v) for k, v in parameters.items()}}
        resources = _physical_secrets(local, resolved, secret_values, self.client("secretsmanager"))
        machines = {logical: f"{STACK_NAME}-{logical}" for logical in local.state_machines}
        replacements = {logical: {"Ref": name} for logical, name in resources.items()}
        for logical, name in machines.items():
            arn = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"
            replacements[logical] = {"Ref": arn, "Arn": arn, "Name": name}
        cfn = self.client("cloudformation")
        cfn.create_stack(
            StackName=STACK_NAME,
            TemplateBody=json.dumps(_replace_refs(local.cloudformation, replacements)),
            Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
        for page in cfn.get_paginator("list_stack_resources").paginate(StackName=STACK_NAME):
            for summary in page["StackResourceSummaries"]:
                if summary.get("PhysicalResourceId"):
                    resources[summary["LogicalResourceId"]] = summary["PhysicalResourceId"]
        sfn = self.client("stepfunctions")
        for logical, spec in local.state_machines.items():
            definition = spec.definition_text
            for key, raw in spec.substitutions.items():
                value = _resolve(raw, resolved, resources)
                definition = definition.replace("${" + key + "}", value)
            json.loads(definition)  # fail here, clearly, on a placeholder left unresolved
            arn = sfn.create_state_machine(name=machines[logical], definition=definition, type="STANDARD",
                                           roleArn=f"arn:aws:iam::{ACCOUNT}:role/{machines[logical]}")["stateMachineArn"]
            resources[logical] = arn
        return resources

    def install_lambda_runtime(self, functions: FunctionRegistry) -> None:
        """Make moto run Lambda code in this process instead of in Docker (its only Docker use)."""
        from moto.awslambda.models import LambdaFunction

        def _invoke_lambda(fn: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
            return functions.invoke_for_moto(fn.function_name, event if event is not None else {})

        LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign]

    def function_environment(self, physical_names: list[str]) -> dict[str, str]:
        """The functions' resolved environment (identical for all: it comes from Globals)."""
        lam = self.client("lambda")
        merged: dict[str, str] = {}
        for name in physical_names:
            env = lam.get_function_configuration(FunctionName=name).get("Environment", {}).get("Variables", {})
            for key, value in env.items():
                merged[key] = str(value)
        return merged


def _sub(value: Any, parameters: dict[str, str]) -> str:
    if isinstance(value, dict) and "Fn::Sub" in value:
        text = value["Fn::Sub"]
        for key, param in parameters.items():
            text = text.replace("${" + key + "}", str(param))
        return text
    return str(value)


def _physical_secrets(local: LocalTemplate, parameters: dict[str, str], values: dict[str, str], sm: Any) -> dict[str, str]:
    """moto's CloudFormation has no AWS::SecretsManager::Secret: create the template's secrets directly."""
    created: dict[str, str] = {}
    for logical_id, props in local.secrets.items():
        name = _sub(props.get("Name", logical_id), parameters)
        value = values.get(logical_id) or _generated(props.get("GenerateSecretString") or {})
        sm.create_secret(Name=name, SecretString=value)
        created[logical_id] = name
    return created


def _generated(spec: dict[str, Any]) -> str:
    """A value as GenerateSecretString makes one: random, or a JSON template with a random member."""
    value = secrets.token_urlsafe(36)
    if "SecretStringTemplate" in spec and "GenerateStringKey" in spec:
        return json.dumps({**json.loads(spec["SecretStringTemplate"]), spec["GenerateStringKey"]: value})
    return value


def _resolve(raw: Any, parameters: dict[str, str], resources: dict[str, str]) -> str:
    """A DefinitionSubstitutions value: a literal, a Ref to a parameter, or a function's Arn."""
    if isinstance(raw, dict) and "Ref" in raw:
        return parameters[raw["Ref"]]
    if isinstance(raw, dict) and "Fn::GetAtt" in raw:
        target, attribute = raw["Fn::GetAtt"] if isinstance(raw["Fn::GetAtt"], list) else raw["Fn::GetAtt"].split(".")
        if attribute != "Arn":
            raise ValueError(f"unsupported substitution {raw}")
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{resources[target]}"
    return str(raw)


def _replace_refs(cfn: dict[str, Any], replacements: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Replace Ref/GetAtt of resources the stack creates itself (secrets, state machines) with their
    values, and take those resources out of what moto's CloudFormation sees."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"Ref"} and node["Ref"] in replacements:
                return replacements[node["Ref"]]["Ref"]
            if set(node) == {"Fn::GetAtt"}:
                target, attribute = node["Fn::GetAtt"] if isinstance(node["Fn::GetAtt"], list) else node["Fn::GetAtt"].split(".", 1)
                if target in replacements:
                    return replacements[target][attribute]
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out = walk(cfn)
    for logical_id in replacements:
        out["Resources"].pop(logical_id, None)
    return out
