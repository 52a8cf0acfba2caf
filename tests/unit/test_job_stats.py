"""The operators' picture (jobs/stats.py) from a fake store: counts, percentiles over time, failures, cost."""
from datetime import UTC, datetime, timedelta

from stillhouse.jobs.model import JobStatus
from stillhouse.jobs.stats import JobStats, gpu_seconds, percentile

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def at(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job(job_id, status, created_ago, ended_ago, *, running_s=0.0, error_class=None, tenant="acme"):
    events = [{"at": at(created_ago), "status": "IN_QUEUE", "actor": "api"}]
    if running_s:
        events.append({"at": at(ended_ago + running_s), "status": "IN_PROGRESS", "actor": "dispatch"})
    events.append({"at": at(ended_ago), "status": status, "actor": "webhook"})
    return {"id": job_id, "status": status, "task": "echo", "created_at": at(created_ago), "updated_at": at(ended_ago),
            "events": events, "error_class": error_class, "attempts": 1, "tenant_id": tenant}


SUMMARY = ("id", "status", "task", "created_at", "updated_at")  # what the tenant index carries


class FakeJobs:
    def __init__(self, jobs):
        self.jobs = {j["id"]: j for j in jobs}
        self.read_whole = []

    def submitted_since(self, tenant_id, since, limit=1000):
        found = [j for j in self.jobs.values() if j["tenant_id"] == tenant_id and j["created_at"] >= since]
        newest = sorted(found, key=lambda j: j["created_at"], reverse=True)[:limit]
        return [{k: j[k] for k in SUMMARY} for j in newest]

    def overviews(self, ids):
        self.read_whole += ids
        return [self.jobs[i] for i in ids]


class FakeTenants:
    def tenants(self):
        return {"acme", "globex"}


class FakeQueues:
    def depths(self):
        return {"high": {"waiting": 2, "in_flight": 1, "dead_letter": 0}}


def stats_of(jobs, **kw):
    return JobStats(FakeJobs(jobs), FakeQueues(), FakeTenants(), router_usd_per_job=20e-6, gpu_usd_per_s=0.0002,
                    **kw)


def test_percentiles_are_values_that_occurred():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 0.99)) == (50, 95, 99)
    assert percentile([], 0.5) is None


def test_gpu_time_is_read_from_each_attempt_in_progress_to_its_next_event():
    assert gpu_seconds(job("a", "COMPLETED", 10, 1, running_s=2.5)) == 2.5
    assert gpu_seconds(job("b", "FAILED", 10, 1)) == 0.0


def test_the_snapshot_counts_statuses_and_puts_jobs_in_time_buckets():
    jobs = [job("old", "COMPLETED", 7300, 7200),  # outside the 1-hour window
            job("a", "COMPLETED", 3301, 3300, running_s=0.5),
            job("b", "COMPLETED", 100, 98, running_s=1.5),
            job("c", "FAILED", 50, 40, error_class="transient", tenant="globex"),
            job("d", "IN_PROGRESS", 5, 5)]
    snapshot = stats_of(jobs).snapshot(NOW, window_s=3600, buckets=6)
    assert snapshot["jobs_by_status"][JobStatus.COMPLETED.value] == 2
    assert snapshot["jobs_by_status"][JobStatus.FAILED.value] == 1
    assert snapshot["jobs_by_status"][JobStatus.IN_PROGRESS.value] == 1
    assert snapshot["queues"]["high"]["waiting"] == 2
    assert [row["ended"] for row in snapshot["series"]] == [1, 0, 0, 0, 0, 2]
    assert snapshot["series"][-1]["failed"] == 1
    assert snapshot["latency_ms"] == {"p50": 2000.0, "p95": 10000.0, "p99": 10000.0}
    assert snapshot["throughput_per_min"] == 0.05  # 3 ended in 60 minutes
    assert [f["id"] for f in snapshot["recent_failures"]] == ["c"]
    assert snapshot["recent_failures"][0]["error_class"] == "transient"
    assert [j["id"] for j in snapshot["recent_jobs"]] == ["d", "c", "b", "a"]  # newest change first
    # $20 router + mean GPU 1.0 s x $0.0002/s x 1M = $200
    assert snapshot["cost"]["per_1m_jobs_usd"] == 220.0
    assert snapshot["cost"]["mean_gpu_s"] == 1.0


def test_a_tenant_with_more_jobs_than_read_is_flagged_capped():
    jobs = [job(f"j{i}", "COMPLETED", 100, 50) for i in range(5)]
    assert stats_of(jobs, max_jobs=3).snapshot(NOW)["capped"] is True
    assert stats_of(jobs).snapshot(NOW)["capped"] is False


def test_only_the_jobs_shown_and_those_priced_are_read_whole():
    jobs = [job(f"j{i}", "COMPLETED", 100 + i, 50 + i) for i in range(10)]
    stats = stats_of(jobs, shown=3)
    snapshot = stats.snapshot(NOW)
    assert [j["id"] for j in snapshot["recent_jobs"]] == ["j0", "j1", "j2"]
    assert snapshot["recent_jobs"][0]["events"]  # read whole: the timeline is there
    assert sorted(stats.jobs.read_whole) == sorted(f"j{i}" for i in range(10))  # the 10 completed are priced
