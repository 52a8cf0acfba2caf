"""`stillhouse deploy`: RunPod templates and endpoints from a deploy file, then the router's registry."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import requests
import typer

from stillhouse_local.cli_common import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    KeyOption,
    UrlOption,
    api_client,
    fail,
)
from stillhouse_local.deploy.plan import Deployer, with_serverless_url
from stillhouse_local.deploy.router_registry import RouterApiError, RouterRegistry
from stillhouse_local.deploy.runpod_api import DEFAULT_MANAGEMENT_URL, RunPodApiError, RunPodManagement
from stillhouse_local.deploy.spec import DeployFileError, load

app = typer.Typer()


@app.command(epilog="Example: stillhouse deploy deploy/runpod.yaml --dry-run")
def deploy(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="the deploy file")] = Path("deploy/runpod.yaml"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, change nothing anywhere")] = False,
    runpod_api_url: Annotated[str, typer.Option(envvar="RUNPOD_API_URL",
                                                help="RunPod's management API")] = DEFAULT_MANAGEMENT_URL,
    runpod_api_key: Annotated[str | None, typer.Option(envvar="RUNPOD_API_KEY", show_default=False,
                                                       help="RunPod API key")] = None,
    serverless_url: Annotated[str | None, typer.Option(show_default=False,
                                                       help="the job API root registered for the endpoints "
                                                            "(default: the file's runpod.serverless_url)")] = None,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Create or update the file's RunPod templates and endpoints, then register the endpoints with the router.

    Idempotent: what already matches the file is left alone, and a second run changes nothing."""
    try:
        spec = with_serverless_url(load(file), serverless_url)
    except DeployFileError as err:
        fail(f"{file}: {err.message}", code=EXIT_USAGE, field=err.field)
    runpod_api_key = runpod_api_key or os.environ.get("STILLHOUSE_RUNPOD_KEY")
    if not runpod_api_key:
        fail("a RunPod API key is needed: --runpod-api-key or RUNPOD_API_KEY", code=EXIT_USAGE,
             field="--runpod-api-key")
    router = api_client(ctx, url, key)  # the router's URL and admin key, from flags or the environment
    if not router.key:
        fail("the router's admin key is needed: --key or STILLHOUSE_API_KEY", code=EXIT_USAGE, field="--key")
    deployer = Deployer(RunPodManagement(runpod_api_key, runpod_api_url), RouterRegistry(router.url, router.key))
    typer.echo(f"RunPod {runpod_api_url}, router {router.url}, endpoints' job API {spec.runpod.serverless_url}")
    try:
        plan = deployer.plan(spec) if dry_run else deployer.apply(spec)
    except (RunPodApiError, RouterApiError) as err:
        fail(str(err), code=EXIT_REFUSED)
    except requests.RequestException as err:
        fail(f"cannot reach {err.request.url if err.request else 'the API'}: {type(err).__name__}",
             code=EXIT_UNREACHABLE)
    typer.echo(plan.render())
    if dry_run:
        typer.echo("dry run: nothing was changed")
