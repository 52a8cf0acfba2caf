"""`stillhouse config get|set`: the router's live configuration (`GET/PUT /v1/config`, admin)."""
from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from stillhouse_local.cli_common import JsonOption, KeyOption, UrlOption, api_client, console, print_json

app = typer.Typer(help="The router's live configuration: routing policy, breaker, retries, workflow mode, cache "
                       "TTL (changes reach every function within seconds, no redeploy).", no_args_is_help=True)


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


def _show(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(answer)
        return
    console.print_json(data=answer["config"])
    console.print(f"stored overlay: {json.dumps(answer['stored'])}", highlight=False)


@app.command("get")
def get(ctx: typer.Context, url: UrlOption = None, key: KeyOption = None, as_json: JsonOption = False) -> None:
    """The live settings in force (`config`) and the stored overlay that sets them (`stored`)."""
    _show(api_client(ctx, url, key).get("/v1/config"), as_json)


@app.command("set", epilog="Example: stillhouse config set breaker.cooldown_s=10 route.policy=weighted")
def set_(ctx: typer.Context,
         assignments: Annotated[list[str], typer.Argument(help="NAME=VALUE pairs, dotted names")],
         url: UrlOption = None, key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Change some live settings; the rest stay. A bad value changes nothing (the field is named)."""
    _show(api_client(ctx, url, key).put("/v1/config", parse_assignments(assignments)), as_json)
