"""The sweeper settles every stale job it can; one it cannot settle is counted and does not stop the rest."""
from datetime import UTC, datetime, timedelta

from stillhouse.jobs.model import JobStatus
from stillhouse.jobs.store import JobStore
from stillhouse.jobs.sweeper import Sweeper
from tests.support.callbacks import recorder
from tests.support.jobs import make_job


def test_a_job_that_cannot_be_settled_is_counted_and_the_sweep_goes_on(jobs_table):
    store = JobStore(jobs_table)
    for job_id, runpod_id in (("j1", "rp-broken"), ("j2", "rp-done")):
        store.create(make_job(job_id))
        store.transition(job_id, JobStatus.IN_PROGRESS, actor="dispatch", endpoint="a", attempt=1,
                         fields={"runpod_id": runpod_id, "attempts": 1})

    def fetch_status(endpoint, runpod_id):
        if runpod_id == "rp-broken":
            raise ValueError("a body nobody expected")  # a bug, not a RunPod fault: not a RunPodError
        return {"id": runpod_id, "status": "COMPLETED", "output": {"text": "late"}}

    callbacks, notified, _ = recorder(store)
    sweeper = Sweeper(store=store, callbacks=callbacks, fetch_status=fetch_status,
                      execution_status=lambda arn: "RUNNING", notify=notified.append, stale_after_s=300)
    counts = sweeper.sweep(now=datetime.now(UTC) + timedelta(hours=1))
    assert counts == {"errors": 1, "settled": 1}
    assert store.get("j2").status is JobStatus.COMPLETED
    assert store.get("j1").status is JobStatus.IN_PROGRESS  # left for the next sweep, not lost
