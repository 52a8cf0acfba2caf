"""A deploy into the embedded stack: RunPod is the stand-in (its management routes), the router is the
stack's API. `stillhouse up --deploy FILE` and the end-to-end tests use this."""
from __future__ import annotations

from typing import Any

from stillhouse_local.deploy.plan import Deployer, Plan, with_serverless_url
from stillhouse_local.deploy.router_registry import RouterRegistry
from stillhouse_local.deploy.runpod_api import RunPodManagement
from stillhouse_local.deploy.spec import DeployFile


def deployer_for(stack: Any) -> Deployer:
    """`stack`: a started stillhouse_local.stack.EmbeddedStack."""
    return Deployer(RunPodManagement(stack.runpod_api_key, f"{stack.standin.base_url}/v1"),
                    RouterRegistry(stack.url, stack.dev_api_key))


def deploy_to_stack(stack: Any, file: DeployFile, *, dry_run: bool = False) -> Plan:
    file = with_serverless_url(file, stack.standin.api_base())
    deployer = deployer_for(stack)
    return deployer.plan(file) if dry_run else deployer.apply(file)
