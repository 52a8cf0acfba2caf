"""`stillhouse config get|set`: the router's live configuration (`GET/PUT /v1/config`, admin)."""
from __future__ import annotations

import json
from typing import Annotated, Any

import requests
import typer

app = typer.Typer(help="the router's live configuration: routing policy, breaker, retries, workflow mode, cache")
EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3

UrlOption = Annotated[str, typer.Option("--url", envvar="STILLHOUSE_API_URL", help="the router's API URL")]
KeyOption = Annotated[str | None, typer.Option("--key", envvar="STILLHOUSE_API_KEY", show_default=False,
                                               help="an admin API key")]


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`breaker.cooldown_s=10 route.policy=weighted` -> {"breaker": {"cooldown_s": 10}, "route": {...}}.
    A value is read as JSON when it is JSON (numbers, true/false, lists), else as a string."""
    changes: dict[str, Any] = {}
    for assignment in assignments:
        path, sep, raw = assignment.partition("=")
        if not sep or not path.strip():
            raise typer.BadParameter(f"{assignment!r}: expected NAME=VALUE, e.g. breaker.cooldown_s=10")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        *parents, leaf = path.strip().split(".")
        node = changes
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return changes


def _call(method: str, url: str, key: str | None, body: Any = None) -> Any:
    if not key:
        typer.echo("error: an admin API key is needed: --key or STILLHOUSE_API_KEY", err=True)
        raise typer.Exit(EXIT_USAGE)
    try:
        response = requests.request(method, url.rstrip("/") + "/v1/config", json=body, timeout=10,
                                    headers={"Authorization": f"Bearer {key}"})
    except requests.RequestException as err:
        typer.echo(f"error: cannot reach the API at {url}: {type(err).__name__}", err=True)
        raise typer.Exit(EXIT_UNREACHABLE) from None
    data = response.json() if response.content else None
    if not response.ok:
        error = (data or {}).get("error") or {}
        field = f" (field: {error['field']})" if error.get("field") else ""
        typer.echo(f"error: {response.status_code} {error.get('code', '')}: {error.get('message', response.text)}"
                   f"{field}", err=True)
        raise typer.Exit(EXIT_REFUSED)
    return data


@app.command("get")
def get(url: UrlOption = "http://127.0.0.1:3000", key: KeyOption = None) -> None:
    """The live settings in force (`config`) and the stored overlay that sets them (`stored`)."""
    typer.echo(json.dumps(_call("GET", url, key), indent=2))


@app.command("set", epilog="Example: stillhouse config set breaker.cooldown_s=10 route.policy=weighted")
def set_(assignments: Annotated[list[str], typer.Argument(help="NAME=VALUE pairs, dotted names")],
         url: UrlOption = "http://127.0.0.1:3000", key: KeyOption = None) -> None:
    """Change some live settings; the rest stay. A bad value changes nothing (the field is named)."""
    typer.echo(json.dumps(_call("PUT", url, key, parse_assignments(assignments)), indent=2))
