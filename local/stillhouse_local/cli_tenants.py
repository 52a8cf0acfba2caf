"""`stillhouse tenants`: tenants, their limits and API keys, through the router's HTTP API.

    stillhouse tenants create acme --set requests_per_minute=60     admin; the key and webhook secret, once
    stillhouse tenants show TENANT_ID
    stillhouse tenants limits TENANT_ID --set max_in_flight=10 --set allow_high_priority=true   admin
    stillhouse tenants key TENANT_ID [--expires-in-s 86400] [--scope keys:manage]   another key (shown once)
    stillhouse tenants keys TENANT_ID                               its live keys: ids, prefixes, last use
    stillhouse tenants revoke KEY_ID                                stops within the API's key cache TTL (30 s)
"""
from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from stillhouse_local.cli_common import (
    EXIT_USAGE,
    JsonOption,
    KeyOption,
    UrlOption,
    api_client,
    console,
    fail,
    print_json,
)

app = typer.Typer(help="tenants, their limits and API keys (admin key, except for a tenant's own keys)",
                  no_args_is_help=True)

SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="a limit as NAME=VALUE (requests_per_minute, max_in_flight, max_council_models, "
                  "allow_high_priority, stream_polls_per_minute); repeat for several", show_default=False)]


def parse_limits(assignments: list[str] | None) -> dict[str, Any]:
    """`["max_in_flight=10", "allow_high_priority=true"]` → `{"max_in_flight": 10, "allow_high_priority": True}`
    (each value read as JSON, so numbers and booleans keep their type; the API checks names and ranges)."""
    limits: dict[str, Any] = {}
    for assignment in assignments or []:
        name, sep, value = assignment.partition("=")
        if not sep or not name.strip():
            fail(f"--set takes NAME=VALUE, not {assignment!r}", code=EXIT_USAGE, field="--set")
        try:
            limits[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            fail(f"{value!r} is not a number or true/false", code=EXIT_USAGE, field=f"--set {name.strip()}")
    return limits


def show_tenant(tenant: dict[str, Any]) -> None:
    table = Table("limit", "value", title=f"tenant {tenant['tenant_id']} ({tenant.get('name') or '-'})")
    for name, value in tenant["limits"].items():
        table.add_row(name, json.dumps(value))
    console.print(table)


def show_secret(what: str, value: str) -> None:
    console.print(f"{what}: [bold]{value}[/]", highlight=False)


@app.command(epilog="Example: stillhouse tenants create acme --set requests_per_minute=60")
def create(ctx: typer.Context, name: str, limits: SetOption = None, url: UrlOption = None, key: KeyOption = None,
           as_json: JsonOption = False) -> None:
    """Make a tenant (admin key): prints its API key and webhook secret, which are shown only now."""
    given = parse_limits(limits)
    made = api_client(ctx, url, key).post("/v1/tenants", {"name": name, **({"limits": given} if given else {})})
    if as_json:
        print_json(made)
        return
    show_tenant(made["tenant"])
    show_secret("API key", made["api_key"])
    show_secret("key id", made["key_id"])
    show_secret("webhook secret", made["webhook_secret"])
    console.print("[yellow]The API key and the webhook secret are shown only now: keep them.[/]")


@app.command()
def show(ctx: typer.Context, tenant_id: str, url: UrlOption = None, key: KeyOption = None,
         as_json: JsonOption = False) -> None:
    """A tenant and the limits in force (admin key, or the tenant's own)."""
    tenant = api_client(ctx, url, key).get(f"/v1/tenants/{tenant_id}")
    print_json(tenant) if as_json else show_tenant(tenant)


@app.command(epilog="Example: stillhouse tenants limits t_1234 --set max_in_flight=10")
def limits(ctx: typer.Context, tenant_id: str, limits: SetOption = None, url: UrlOption = None,
           key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Change some of a tenant's limits (admin key); the others stay as they are."""
    given = parse_limits(limits)
    if not given:
        fail("nothing to change: give at least one --set NAME=VALUE", code=EXIT_USAGE, field="--set")
    tenant = api_client(ctx, url, key).put(f"/v1/tenants/{tenant_id}/limits", given)
    print_json(tenant) if as_json else show_tenant(tenant)


@app.command("key")
def new_key(ctx: typer.Context, tenant_id: str,
            expires_in_s: Annotated[int | None, typer.Option(help="seconds until the key stops working")] = None,
            scope: Annotated[list[str] | None, typer.Option(
                "--scope", help="keys:manage: the new key may manage keys too", show_default=False)] = None,
            url: UrlOption = None, key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Another API key for a tenant (admin key, or one of the tenant's with keys:manage): shown only now."""
    body: dict[str, Any] = {"expires_in_s": expires_in_s} if expires_in_s else {}
    if scope:
        body["scopes"] = scope
    issued = api_client(ctx, url, key).post(f"/v1/tenants/{tenant_id}/keys", body)
    if as_json:
        print_json(issued)
        return
    show_secret("API key", issued["api_key"])
    show_secret("key id", issued["key_id"])
    if issued.get("expires_at"):
        console.print(f"expires at {issued['expires_at']}")


@app.command("keys")
def list_keys(ctx: typer.Context, tenant_id: str, url: UrlOption = None, key: KeyOption = None,
              as_json: JsonOption = False) -> None:
    """A tenant's live keys (admin key, or one of the tenant's with keys:manage); never the keys themselves."""
    listed = api_client(ctx, url, key).get(f"/v1/tenants/{tenant_id}/keys")
    if as_json:
        print_json(listed)
        return
    table = Table("key id", "prefix", "scopes", "created", "last used", "expires", title=f"keys of {tenant_id}")
    for k in listed["keys"]:
        table.add_row(k["key_id"], (k.get("prefix") or "?") + "…", ", ".join(k["scopes"]) or "-",
                      k.get("created_at") or "-", k.get("last_used_at") or "-", k.get("expires_at") or "never")
    console.print(table)


@app.command()
def revoke(ctx: typer.Context, key_id: str, url: UrlOption = None, key: KeyOption = None,
           as_json: JsonOption = False) -> None:
    """Revoke an API key by its id; warm functions may accept it for up to the key cache TTL (30 s)."""
    done = api_client(ctx, url, key).request("DELETE", f"/v1/keys/{key_id}")
    print_json(done) if as_json else console.print(f"revoked {key_id}")
