"""A job as the API stores it, IN_QUEUE, with defaults a test overrides by keyword."""
from __future__ import annotations

from stillhouse.jobs.model import Job, JobStatus, Task
from stillhouse.jobs.store import now_iso


def make_job(job_id="j1", tenant="acme", task=Task.ECHO, **kw) -> Job:
    at = now_iso()
    return Job(id=job_id, tenant_id=tenant, task=task, status=JobStatus.IN_QUEUE, input={"text": "hi", "x": 1.5},
               created_at=at, updated_at=at, events=[{"at": at, "status": "IN_QUEUE", "actor": "api"}], **kw)
