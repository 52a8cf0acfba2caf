"""`stillhouse endpoints`: the RunPod endpoints the router knows, their health, and editing them (admin)."""
from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from stillhouse_local.cli_common import JsonOption, KeyOption, UrlOption, api_client, console, print_json

app = typer.Typer(help="list (the default) or edit the RunPod endpoints of a running router",
                  invoke_without_command=True)

BREAKER_STYLE = {"CLOSED": "green", "HALF_OPEN": "yellow", "OPEN": "bold red"}


@app.callback()
def endpoints(ctx: typer.Context, url: UrlOption = None, key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Endpoints with breaker state, EMA latency, success rate, weight and in-flight (`endpoints` = `endpoints list`)."""
    if ctx.invoked_subcommand is None:
        show(api_client(ctx).get("/v1/endpoints"), as_json)


@app.command("list", epilog="Example: stillhouse endpoints list --json | jq '.[] | {name, breaker}'")
def list_endpoints(ctx: typer.Context, url: UrlOption = None, key: KeyOption = None,
                   as_json: JsonOption = False) -> None:
    """Endpoints with breaker state and statistics."""
    show(api_client(ctx, url, key).get("/v1/endpoints"), as_json or bool(ctx.parent and ctx.parent.params.get("as_json")))


def show(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(rows)
        return
    if rows and "name" not in rows[0]:  # a tenant's key: the API shows the models available, not the fleet
        models = Table("model", "available", title="models")
        for row in rows:
            models.add_row(row["model"], "yes" if row.get("available") else "no")
        console.print(models)
        return
    table = Table("name", "breaker", "enabled", "weight", "in flight", "EMA latency", "success", "samples",
                  "last error", title="endpoints")
    for row in rows:
        breaker = row.get("breaker", "?")
        latency = row.get("ema_latency_ms")
        success = row.get("success_rate")
        table.add_row(
            row["name"], f"[{BREAKER_STYLE.get(breaker, '')}]{breaker}[/]", "yes" if row.get("enabled") else "no",
            f"{row.get('weight', 0):g}", f"{row.get('in_flight', 0)}/{row.get('max_in_flight', '-')}",
            "-" if latency is None else f"{latency:.0f} ms", "-" if success is None else f"{success:.0%}",
            str(row.get("samples", 0)), row.get("last_error_class") or "")
    console.print(table)


@app.command(epilog="Example: stillhouse endpoints put west --weight 0.25 --disable")
def put(
    ctx: typer.Context,
    name: str,
    endpoint_id: Annotated[str | None, typer.Option(help="RunPod's endpoint id")] = None,
    base_url: Annotated[str | None, typer.Option()] = None,
    models: Annotated[str | None, typer.Option(help="comma-separated; * = any")] = None,
    weight: Annotated[float | None, typer.Option()] = None,
    max_in_flight: Annotated[int | None, typer.Option()] = None,
    secret_ref: Annotated[str | None, typer.Option()] = None,
    enabled: Annotated[bool | None, typer.Option("--enable/--disable", show_default=False)] = None,
    url: UrlOption = None, key: KeyOption = None,
) -> None:
    """Add an endpoint, or change some of its fields (admin key)."""
    changes = {field: value for field, value in (
        ("endpoint_id", endpoint_id), ("base_url", base_url), ("weight", weight), ("max_in_flight", max_in_flight),
        ("enabled", enabled), ("secret_ref", secret_ref), ("models", models.split(",") if models else None),
    ) if value is not None}
    print_json(api_client(ctx, url, key).put(f"/v1/endpoints/{name}", changes))
