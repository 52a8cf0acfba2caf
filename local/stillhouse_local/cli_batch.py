"""`stillhouse batch`: OpenAI's Batch API (POST /v1/files, /v1/batches) from a shell.

    stillhouse batch submit requests.jsonl --wait        upload, create, follow it with a progress bar
    stillhouse batch list [--limit 20] [--after BATCH_ID]
    stillhouse batch get BATCH_ID                        status, request counts, file ids, validation errors
    stillhouse batch cancel BATCH_ID
    stillhouse batch download BATCH_ID [--errors] [-o results.jsonl]

The shapes are OpenAI's: a file object (`file-...`) and a batch object (`batch_...`) whose status is one of
validating, in_progress, finalizing, completed, failed, expired, cancelling, cancelled.
"""
from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stillhouse_local.cli_common import (
    EXIT_REFUSED,
    EXIT_USAGE,
    ApiClient,
    JsonOption,
    KeyOption,
    UrlOption,
    api_client,
    console,
    errors,
    fail,
    print_json,
)

app = typer.Typer(help="OpenAI-style batches: submit a JSONL file of requests, follow, list, cancel, download",
                  no_args_is_help=True,
                  epilog="Examples:\n\n  stillhouse batch submit requests.jsonl --wait\n\n"
                         "  stillhouse batch list\n\n  stillhouse batch download BATCH_ID -o results.jsonl")

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
STATUS_STYLE = {"completed": "green", "failed": "bold red", "expired": "red", "cancelled": "yellow",
                "cancelling": "yellow", "in_progress": "cyan", "validating": "blue", "finalizing": "magenta"}
DEFAULT_ENDPOINT = "/v1/chat/completions"
#: Seconds an upload may take (the client's usual 10 s is for small JSON bodies).
UPLOAD_TIMEOUT_S = 300.0


def styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, '')}]{escape(status)}[/]"


def when(epoch_s: int | float | None) -> str:
    """OpenAI's timestamps are Unix seconds; shown in UTC."""
    if epoch_s is None:
        return "-"
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def counts(batch: dict[str, Any]) -> tuple[int, int, int]:
    """(total, completed, failed) of the batch's requests."""
    c = batch.get("request_counts") or {}
    return int(c.get("total") or 0), int(c.get("completed") or 0), int(c.get("failed") or 0)


def error_lines(batch: dict[str, Any]) -> list[str]:
    """The batch's errors (a validation that failed names the input's lines): `line 3: code: message (param)`."""
    listed = (batch.get("errors") or {}).get("data") or []
    lines = []
    for error in listed:
        where = f"line {error['line']}: " if error.get("line") is not None else ""
        param = f" (param: {error['param']})" if error.get("param") else ""
        lines.append(f"{where}{error.get('code') or 'error'}: {error.get('message') or ''}{param}")
    return lines


def parse_metadata(pairs: list[str] | None) -> dict[str, str]:
    """`["team=ml", "run=7"]` → `{"team": "ml", "run": "7"}` (OpenAI's metadata holds strings only)."""
    metadata: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            fail(f"--metadata takes KEY=VALUE, not {pair!r}", code=EXIT_USAGE, field="--metadata")
        metadata[name.strip()] = value
    return metadata


def endpoint_of(path: Path) -> str:
    """The `url` of the file's first request, else /v1/chat/completions (the API checks every line)."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                url = json.loads(line).get("url")
            except (json.JSONDecodeError, AttributeError):
                return DEFAULT_ENDPOINT
            return url if isinstance(url, str) and url else DEFAULT_ENDPOINT
    return DEFAULT_ENDPOINT


def summary(batch: dict[str, Any]) -> Table:
    """One batch: status, its request counts, files, times and errors."""
    total, done, failed = counts(batch)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("batch", escape(batch["id"]))
    grid.add_row("status", styled(batch["status"]))
    grid.add_row("endpoint", escape(str(batch.get("endpoint") or "-")))
    grid.add_row("requests", f"{total} total, [green]{done} completed[/], "
                             f"{'[red]' if failed else ''}{failed} failed{'[/]' if failed else ''}")
    for label, name in (("input file", "input_file_id"), ("output file", "output_file_id"),
                        ("error file", "error_file_id")):
        grid.add_row(label, escape(str(batch.get(name) or "-")))
    grid.add_row("created", when(batch.get("created_at")))
    for name in ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"):
        if batch.get(f"{name}_at") is not None:
            grid.add_row(name.replace("_", " "), when(batch[f"{name}_at"]))
    if batch.get("expires_at") is not None and batch["status"] not in TERMINAL:
        grid.add_row("expires", when(batch["expires_at"]))
    if batch.get("metadata"):
        grid.add_row("metadata", escape(", ".join(f"{k}={v}" for k, v in batch["metadata"].items())))
    for i, line in enumerate(error_lines(batch)):
        grid.add_row("errors" if i == 0 else "", f"[red]{escape(line)}[/]")
    return grid


@app.command(epilog="""Examples:

  stillhouse batch submit requests.jsonl --wait

  stillhouse batch submit embeddings.jsonl --endpoint /v1/embeddings --metadata team=search

  stillhouse batch submit requests.jsonl --json | jq -r .id""")
def submit(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="the requests, one JSON object a line: {custom_id, method, url, body}",
                                         exists=True, dir_okay=False, readable=True, show_default=False)],
    endpoint: Annotated[str | None, typer.Option(help="the route every request goes to (default: the first "
                                                      "line's url, else /v1/chat/completions)",
                                                 show_default=False)] = None,
    window: Annotated[str, typer.Option(help="the completion window")] = "24h",
    metadata: Annotated[list[str] | None, typer.Option(help="KEY=VALUE kept with the batch; repeat for several",
                                                       show_default=False)] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the batch with a progress bar until it ends")] = False,
    poll: Annotated[float, typer.Option(min=0.0, help="seconds between looks while --wait")] = 2.0,
    url: UrlOption = None, key: KeyOption = None, as_json: JsonOption = False,
) -> None:
    """Upload a JSONL file of requests (purpose batch) and create a batch from it; print the batch's id.

    With --wait, follow it until it is completed, failed, expired or cancelled, then print its summary.

    With --wait the exit code is 0 only when it completed (some requests may still have failed: its error file)."""
    if file.stat().st_size == 0:
        fail(f"{file} is empty: a batch needs at least one request", code=EXIT_USAGE, field="FILE")
    body: dict[str, Any] = {"endpoint": endpoint or endpoint_of(file), "completion_window": window}
    meta = parse_metadata(metadata)
    api = api_client(ctx, url, key)
    with file.open("rb") as content:
        uploaded = api.post("/v1/files", files={"file": (file.name, content, "application/jsonl")},
                            form={"purpose": "batch"}, timeout_s=UPLOAD_TIMEOUT_S)
    body = {"input_file_id": uploaded["id"], **body, **({"metadata": meta} if meta else {})}
    batch = api.post("/v1/batches", body)
    if not wait:
        if as_json:
            print_json(batch)
        else:
            console.print(f"{escape(batch['id'])}  {styled(batch['status'])}", highlight=False)
        return
    if not as_json:
        errors.print(f"[dim]{escape(batch['id'])} from {escape(uploaded['id'])} ({escape(file.name)})[/]",
                     highlight=False)
    batch = follow(api, batch, poll_s=poll, live=not as_json)
    if as_json:
        print_json(batch)
    else:
        console.print(summary(batch))
    if batch["status"] != "completed":
        raise typer.Exit(EXIT_REFUSED)


def follow(api: ApiClient, batch: dict[str, Any], *, poll_s: float, live: bool) -> dict[str, Any]:
    """Poll the batch until its status is terminal, drawing a bar of its requests done (completed + failed)
    of its total; returns the batch as it ended."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[failed]}"), TimeElapsedColumn(),
                        console=console, disable=not live, transient=False)

    def show(task: Any, batch: dict[str, Any]) -> None:
        total, done, failed = counts(batch)
        progress.update(task, total=total or None, completed=done + failed,
                        description=f"{escape(batch['id'])} {styled(batch['status'])}",
                        failed=f"[red]{failed} failed[/]" if failed else "")

    with progress:
        task = progress.add_task("", total=None, failed="")
        show(task, batch)
        while batch["status"] not in TERMINAL:
            time.sleep(poll_s)
            batch = api.get(f"/v1/batches/{batch['id']}")
            show(task, batch)
    return batch


@app.command("list", epilog="Examples:\n\n  stillhouse batch list\n\n"
                            "  stillhouse batch list --limit 100 --json | jq -r '.data[].id'")
def list_batches(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=100, help="how many (1-100)")] = 20,
    after: Annotated[str | None, typer.Option(help="the batch id to list after (the previous page's last)")] = None,
    url: UrlOption = None, key: KeyOption = None, as_json: JsonOption = False,
) -> None:
    """Your batches, the newest first."""
    query: dict[str, Any] = {"limit": limit, **({"after": after} if after else {})}
    page = api_client(ctx, url, key).get("/v1/batches", params=query)
    if as_json:
        print_json(page)
        return
    table = Table("id", "status", "endpoint", "done", "failed", "created", title="batches")
    for batch in page.get("data") or []:
        total, done, failed = counts(batch)
        table.add_row(escape(batch["id"]), styled(batch["status"]), escape(str(batch.get("endpoint") or "-")),
                      f"{done + failed}/{total}", f"[red]{failed}[/]" if failed else "0",
                      when(batch.get("created_at")))
    console.print(table)
    if page.get("has_more") and page.get("last_id"):
        console.print(f"[dim]more: --after {escape(page['last_id'])}[/]", soft_wrap=True)


@app.command(epilog="Example: stillhouse batch get BATCH_ID --json | jq .request_counts")
def get(ctx: typer.Context, batch_id: str, url: UrlOption = None, key: KeyOption = None,
        as_json: JsonOption = False) -> None:
    """One batch: status, request counts, its files, times, and its errors (with the input's line numbers)."""
    batch = api_client(ctx, url, key).get(f"/v1/batches/{batch_id}")
    print_json(batch) if as_json else console.print(summary(batch))


@app.command(epilog="Example: stillhouse batch cancel BATCH_ID")
def cancel(ctx: typer.Context, batch_id: str, url: UrlOption = None, key: KeyOption = None,
           as_json: JsonOption = False) -> None:
    """Cancel a batch: cancelling until its requests in flight end, then cancelled.

    The results of the requests that finished stay downloadable."""
    batch = api_client(ctx, url, key).post(f"/v1/batches/{batch_id}/cancel")
    print_json(batch) if as_json else console.print(f"{escape(batch['id'])}  {styled(batch['status'])}",
                                                    highlight=False)


@app.command(epilog="""Examples:

  stillhouse batch download BATCH_ID -o results.jsonl

  stillhouse batch download BATCH_ID --errors | jq -c '{custom_id, error: .response.body.error}'""")
def download(
    ctx: typer.Context,
    batch_id: str,
    errors_file: Annotated[bool, typer.Option("--errors", help="the error file (the requests that failed) "
                                                               "instead of the output file")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", dir_okay=False, help="write to this file "
                                                "(default: stdout)", show_default=False)] = None,
    url: UrlOption = None, key: KeyOption = None,
) -> None:
    """Write a batch's output file (or with --errors its error file) to -o FILE or stdout.

    Both hold one JSON object a line: {id, custom_id, response, error}. Exit 1, saying why, when there is none (yet)."""
    api = api_client(ctx, url, key)
    batch = api.get(f"/v1/batches/{batch_id}")
    which, field = ("error", "error_file_id") if errors_file else ("output", "output_file_id")
    file_id = batch.get(field)
    if not file_id:
        status = batch.get("status", "?")
        total, done, failed = counts(batch)
        if status not in TERMINAL and status != "cancelling":
            why = f"it is still {status}: its files are made when it ends (stillhouse batch submit --wait follows one)"
        elif errors_file:
            why = f"it is {status} and none of its requests failed" if not failed else f"it is {status}"
        elif status == "failed" and batch.get("errors"):
            why = "it failed before running any request: stillhouse batch get " + batch_id + " shows why"
        elif total and failed == total:
            why = f"it is {status} and all its requests failed: --errors downloads the error file"
        else:
            why = f"it is {status} ({done} of {total} requests completed)"
        fail(f"batch {batch_id} has no {which} file: {why}", code=EXIT_REFUSED)
    content = api.get(f"/v1/files/{file_id}/content", raw=True)
    if output is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(content)
        sys.stdout.buffer.flush()
        return
    try:
        output.write_bytes(content)
    except OSError as err:
        fail(f"cannot write {output}: {err.strerror}", code=EXIT_USAGE, field="--output")
    errors.print(f"[dim]{len(content)} bytes of {which} file {escape(file_id)} written to "
                 f"{escape(str(output))}[/]", highlight=False)
