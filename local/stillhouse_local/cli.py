"""`stillhouse`: the router's command line (typer + rich).

    stillhouse up                                   # the whole router on 127.0.0.1 (prints URL and keys)
    stillhouse submit --task echo --input '{"text": "hi"}' --wait
    stillhouse jobs --status FAILED
    stillhouse trace JOB_ID                         # a waterfall of the job's stages
    stillhouse endpoints                            # breaker state, latency, success rate per endpoint
    stillhouse faults local --error-rate 0.5        # the embedded RunPod stand-in's fault knobs
    stillhouse batch submit requests.jsonl --wait   # OpenAI's Batch API: upload, create, follow

Every command that calls the API takes `--url` / `--key` (or STILLHOUSE_API_URL / STILLHOUSE_API_KEY) and
`--json` for scripts; exit codes are in cli_common.py.

Adding commands: one module per concern under stillhouse_local/ (`cli_tenants.py`, `cli_deploy.py`, ...)
holding `app = typer.Typer(...)` and its commands, using cli_common's `api_client`, `fail`, `print_json` and
option types; then ONE line below:

    app.add_typer(cli_tenants.app, name="tenants", help="...")   # a group: `stillhouse tenants list`
    app.add_typer(cli_deploy.app)                                 # no name: its commands join the top level

A command reads the API like this:

    @app.command("list")
    def list_tenants(ctx: typer.Context, url: UrlOption = None, key: KeyOption = None,
                     as_json: JsonOption = False) -> None:
        tenants = api_client(ctx, url, key).get("/v1/tenants")
        print_json(tenants) if as_json else console.print(...)
"""
from __future__ import annotations

import sys

import typer

from stillhouse_local import (
    cli_admin,
    cli_batch,
    cli_bench,
    cli_chat,
    cli_config,
    cli_deploy,
    cli_endpoints,
    cli_faults,
    cli_jobs,
    cli_tenants,
    cli_trace,
    cli_up,
)
from stillhouse_local.cli_common import KeyOption, UrlOption

HELP = """A serverless GPU job router: the embedded stack, jobs, traces, endpoints and fault knobs.

Examples:

  stillhouse up

  stillhouse submit --task echo --input '{"text": "hi"}' --wait

  stillhouse jobs --status FAILED

  stillhouse trace JOB_ID

  stillhouse faults local --error-rate 0.5

  stillhouse batch submit requests.jsonl --wait

Set STILLHOUSE_API_URL and STILLHOUSE_API_KEY (`stillhouse up` prints them) or pass --url/--key.
Exit codes: 0 done, 1 refused by the API or the job did not complete, 2 bad usage, 3 API unreachable."""

app = typer.Typer(name="stillhouse", help=HELP,
                  no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_show_locals=False,
                  context_settings={"help_option_names": ["-h", "--help"]})


@app.callback()
def root(url: UrlOption = None, key: KeyOption = None) -> None:
    """`--url`/`--key` given here apply to every command."""


# --- the commands: one line per module --------------------------------------------------------------
app.add_typer(cli_up.app)
app.add_typer(cli_jobs.app)
app.add_typer(cli_trace.app)
app.add_typer(cli_endpoints.app, name="endpoints")
app.add_typer(cli_faults.app)
app.add_typer(cli_bench.app)
app.add_typer(cli_tenants.app, name="tenants")
app.add_typer(cli_deploy.app)
app.add_typer(cli_config.app, name="config")
app.add_typer(cli_chat.app)
app.add_typer(cli_admin.app, name="admin-key")
app.add_typer(cli_batch.app, name="batch", help="OpenAI-style batches: submit a JSONL file, follow, list, cancel, "
                                               "download")


def main(argv: list[str] | None = None) -> int:
    """The console script `stillhouse`; also callable from Python with a list of arguments (returns the exit code)."""
    try:
        app(args=argv, prog_name="stillhouse")
    except SystemExit as stop:
        code = stop.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
