"""`stillhouse submit | jobs | get | cancel`: jobs through the router's API."""
from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Self

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from stillhouse_local.cli_common import (
    ApiClient,
    JsonOption,
    KeyOption,
    UrlOption,
    api_client,
    console,
    fail,
    parse_json_argument,
    print_json,
)

app = typer.Typer()

TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
STATUS_STYLE = {"COMPLETED": "green", "FAILED": "bold red", "TIMED_OUT": "red", "CANCELLED": "yellow",
                "IN_PROGRESS": "cyan", "IN_QUEUE": "blue", "RETRYING": "magenta"}


def styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, '')}]{status}[/]"


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def queue_time_s(job: dict[str, Any]) -> float | None:
    """From submission to the first attempt starting on an endpoint (None while it still waits)."""
    started = next((e["at"] for e in job.get("events", []) if e.get("status") == "IN_PROGRESS"), None)
    return seconds_between(job.get("created_at"), started)


@app.command(epilog="""Examples:

  stillhouse submit --task echo --input '{"text": "hi"}' --wait

  stillhouse submit --task generate --input @prompt.json --stream

  stillhouse submit --task embed --input '{"texts": ["a"]}' --json | jq -r .id""")
def submit(
    ctx: typer.Context,
    task: Annotated[str, typer.Option(help="echo, generate, embed, council, ...")],
    input: Annotated[str, typer.Option("--input", help="the job's input: JSON, or @file (@- = stdin)")],
    model: Annotated[str | None, typer.Option(help="the model to run")] = None,
    params: Annotated[str | None, typer.Option(help="the task's params: JSON or @file")] = None,
    priority: Annotated[str | None, typer.Option(help="high, normal or low")] = None,
    webhook: Annotated[str | None, typer.Option(help="an https URL that gets the result")] = None,
    cache: Annotated[bool, typer.Option("--cache", help="answer from the result cache when it can")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="submit once per key")] = None,
    deadline_s: Annotated[int | None, typer.Option(help="seconds to finish before it ends TIMED_OUT")] = None,
    ttl_s: Annotated[int | None, typer.Option(help="seconds to start on a GPU before it ends TIMED_OUT")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the job live until it ends")] = False,
    stream: Annotated[bool, typer.Option("--stream", help="stream a generate job's text as it is made (implies --wait)")]
    = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits before giving up (exit 1)")] = 300.0,
    url: UrlOption = None, key: KeyOption = None, as_json: JsonOption = False,
) -> None:
    """Submit a job; print its id, or with --wait follow it (status, queue time, tokens) until it ends.

    With --wait the exit code is 0 only when the job COMPLETED."""
    body: dict[str, Any] = {"task": task, "input": parse_json_argument(input, "--input")}
    job_params = parse_json_argument(params, "--params") if params else {}
    if stream:
        if not isinstance(job_params, dict):
            fail("must be a JSON object", code=2, field="--params")
        job_params = {**job_params, "stream": True}
    for name, value in (("model", model), ("params", job_params or None), ("priority", priority),
                        ("webhook", webhook), ("cache", cache or None), ("deadline_s", deadline_s),
                        ("ttl_s", ttl_s)):
        if value is not None:
            body[name] = value
    api = api_client(ctx, url, key)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    accepted = api.request("POST", "/v1/jobs", body=body, headers=headers)
    if not (wait or stream):
        print_json(accepted) if as_json else console.print(f"{accepted['id']}  {styled(accepted['status'])}")
        return
    job = follow(api, accepted["id"], stream=stream, timeout_s=timeout, live=not as_json)
    if as_json:
        print_json(job)
    elif not console.is_terminal:
        console.print()  # Live's last frame ends without a newline when it is not drawing on a terminal
    if job["status"] != "COMPLETED":
        raise typer.Exit(1)


def follow(api: ApiClient, job_id: str, *, stream: bool, timeout_s: float, live: bool,
           poll_s: float = 0.25) -> dict[str, Any]:
    """Poll the job (and its stream) until it ends, redrawing a live panel; returns the job as it ended."""
    started = time.monotonic()
    text: list[str] = []
    tokens = 0
    attempt = None
    job = api.get(f"/v1/jobs/{job_id}")

    def panel() -> Table:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim")
        grid.add_column()
        grid.add_row("job", job_id)
        grid.add_row("status", styled(job["status"]))
        waited = queue_time_s(job)
        grid.add_row("queue time", f"{waited:.2f} s" if waited is not None else
                     f"{time.monotonic() - started:.1f} s (waiting)")
        grid.add_row("endpoint", f"{job.get('endpoint') or '-'} (attempt {job.get('attempts', 0)})")
        grid.add_row("elapsed", f"{time.monotonic() - started:.1f} s")
        if stream:
            grid.add_row("tokens streamed", str(tokens))
            grid.add_row("text", escape("".join(text)[-400:]))
        if job["status"] in TERMINAL:
            if job.get("error"):
                grid.add_row("error", f"[red]{job.get('error_class') or ''}[/] {escape(job['error'])}")
            elif job.get("output") is not None and not stream:
                grid.add_row("output", escape(str(job["output"])[:400]))
        return grid

    with Live(panel(), console=console, refresh_per_second=8, transient=False) if live else _Quiet() as view:
        while True:
            if stream and job["status"] != "IN_QUEUE":
                page = api.get(f"/v1/jobs/{job_id}/stream")
                if attempt is not None and page.get("attempt") != attempt:
                    text.clear()  # a retry streams from the start
                    tokens = 0
                attempt = page.get("attempt")
                for item in page.get("stream", []):
                    chunk = item.get("output")
                    if isinstance(chunk, dict) and isinstance(chunk.get("text"), str):
                        text.append(chunk["text"])
                        tokens += 1
                    elif isinstance(chunk, str):
                        text.append(chunk)
                        tokens += 1
            job = api.get(f"/v1/jobs/{job_id}")
            view.update(panel())
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() - started > timeout_s:
                view.update(panel())
                fail(f"job {job_id} is still {job['status']} after {timeout_s:g} s", code=1)
            time.sleep(poll_s)


class _Quiet:
    """Live's stand-in for --json: nothing drawn."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, _renderable: Any) -> None:
        return None


@app.command(epilog="Examples:\n\n  stillhouse jobs --status FAILED\n\n  stillhouse jobs --limit 100 --json")
def jobs(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="only jobs in this status, e.g. FAILED")] = None,
    limit: Annotated[int, typer.Option(help="how many (1-100)")] = 20,
    cursor: Annotated[str | None, typer.Option(help="the next page's cursor (from --json)")] = None,
    url: UrlOption = None, key: KeyOption = None, as_json: JsonOption = False,
) -> None:
    """Your most recent jobs."""
    query = {name: value for name, value in (("status", status), ("limit", limit), ("cursor", cursor)) if value}
    api = api_client(ctx, url, key)
    page = api.get("/v1/jobs", params=query)
    # The API filters by status after reading a page, so a page may hold fewer than asked: read on, a few pages
    # (all that was read is shown, so the cursor still follows the last one).
    for _ in range(20):
        if not status or len(page["items"]) >= limit or not page.get("cursor"):
            break
        more = api.get("/v1/jobs", params={**query, "cursor": page["cursor"]})
        page = {"items": page["items"] + more["items"], "cursor": more.get("cursor")}
    if as_json:
        print_json(page)
        return
    table = Table("id", "task", "status", "created", "updated", title="jobs")
    for item in page["items"]:
        table.add_row(item["id"], item["task"], styled(item["status"]), item["created_at"], item["updated_at"])
    console.print(table)
    if page.get("cursor"):
        console.print(f"[dim]more: --cursor {page['cursor']}[/]", soft_wrap=True)


@app.command(epilog="Example: stillhouse get JOB_ID --json | jq .output")
def get(ctx: typer.Context, job_id: str, url: UrlOption = None, key: KeyOption = None,
        as_json: JsonOption = False) -> None:
    """One job: status, endpoint, attempts, output or error, and its events."""
    job = api_client(ctx, url, key).get(f"/v1/jobs/{job_id}")
    if as_json:
        print_json(job)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    for label, value in (("job", job["id"]), ("task", job["task"]), ("status", job["status"]),
                         ("model", job.get("model")), ("endpoint", job.get("endpoint")),
                         ("attempts", job.get("attempts")), ("created", job["created_at"]),
                         ("updated", job["updated_at"]), ("queue time", _secs(queue_time_s(job))),
                         ("error", f"{job.get('error_class') or ''} {job.get('error') or ''}".strip() or None),
                         ("output", None if job.get("output") is None else str(job["output"])[:2000]),
                         ("output url", job.get("output_url"))):
        if value is not None:
            shown = styled(value) if label == "status" else escape(str(value))  # API text is not markup
            grid.add_row(label, shown)
    console.print(grid)
    console.print(f"[dim]{len(job.get('events', []))} events: stillhouse trace {job['id']}[/]")


def _secs(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f} s"


@app.command(epilog="Example: stillhouse cancel JOB_ID")
def cancel(ctx: typer.Context, job_id: str, url: UrlOption = None, key: KeyOption = None,
           as_json: JsonOption = False) -> None:
    """Cancel a job that has not ended (its RunPod job too)."""
    answer = api_client(ctx, url, key).post(f"/v1/jobs/{job_id}/cancel")
    print_json(answer) if as_json else console.print(f"{answer['id']}  {styled(answer['status'])}")
