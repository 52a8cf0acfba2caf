"""Crash points (stillhouse.crash_points) and the notice outbox (stillhouse.delivery.outbox): a function
may die between any two calls; a job that ended must still get its caller's notice."""
from datetime import UTC, datetime, timedelta

import pytest

from stillhouse import crash_points
from stillhouse.crash_points import CrashPointHit, crash_point
from stillhouse.delivery.outbox import resend_owed
from stillhouse.jobs.model import JobStatus
from stillhouse.jobs.store import JobStore, iso
from tests.support.jobs import make_job


@pytest.fixture(autouse=True)
def crash_points_off():
    crash_points.configure({})
    yield
    crash_points.configure({})


def test_off_by_default_a_crash_point_does_nothing():
    for _ in range(1000):
        crash_point("dispatch.after_claim", "j1")
    assert crash_points.hits() == {}


def test_at_rate_one_a_point_crashes_once_per_job_and_is_counted():
    crash_points.configure({"dispatch.after_run": 1.0})
    with pytest.raises(CrashPointHit) as hit:
        crash_point("dispatch.after_run", "j1")
    assert hit.value.point == "dispatch.after_run"
    crash_point("dispatch.after_run", "j1")  # the re-run of the same job passes
    crash_point("dispatch.after_claim", "j1")  # another point is off
    with pytest.raises(CrashPointHit):
        crash_point("dispatch.after_run", "j2")
    assert crash_points.hits() == {"dispatch.after_run": 2}


def test_the_exception_is_not_one_that_except_exception_takes():
    crash_points.configure({"*": 1.0})
    with pytest.raises(CrashPointHit):
        try:
            crash_point("callbacks.after_terminal", "j1")
        except Exception:  # noqa: BLE001 - what the code's business handlers do
            pytest.fail("a crash must end the invocation, not be handled as an outcome")


def test_a_share_is_seeded_and_repeatable():
    def crashed(seed):
        crash_points.configure({"delivery.after_post": 0.3}, seed=seed)
        out = set()
        for i in range(1000):
            try:
                crash_point("delivery.after_post", f"job-{i}")
            except CrashPointHit:
                out.add(i)
        return out

    first = crashed(7)
    assert 220 < len(first) < 380
    assert crashed(7) == first and crashed(8) != first


def test_unknown_points_are_refused():
    with pytest.raises(ValueError, match="unknown crash points"):
        crash_points.configure({"dispatch.nowhere": 0.1})


def test_configured_from_the_environment(monkeypatch):
    monkeypatch.setenv(crash_points.ENV, '{"sweeper.after_fail": 1.0}')
    monkeypatch.setattr(crash_points, "_configured_from_env", False)
    with pytest.raises(CrashPointHit):
        crash_point("sweeper.after_fail", "j1")


def _finish(store, job_id, **kw):
    store.create(make_job(job_id, **kw))
    return store.transition(job_id, JobStatus.COMPLETED, actor="webhook", fields={"output": {"text": "hi"}})


def _owed(store, job_id, later_s=3600):
    return job_id in store.due(JobStatus.COMPLETED, iso(datetime.now(UTC) + timedelta(seconds=later_s)))


def test_a_finished_jobs_notice_is_owed_until_a_delivery_try_is_recorded(jobs_table):
    store = JobStore(jobs_table, watch_s=30)
    _finish(store, "hooked", webhook="https://caller.example/hook")
    assert _owed(store, "hooked") and not _owed(store, "hooked", later_s=0)  # due after the grace only
    store.record_delivery("hooked", {"at": iso(datetime.now(UTC)), "try": 1, "status_code": 200})
    assert not _owed(store, "hooked")


def test_the_sweep_queues_a_notice_never_tried_again_once(jobs_table):
    """The function died after the terminal write, before queueing the notice: the outbox sends it."""
    store = JobStore(jobs_table, watch_s=30)
    _finish(store, "hooked", webhook="https://caller.example/hook")
    _finish(store, "polled")  # no webhook: nothing to send, it just leaves the index
    sent = []
    by = iso(datetime.now(UTC) + timedelta(minutes=5))
    assert resend_owed(store, lambda job: sent.append(job.id) or True, by) == {"notices_resent": 1}
    assert sent == ["hooked"]
    assert resend_owed(store, lambda job: sent.append(job.id) or True, by) == {}
    assert not _owed(store, "hooked") and not _owed(store, "polled")


def test_a_notice_that_could_not_be_queued_stays_owed(jobs_table):
    store = JobStore(jobs_table, watch_s=30)
    _finish(store, "hooked", webhook="https://caller.example/hook")
    by = iso(datetime.now(UTC) + timedelta(minutes=5))
    assert resend_owed(store, lambda job: False, by) == {"errors": 1}
    assert _owed(store, "hooked")


def test_a_job_already_tried_is_not_sent_again(jobs_table):
    store = JobStore(jobs_table, watch_s=30)
    job = _finish(store, "hooked", webhook="https://caller.example/hook")
    # Its delivery has started (a failed try is recorded): the delivery queue owns it, not the outbox.
    store.record_delivery(job.id, {"at": iso(datetime.now(UTC)), "try": 1, "error": "HTTP 500", "next": "retry"})
    sent = []
    assert resend_owed(store, sent.append, iso(datetime.now(UTC) + timedelta(minutes=5))) == {}
    assert sent == []
