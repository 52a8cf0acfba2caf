"""`stillhouse trace JOB_ID`: a waterfall of a job's stages.

The stages come from `GET /v1/jobs/{id}/trace` when the router has it (spans with a name, a start and an end or
a duration), else from the job's own events: each event starts a stage that lasts until the next one.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from stillhouse_local.cli_common import JsonOption, KeyOption, UrlOption, api_client, console, print_json

app = typer.Typer()


@dataclass(frozen=True)
class Stage:
    name: str
    start_s: float  # from the job's first stage
    duration_s: float
    detail: str = ""


def _at(value: Any) -> datetime | None:
    if isinstance(value, (int, float)):  # epoch seconds or milliseconds
        return datetime.fromtimestamp(value / 1000 if value > 1e11 else value)
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value)
    return None


def stages_from_events(events: list[dict[str, Any]], ended: bool) -> list[Stage]:
    """One stage per event, lasting until the next; the last one is an instant once the job has ended."""
    times = [_at(e.get("at")) for e in events]
    if not events or times[0] is None:
        return []
    origin = times[0]
    stages = []
    for index, event in enumerate(events):
        start = times[index] or origin
        end = times[index + 1] if index + 1 < len(events) else (start if ended else datetime.now(start.tzinfo))
        label = event.get("status", "?")
        if event.get("attempt"):
            label += f" #{event['attempt']}"
        detail = " ".join(str(v) for v in (event.get("actor"), event.get("endpoint"), event.get("detail")) if v)
        stages.append(Stage(label, (start - origin).total_seconds(), max(0.0, ((end or start) - start).total_seconds()),
                            detail))
    return stages


def stages_from_trace(trace: Any) -> list[Stage]:
    """Spans of a trace answer: a list, or {"spans"|"stages": [...]}, each with a name and start/end or duration."""
    spans = trace.get("spans") or trace.get("stages") if isinstance(trace, dict) else trace
    if not isinstance(spans, list):
        return []
    rows = []
    for span in spans:
        if not isinstance(span, dict):
            continue
        start = _at(span.get("start") or span.get("started_at") or span.get("start_time") or span.get("at"))
        end = _at(span.get("end") or span.get("ended_at") or span.get("end_time"))
        if start is None:
            continue
        duration = span.get("duration_s")
        if duration is None and span.get("duration_ms") is not None:
            duration = span["duration_ms"] / 1000
        if duration is None:
            duration = (end - start).total_seconds() if end else 0.0
        rows.append((start, span.get("name") or span.get("stage") or span.get("status") or "?", float(duration),
                     " ".join(str(span[k]) for k in ("endpoint", "detail", "actor") if span.get(k))))
    if not rows:
        return []
    rows.sort(key=lambda row: row[0])
    origin = rows[0][0]
    return [Stage(name, (start - origin).total_seconds(), duration, detail) for start, name, duration, detail in rows]


def waterfall(stages: list[Stage], width: int = 40) -> Table:
    """Each stage as a bar placed on one time axis shared by all."""
    total = max((s.start_s + s.duration_s for s in stages), default=0.0) or 1e-9
    table = Table(box=None, pad_edge=False)
    for name in ("stage", "start", "took"):
        table.add_column(name, no_wrap=True)
    table.add_column("", no_wrap=True, min_width=width)
    table.add_column("detail", overflow="fold")
    for stage in stages:
        offset = round(stage.start_s / total * width)
        length = max(1, round(stage.duration_s / total * width))
        bar = " " * min(offset, width - 1) + "█" * min(length, width - min(offset, width - 1))
        table.add_row(stage.name, f"+{stage.start_s:.3f}s", f"{stage.duration_s:.3f}s", f"[cyan]{bar}[/]",
                      f"[dim]{stage.detail}[/]")
    return table


@app.command(epilog="Example: stillhouse trace JOB_ID --json")
def trace(ctx: typer.Context, job_id: str,
          width: Annotated[int, typer.Option(help="the bars' width in characters")] = 40,
          url: UrlOption = None, key: KeyOption = None, as_json: JsonOption = False) -> None:
    """A waterfall of the job's stages (queued, dispatched, running, retried, ended)."""
    api = api_client(ctx, url, key)
    traced = api.get(f"/v1/jobs/{job_id}/trace", missing_ok=True)
    stages = stages_from_trace(traced) if traced is not None else []
    job = None
    if not stages:
        job = api.get(f"/v1/jobs/{job_id}")
        stages = stages_from_events(job.get("events", []), ended=job["status"] in
                                    {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
    if as_json:
        print_json([{"name": s.name, "start_s": s.start_s, "duration_s": s.duration_s, "detail": s.detail}
                    for s in stages])
        return
    title = f"job {job_id}" + (f"  {job['status']}" if job else "")
    console.print(f"[bold]{title}[/]")
    console.print(waterfall(stages, width))
