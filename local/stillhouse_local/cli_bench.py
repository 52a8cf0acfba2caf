"""`stillhouse bench`: the router's overhead benchmark (benchmarks/overhead.py), a quick run by default."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from stillhouse_local.cli_common import EXIT_USAGE, console

app = typer.Typer()
REPO_ROOT = Path(__file__).resolve().parents[2]


@app.command(epilog="Examples:\n\n  stillhouse bench\n\n  stillhouse bench --jobs 200 --concurrency 8")
def bench(
    jobs: Annotated[int, typer.Option(help="measured jobs (the full run uses 200)")] = 30,
    concurrency: Annotated[int, typer.Option(help="jobs in flight at once")] = 4,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the command, run nothing")] = False,
) -> None:
    """What the router adds to a job (API, queue, dispatch, callback) on an embedded stack; prints its JSON."""
    command = [sys.executable, "-m", "benchmarks.overhead", "--jobs", str(jobs), "--concurrency", str(concurrency),
               "--warmup", "2", "--workflow-jobs", "1"]
    shown = " ".join(command[1:])
    if not (REPO_ROOT / "benchmarks" / "overhead.py").is_file():
        console.print(f"the benchmarks live in the repository: from its root run `python {shown}`")
        raise typer.Exit(EXIT_USAGE)
    if dry_run:
        console.print(f"cd {REPO_ROOT} && python {shown}")
        return
    console.print(f"[dim]running: python {shown}[/]")
    raise typer.Exit(subprocess.call(command, cwd=REPO_ROOT))
