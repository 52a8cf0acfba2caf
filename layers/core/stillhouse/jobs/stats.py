"""The operators' picture of the system over a recent window, computed from the job store and the queues:
jobs by status, throughput and latency percentiles over time, recent failures and jobs, estimated cost.

The window's jobs are those submitted in it, read from the tenant index (which carries status and times)
for every tenant with a key; only the few jobs shown in detail are read whole. Read-only and bounded (at
most `max_jobs` per tenant), so a dashboard can poll it.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from stillhouse.jobs.model import JobStatus
from stillhouse.jobs.status import TERMINAL

LIVE = (JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS, JobStatus.RETRYING)
FAILED = frozenset({JobStatus.FAILED.value, JobStatus.TIMED_OUT.value})


class Jobs(Protocol):
    def submitted_since(self, tenant_id: str, since: str, limit: int = 1000) -> list[dict[str, Any]]: ...
    def overviews(self, job_ids: list[str]) -> list[dict[str, Any]]: ...


class Tenants(Protocol):
    def tenants(self) -> set[str]: ...


class Queues(Protocol):
    def depths(self) -> dict[str, dict[str, int]]: ...


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (no interpolation): a value that really occurred."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * share // 1))  # ceil
    return ordered[int(rank) - 1]


def gpu_seconds(job: dict[str, Any]) -> float:
    """Time the job's attempts held a worker: each IN_PROGRESS event to the event after it."""
    events = job.get("events") or []
    held = 0.0
    for event, after in itertools.pairwise(events):
        if event.get("status") == JobStatus.IN_PROGRESS.value:
            held += max(0.0, (parse(after["at"]) - parse(event["at"])).total_seconds())
    return held


@dataclass
class JobStats:
    jobs: Jobs
    queues: Queues
    tenants: Tenants
    router_usd_per_job: float
    gpu_usd_per_s: float
    max_jobs: int = 1000  # per tenant and snapshot
    shown: int = 25  # recent jobs (and failures) shown with their timelines

    def snapshot(self, now: datetime, window_s: int = 3600, buckets: int = 30) -> dict[str, Any]:
        since = now - timedelta(seconds=window_s)
        per_tenant = [self.jobs.submitted_since(tenant, iso(since), self.max_jobs) for tenant in self.tenants.tenants()]
        jobs = sorted((_plain(job) for found in per_tenant for job in found), key=lambda job: job["updated_at"],
                      reverse=True)
        ended = [job for job in jobs if job["status"] in {s.value for s in TERMINAL}]
        latency = {job["id"]: (parse(job["updated_at"]) - parse(job["created_at"])).total_seconds() * 1000
                   for job in ended}
        failed = [job for job in ended if job["status"] in FAILED][:self.shown]
        completed = [job for job in ended if job["status"] == JobStatus.COMPLETED.value][:100]
        detailed = {job["id"]: _plain(job) for job in self.jobs.overviews(
            list(dict.fromkeys(j["id"] for j in jobs[:self.shown] + failed + completed)))}
        return {
            "generated_at": iso(now),
            "window_s": window_s,
            "queues": self.queues.depths(),
            "jobs_by_status": {status.value: sum(j["status"] == status.value for j in jobs) for status in JobStatus},
            "capped": any(len(found) >= self.max_jobs for found in per_tenant),
            "latency_ms": _percentiles(list(latency.values())),
            "throughput_per_min": round(len(ended) / (window_s / 60), 3),
            "series": _series(ended, latency, since, window_s, buckets),
            "recent_failures": [_row(detailed.get(job["id"], job), latency) for job in failed],
            "recent_jobs": [_row(detailed.get(job["id"], job), latency) for job in jobs[:self.shown]],
            "cost": self._cost([detailed[job["id"]] for job in completed if job["id"] in detailed]),
        }

    def _cost(self, completed: list[dict[str, Any]]) -> dict[str, Any]:
        """Per 1M jobs like the recent completed ones: the router's AWS share plus their mean GPU time."""
        mean_gpu_s = sum(gpu_seconds(job) for job in completed) / len(completed) if completed else 0.0
        router = self.router_usd_per_job * 1e6
        gpu = mean_gpu_s * self.gpu_usd_per_s * 1e6
        return {"per_1m_jobs_usd": round(router + gpu, 2), "router_usd": round(router, 2),
                "gpu_usd": round(gpu, 2), "mean_gpu_s": round(mean_gpu_s, 3), "jobs_seen": len(completed),
                "gpu_usd_per_s": self.gpu_usd_per_s}


def _plain(value: Any) -> Any:
    """DynamoDB's Decimals as ints or floats, recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _percentiles(values: list[float]) -> dict[str, float | None]:
    return {name: None if (p := percentile(values, share)) is None else round(p, 1)
            for name, share in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}


def _series(ended: list[dict[str, Any]], latency: dict[str, float], since: datetime, window_s: int,
            buckets: int) -> list[dict[str, Any]]:
    """The window cut into equal buckets by each job's end: jobs ended, failed, and latency percentiles."""
    width = window_s / buckets
    rows: list[list[dict[str, Any]]] = [[] for _ in range(buckets)]
    for job in ended:
        index = int((parse(job["updated_at"]) - since).total_seconds() // width)
        rows[min(max(index, 0), buckets - 1)].append(job)
    return [{"at": iso(since + timedelta(seconds=i * width)), "completed": sum(
                j["status"] == JobStatus.COMPLETED.value for j in row),
             "failed": sum(j["status"] in FAILED for j in row), "ended": len(row),
             **_percentiles([latency[j["id"]] for j in row])} for i, row in enumerate(rows)]


def _row(job: dict[str, Any], latency: dict[str, float]) -> dict[str, Any]:
    return {"id": job["id"], "status": job["status"], "task": job.get("task"), "priority": job.get("priority"),
            "endpoint": job.get("endpoint"), "attempts": job.get("attempts", 0), "created_at": job["created_at"],
            "updated_at": job["updated_at"], "latency_ms": None if job["id"] not in latency else
            round(latency[job["id"]], 1), "error_class": job.get("error_class"), "error": job.get("error"),
            "cached_from": job.get("cached_from"), "events": job.get("events") or []}
