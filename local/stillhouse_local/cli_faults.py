"""`stillhouse faults ENDPOINT --error-rate ...`: the embedded RunPod stand-in's fault knobs.

The stand-in has its own URL and key (`stillhouse up` prints both, and takes `--runpod-port` / `--runpod-key`
to fix them).
"""
from __future__ import annotations

import os
from typing import Annotated, Any

import requests
import typer
from rich.table import Table

from stillhouse_local.cli_common import EXIT_UNREACHABLE, EXIT_USAGE, JsonOption, console, fail, print_json

app = typer.Typer()

RunPodUrl = Annotated[str | None, typer.Option("--runpod-url", show_default=False,
                                               help="the stand-in's URL (env STILLHOUSE_RUNPOD_URL)")]
RunPodKey = Annotated[str | None, typer.Option("--runpod-key", show_default=False,
                                               help="the stand-in's API key (env STILLHOUSE_RUNPOD_KEY)")]


@app.command(epilog="""Examples:

  stillhouse faults local --error-rate 0.5

  stillhouse faults east --down                 # every call fails: the router opens east's breaker

  stillhouse faults east --latency-ms 2000 --crash-rate 0.1 --crash-mode requeue

  stillhouse faults east --reset

  stillhouse faults east                        # show the knobs""")
def faults(
    endpoint: Annotated[str, typer.Argument(help="the stand-in endpoint, e.g. local")],
    error_rate: Annotated[float | None, typer.Option(help="share of calls answered 5xx (0-1)")] = None,
    rate_limit_rate: Annotated[float | None, typer.Option(help="share of calls answered 429 (0-1)")] = None,
    latency_ms: Annotated[float | None, typer.Option(help="extra latency of every call")] = None,
    down: Annotated[bool | None, typer.Option("--down/--up", show_default=False, help="the endpoint is down")]
    = None,
    drop_webhook_rate: Annotated[float | None, typer.Option(help="share of result webhooks never sent")] = None,
    duplicate_webhook_rate: Annotated[float | None, typer.Option(help="share of webhooks sent twice")] = None,
    crash_rate: Annotated[float | None, typer.Option(help="share of jobs whose worker crashes")] = None,
    crash_mode: Annotated[str | None, typer.Option(help="hang, fail or requeue")] = None,
    retry_after_s: Annotated[float | None, typer.Option(help="Retry-After of a 429")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the fault dice, for repeatable runs")] = None,
    reset: Annotated[bool, typer.Option("--reset", help="every knob back to its default")] = False,
    runpod_url: RunPodUrl = None, runpod_key: RunPodKey = None, as_json: JsonOption = False,
) -> None:
    """Show or change the fault knobs of one endpoint of the RunPod stand-in (`stillhouse up`)."""
    changes: dict[str, Any] = {name: value for name, value in (
        ("error_rate", error_rate), ("rate_limit_rate", rate_limit_rate), ("latency_ms", latency_ms),
        ("down", down), ("drop_webhook_rate", drop_webhook_rate), ("duplicate_webhook_rate", duplicate_webhook_rate),
        ("crash_rate", crash_rate), ("crash_mode", crash_mode), ("retry_after_s", retry_after_s), ("seed", seed),
    ) if value is not None}
    base = runpod_url or os.environ.get("STILLHOUSE_RUNPOD_URL")
    key = runpod_key or os.environ.get("STILLHOUSE_RUNPOD_KEY")
    if not base or not key:
        fail("the stand-in's URL and key are needed: --runpod-url/--runpod-key or STILLHOUSE_RUNPOD_URL/"
             "STILLHOUSE_RUNPOD_KEY (`stillhouse up` prints both)", code=EXIT_USAGE,
             field="--runpod-url" if not base else "--runpod-key")
    method = "DELETE" if reset else ("PUT" if changes else "GET")
    knobs = _call(method, f"{base.rstrip('/')}/_faults/{endpoint}", key, changes)
    if reset and changes:
        knobs = _call("PUT", f"{base.rstrip('/')}/_faults/{endpoint}", key, changes)
    if as_json:
        print_json(knobs)
        return
    table = Table("knob", "value", title=f"faults of {endpoint}")
    for name, value in sorted(knobs.items()):
        table.add_row(name, f"[bold]{value}[/]" if name in changes else str(value))
    console.print(table)


def _call(method: str, url: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        response = requests.request(method, url, json=body if method == "PUT" else None, timeout=10,
                                    headers={"Authorization": f"Bearer {key}"})
    except requests.RequestException as err:
        fail(f"cannot reach the RunPod stand-in at {url}: {err.__class__.__name__}", code=EXIT_UNREACHABLE)
    try:
        data = response.json()
    except ValueError:
        data = {}
    if not response.ok:
        error = data.get("error") if isinstance(data, dict) else None
        knob = data.get("field") if isinstance(data, dict) else None  # the stand-in: {"error": msg, "field": knob}
        fail(f"{response.status_code}: {error or response.text[:300]}",
             field=f"--{knob.replace('_', '-')}" if knob else None)
    return data
