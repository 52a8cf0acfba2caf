"""GPU runs per job, counted where they start: every /run that RunPod (or its stand-in) accepted, by the
stillhouse job whose callback URL it carries (`/callbacks/runpod/<job id>`). In-process tooling for the soak
and the tests: a crash after /run but before IN_PROGRESS is written leaves a run the job's timeline never
shows, so the timeline alone undercounts."""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

from stillhouse.runpod.client import RunPodClient

_PREFIX = "/callbacks/runpod/"


def job_of(webhook: str | None) -> str | None:
    path = urlsplit(webhook or "").path
    return path[len(_PREFIX):].split("/")[0] or None if path.startswith(_PREFIX) else None


def member_of(webhook: str | None) -> str:
    """The council member ("answer-0", "synthesis-0") a run asked, "" for a plain job."""
    return (parse_qs(urlsplit(webhook or "").query).get("member") or [""])[0]


class GpuRuns:
    """`with GpuRuns() as runs:` counts accepted /run calls per job id (`runs[job_id]`) and per job and
    council member (`runs.steps`, keyed (job id, member); a plain job's member is "") until exit."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.steps: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._original: Any = None

    def __enter__(self) -> GpuRuns:
        original = self._original = RunPodClient.run
        runs = self

        def run(client: RunPodClient, *args: Any, **kwargs: Any) -> Any:
            accepted = original(client, *args, **kwargs)
            job_id = job_of(kwargs.get("webhook"))
            if job_id is not None:
                with runs._lock:
                    runs.counts[job_id] += 1
                    runs.steps[job_id, member_of(kwargs.get("webhook"))] += 1
            return accepted

        RunPodClient.run = run  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        RunPodClient.run = self._original  # type: ignore[method-assign]

    def __getitem__(self, job_id: str) -> int:
        with self._lock:
            return self.counts[job_id]

    def most_per_step(self, job_id: str) -> int:
        """The most GPU runs one step of the job had (a plain job: its runs; a council: its busiest member)."""
        with self._lock:
            return max((n for (job, _), n in self.steps.items() if job == job_id), default=0)
