"""`stillhouse up`: the whole router on 127.0.0.1, no AWS account, no GPU."""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from stillhouse_local.cli_common import EXIT_USAGE, console, fail

app = typer.Typer()


def banner(api_url: str, api_key: str, runpod_url: str, runpod_key: str, endpoints: list[str],
           webhook_secret: str | None = None) -> str:
    """What `up` prints: where everything is, the keys, and how to use them (the API, the CLI, fault knobs)."""
    first = endpoints[0] if endpoints else "local"
    return f"""
stillhouse is up
  API        {api_url}
  API key    {api_key}
  Webhooks   {"signed with " + webhook_secret + " (Standard Webhooks; shown once)" if webhook_secret else "signed (Standard Webhooks)"}
  Dashboard  {api_url}/dashboard
  RunPod     {runpod_url} (stand-in; endpoints: {', '.join(endpoints)})
  RunPod key {runpod_key}
  OpenAPI    {api_url}/openapi.json

in another shell:
  export STILLHOUSE_API_URL={api_url} STILLHOUSE_API_KEY={api_key}
  export STILLHOUSE_RUNPOD_URL={runpod_url} STILLHOUSE_RUNPOD_KEY={runpod_key}
  stillhouse submit --task echo --input '{{"text": "hi"}}' --wait
  stillhouse faults {first} --error-rate 0.5          # half of {first}'s jobs fail; --reset undoes it
  curl -s -H "Authorization: Bearer {api_key}" -d '{{"task":"echo","input":{{"text":"hi"}}}}' {api_url}/v1/jobs
  curl -s -X PUT -H "Authorization: Bearer {runpod_key}" -d '{{"error_rate": 0.5}}' {runpod_url}/_faults/{first}

Ctrl-C stops everything."""


def _deploy_file(path: Path) -> Any:
    from stillhouse_local.deploy.spec import DeployFileError, load

    try:
        return load(path)
    except DeployFileError as err:
        fail(f"{path}: {err.message}", code=EXIT_USAGE, field=err.field)


@app.command(epilog="Example: stillhouse up --port 3000 --endpoints local,east,west")
def up(
    port: Annotated[int, typer.Option(help="HTTP API port")] = 3000,
    endpoints: Annotated[str, typer.Option(help="stand-in RunPod endpoints, comma-separated")] = "local",
    runpod_port: Annotated[int, typer.Option(help="the RunPod stand-in's port (0: any free one)")] = 0,
    runpod_key: Annotated[str | None, typer.Option(envvar="STILLHOUSE_RUNPOD_KEY", show_default=False,
                                                   help="the RunPod stand-in's API key (default: a random one)")]
    = None,
    deploy: Annotated[Path | None, typer.Option(show_default=False, metavar="FILE",
                                                help="then deploy this file's RunPod endpoints into the stand-in "
                                                     "(docs/deploy.md)")] = None,
    aws: Annotated[str, typer.Option(help="AWS backend: moto in-process, or LocalStack at $LOCALSTACK_HOST "
                                          "(started when none answers)")] = "moto",
    mapping_concurrency: Annotated[int, typer.Option(
        envvar="STILLHOUSE_MAPPING_CONCURRENCY", min=1,
        help="batches each SQS event source mapping processes at once, each on its own instance of the "
             "function (capped by the mapping's MaximumConcurrency)")] = 1,
) -> None:
    """Start the embedded stack in the foreground: moto, the functions in-process, the RunPod stand-in."""
    from stillhouse_local.stack import EmbeddedStack, StackOptions

    names = [e for e in endpoints.split(",") if e]
    options = StackOptions(port=port, endpoints=names, runpod_port=runpod_port, runpod_api_key=runpod_key,
                           aws=aws, mapping_concurrency=mapping_concurrency)
    print(f"starting stillhouse (embedded: {aws} + in-process Lambdas + RunPod stand-in) ...", flush=True)
    spec = _deploy_file(deploy) if deploy else None  # a bad file stops here, before anything starts
    stack = EmbeddedStack(options).start()
    if spec is not None:
        from stillhouse_local.deploy.embedded import deploy_to_stack

        print(deploy_to_stack(stack, spec).render(), flush=True)
    print(banner(stack.url, stack.dev_api_key, stack.standin.base_url, stack.runpod_api_key, names,
                 stack.dev_webhook_secret), flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    console.print("\nstopping ...")
    stack.stop()
    console.print("stopped.")
