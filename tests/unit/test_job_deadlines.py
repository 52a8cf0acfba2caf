"""Submission faults are bounded by time, not by a count: a refused /run ran no GPU and spends no attempt,
and every job has a deadline (`deadline_s`, or its tenant's) and may have a time to start (`ttl_s`),
after which it ends TIMED_OUT naming what it was waiting for."""
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from stillhouse import errors
from stillhouse.errors import ErrorClass
from stillhouse.jobs.deadlines import SettleDeadlines, after
from stillhouse.jobs.model import JobRequest, JobStatus
from stillhouse.jobs.store import JobStore, now_iso
from stillhouse.jobs.sweeper import Sweeper
from stillhouse.runpod.client import RunPodError
from stillhouse.workflows.recovery import RecoveryTasks
from tests.support.callbacks import recorder
from tests.support.fakes import Ep, FakeRunPod, FakeWorkflows, make_dispatcher
from tests.support.jobs import make_job

FIVE_XX = RunPodError("POST /run: HTTP 503", error_class=ErrorClass.TRANSIENT, status_code=503)


def _job(store, job_id, *, deadline_s=None, ttl_s=None, **kw):
    at = now_iso()
    job = make_job(job_id, **kw).model_copy(update={
        "deadline_at": after(at, deadline_s) if deadline_s is not None else None,
        "start_by": after(at, ttl_s) if ttl_s is not None else None})
    return store.create(job)


def _recovery(store, runpod, max_attempts=3):
    notified = []
    dispatcher = make_dispatcher(store, [Ep("a", "ep-a")], runpod)
    dispatcher.notify = notified.append
    callbacks, _, _ = recorder(store, workflows=FakeWorkflows())
    tasks = RecoveryTasks(store=store, dispatcher=dispatcher, callbacks=callbacks, fetch_status=None,
                          notify=notified.append, max_attempts=max_attempts)
    return tasks, notified


def test_a_refused_run_is_retried_without_spending_an_attempt_of_the_budget(jobs_table):
    store = JobStore(jobs_table)
    _job(store, "j1")
    tasks, _ = _recovery(store, FakeRunPod({"ep-a": FIVE_XX}), max_attempts=2)
    for _ in range(5):  # far more refusals than the budget of GPU runs
        with pytest.raises(errors.NotStarted):
            tasks.submit("j1", "tok")
    job = store.get("j1")
    assert job.status is JobStatus.RETRYING and job.gpu_runs == 0 and job.error_class is ErrorClass.TRANSIENT
    tasks.dispatcher.client_for = lambda endpoint: FakeRunPod()  # the endpoint answers again
    assert tasks.submit("j1", "tok")["runpod_id"]
    assert store.get("j1").status is JobStatus.IN_PROGRESS and store.get("j1").gpu_runs == 1


def test_runs_on_a_gpu_still_have_a_budget(jobs_table):
    store = JobStore(jobs_table)
    _job(store, "j1")
    tasks, _ = _recovery(store, FakeRunPod(), max_attempts=1)
    tasks.submit("j1", "tok")
    store.transition("j1", JobStatus.RETRYING, actor="webhook", fields={"error": "out of memory"})
    with pytest.raises(errors.TerminalError, match="gave up after 1 attempts"):
        tasks.submit("j1", "tok")


def test_a_job_past_its_deadline_ends_timed_out_naming_what_it_waited_for(jobs_table):
    store = JobStore(jobs_table)
    _job(store, "late", deadline_s=0)
    store.transition("late", JobStatus.RETRYING, actor="recovery", fields={"error": "a: POST /run: HTTP 503"})
    tasks, notified = _recovery(store, FakeRunPod())
    with pytest.raises(errors.JobFinished):
        tasks.submit("late", "tok")
    job = store.get("late")
    assert job.status is JobStatus.TIMED_OUT and job.gpu_runs == 0
    assert "deadline" in job.error and "a: POST /run: HTTP 503" in job.error
    assert [j.id for j in notified] == ["late"]  # the caller hears of it


def test_a_job_not_started_by_its_ttl_is_dropped_but_a_started_one_is_not(jobs_table):
    store = JobStore(jobs_table)
    runpod = FakeRunPod()
    dispatcher = make_dispatcher(store, [Ep("a")], runpod)
    _job(store, "stale", ttl_s=0)
    assert dispatcher.dispatch("stale") is None
    assert store.get("stale").status is JobStatus.TIMED_OUT and "ttl" in store.get("stale").error
    assert runpod.runs == []  # no GPU spent on it
    # A job that has run once is past starting: its ttl no longer applies, only its deadline.
    _job(store, "rerun", ttl_s=3600)
    dispatcher.dispatch("rerun")
    store.transition("rerun", JobStatus.RETRYING, actor="webhook", fields={"start_by": now_iso()})
    assert dispatcher.submit(store.get("rerun"), 2, actor="recovery").status is JobStatus.IN_PROGRESS


def test_the_deadline_caps_what_runpod_is_told(jobs_table):
    store = JobStore(jobs_table)
    runpod = FakeRunPod()
    dispatcher = make_dispatcher(store, [Ep("a")], runpod)
    dispatcher.deadlines = SettleDeadlines(run_floor_s=30)
    _job(store, "soon", deadline_s=12)
    dispatcher.dispatch("soon")
    (_, _, _, policy), = runpod.runs
    assert 5_000 <= policy["executionTimeout"] <= 12_000  # not the floor's 30 s: the job must end by then
    assert 10_000 <= policy["ttl"] <= 12_000  # RunPod drops it too (never under its 10 s minimum)


def test_the_sweeper_ends_a_job_past_its_deadline_wherever_it_waits(jobs_table):
    store = JobStore(jobs_table, watch_s=0)
    _job(store, "queued", deadline_s=1)
    _job(store, "running", deadline_s=1)
    store.transition("running", JobStatus.IN_PROGRESS, actor="dispatch", endpoint="a", attempt=1,
                     fields={"runpod_id": "rp-r", "attempts": 1})
    learnt, cancelled = [], []
    callbacks, notified, _ = recorder(store, learn=lambda *outcome: learnt.append(outcome[:2]))
    sweeper = Sweeper(store=store, callbacks=callbacks, fetch_status=None, execution_status=lambda arn: "RUNNING",
                      notify=notified.append, deadlines=SettleDeadlines(),
                      cancel_runpod=lambda endpoint, runpod_id: cancelled.append(runpod_id))
    counts = sweeper.sweep(now=datetime.now(UTC) + timedelta(seconds=5))
    assert counts == {"timed_out": 2}
    assert {store.get(j).status for j in ("queued", "running")} == {JobStatus.TIMED_OUT}
    assert "still queued" in store.get("queued").error and "its run on a" in store.get("running").error
    assert cancelled == ["rp-r"] and learnt == [("a", JobStatus.CANCELLED)]  # the GPU stops, the slot is freed
    assert sorted(j.id for j in notified) == ["queued", "running"]


@pytest.mark.parametrize(("fields", "field"), [
    ({"deadline_s": 0}, "deadline_s"), ({"deadline_s": 86_401}, "deadline_s"), ({"ttl_s": 2}, "ttl_s"),
])
def test_a_deadline_or_ttl_out_of_bounds_is_refused_naming_the_field(fields, field):
    with pytest.raises(ValidationError) as refused:
        JobRequest(task="echo", input={"text": "hi"}, **fields)
    assert refused.value.errors()[0]["loc"] == (field,)


def test_a_ttl_past_the_deadline_is_bounded_by_it(jobs_table):
    from stillhouse.auth import Principal
    from stillhouse.jobs.service import JobService

    class Queue:
        def send(self, *args, **kwargs):
            pass

    job = JobService(JobStore(jobs_table), Queue()).submit(
        Principal(tenant_id="acme"), JobRequest(task="echo", input={"text": "hi"}, deadline_s=60, ttl_s=120))
    assert job.start_by == job.deadline_at == after(job.created_at, 60)
