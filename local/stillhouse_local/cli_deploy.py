"""`stillhouse deploy`: RunPod templates and endpoints from a deploy file, then the router's registry."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import requests
import typer

from stillhouse_local.deploy.plan import Deployer, with_serverless_url
from stillhouse_local.deploy.router_registry import RouterApiError, RouterRegistry
from stillhouse_local.deploy.runpod_api import DEFAULT_MANAGEMENT_URL, RunPodApiError, RunPodManagement
from stillhouse_local.deploy.spec import DeployFileError, load

app = typer.Typer()
EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


@app.command(epilog="Example: stillhouse deploy deploy/runpod.yaml --dry-run")
def deploy(
    file: Annotated[Path, typer.Argument(help="the deploy file")] = Path("deploy/runpod.yaml"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, change nothing anywhere")] = False,
    runpod_api_url: Annotated[str, typer.Option(envvar="RUNPOD_API_URL",
                                                help="RunPod's management API")] = DEFAULT_MANAGEMENT_URL,
    runpod_api_key: Annotated[str | None, typer.Option(envvar="RUNPOD_API_KEY", show_default=False,
                                                       help="RunPod API key")] = None,
    serverless_url: Annotated[str | None, typer.Option(show_default=False,
                                                       help="the job API root registered for the endpoints "
                                                            "(default: the file's runpod.serverless_url)")] = None,
    url: Annotated[str, typer.Option("--url", envvar="STILLHOUSE_API_URL",
                                     help="the router's API URL")] = "http://127.0.0.1:3000",
    key: Annotated[str | None, typer.Option("--key", envvar="STILLHOUSE_API_KEY", show_default=False,
                                            help="the router's admin API key")] = None,
) -> None:
    """Create or update the file's RunPod templates and endpoints, then register the endpoints with the router.

    Idempotent: what already matches the file is left alone, and a second run changes nothing."""
    try:
        spec = with_serverless_url(load(file), serverless_url)
    except DeployFileError as err:
        typer.echo(f"error: {file}: {err.field}: {err.message}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    runpod_api_key = runpod_api_key or os.environ.get("STILLHOUSE_RUNPOD_KEY")
    if not runpod_api_key or not key:
        missing = "--runpod-api-key (RUNPOD_API_KEY)" if not runpod_api_key else "--key (STILLHOUSE_API_KEY)"
        typer.echo(f"error: {missing} is needed", err=True)
        raise typer.Exit(EXIT_USAGE)
    deployer = Deployer(RunPodManagement(runpod_api_key, runpod_api_url), RouterRegistry(url, key))
    typer.echo(f"RunPod {runpod_api_url}, router {url}, endpoints' job API {spec.runpod.serverless_url}")
    try:
        plan = deployer.plan(spec) if dry_run else deployer.apply(spec)
    except (RunPodApiError, RouterApiError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    except requests.RequestException as err:
        typer.echo(f"error: cannot reach {err.request.url if err.request else 'the API'}: "
                   f"{type(err).__name__}", err=True)
        raise typer.Exit(EXIT_UNREACHABLE) from None
    typer.echo(plan.render())
    if dry_run:
        typer.echo("dry run: nothing was changed")
