"""`stillhouse admin-key`: the first admin API key, written straight to the stack's ApiKeysTable with AWS
credentials (no admin key exists yet to ask the API with).

    stillhouse admin-key create                        # the stack "stillhouse"'s table, tenant "ops"
    stillhouse admin-key create --stack prod-sh --tenant ops --expires-in-s 2592000
    stillhouse admin-key create --table stillhouse-ApiKeysTable-XYZ --json

It goes through the core's ApiKeyStore, as the API's own keys do: a key id, a digest only, the per-tenant
cap and the default expiry of the settings. So the key is revocable like any other
(`stillhouse tenants revoke KEY_ID`, i.e. `DELETE /v1/keys/{key_id}`, with this or another admin key) and is
listed by `stillhouse tenants keys ops`.
"""
from __future__ import annotations

import time
from typing import Annotated

import typer

from stillhouse_local.cli_common import JsonOption, console, fail, print_json

app = typer.Typer(help="the first admin API key, made with AWS credentials", no_args_is_help=True)
KEYS_TABLE = "ApiKeysTable"  # template.yaml's logical id


def keys_table_of(stack: str) -> str:
    """The physical name of the stack's ApiKeysTable (CloudFormation, with the caller's credentials)."""
    from stillhouse import aws

    found = aws.client("cloudformation").describe_stack_resource(StackName=stack, LogicalResourceId=KEYS_TABLE)
    return found["StackResourceDetail"]["PhysicalResourceId"]


@app.command(epilog="Example: stillhouse admin-key create --stack stillhouse")
def create(
    tenant: Annotated[str, typer.Option(help="the tenant the key acts as (admins act for all)")] = "ops",
    stack: Annotated[str, typer.Option(help="the CloudFormation stack whose ApiKeysTable to write")] = "stillhouse",
    table: Annotated[str | None, typer.Option(help="the table's name itself (skips the stack lookup)",
                                              show_default=False)] = None,
    expires_in_s: Annotated[int | None, typer.Option(help="seconds until the key stops working", min=1,
                                                     show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Make an admin API key (shown only now) in the stack's ApiKeysTable, with AWS credentials."""
    from stillhouse import aws
    from stillhouse.auth import ApiKeyStore, TooManyKeys
    from stillhouse.config import Settings

    settings = Settings()
    name = table or keys_table_of(stack)
    store = ApiKeyStore(aws.table(name), max_keys_per_tenant=settings.max_keys_per_tenant,
                        default_lifetime_s=settings.api_key_default_expiry_s)
    try:
        issued = store.issue(tenant, admin=True,
                             expires_at=time.time() + expires_in_s if expires_in_s else None)
    except TooManyKeys as error:
        fail(error.message, field=error.field)
    if as_json:
        print_json(issued.model_dump())
        return
    console.print(f"API key: [bold]{issued.api_key}[/]", highlight=False)
    console.print(f"key id: [bold]{issued.key_id}[/] (tenant {issued.tenant_id}, admin)", highlight=False)
    if issued.expires_at:
        console.print(f"expires at {issued.expires_at}")
    console.print("[yellow]The API key is shown only now: keep it. Revoke it with "
                  f"`stillhouse tenants revoke {issued.key_id}`.[/]")
