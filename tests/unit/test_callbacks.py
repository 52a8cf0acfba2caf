"""RunPod callbacks: verified, recorded once, re-checked when surprising, then pushed to the caller."""
from functools import partial

import pytest

from stillhouse.errors import Conflict, ErrorClass, InvalidRequest, Unauthorized
from stillhouse.jobs.model import JobStatus
from stillhouse.jobs.store import JobStore
from stillhouse.runpod.callback_urls import callback_token, verify_callback_token
from stillhouse.runpod.callbacks import CallbackRecorder, error_class_of
from tests.support.callbacks import SECRET, recorder
from tests.support.fakes import FakeWorkflows
from tests.support.jobs import make_job


@pytest.fixture
def store(jobs_table):
    s = JobStore(jobs_table)
    s.create(make_job("j1"))
    s.transition("j1", JobStatus.IN_PROGRESS, actor="dispatch", endpoint="a", fields={"runpod_id": "rp1"})
    return s


def token(job_id="j1", attempt=1, endpoint="a"):
    return callback_token(SECRET, job_id, attempt, endpoint)


def test_a_completed_callback_records_the_output_and_notifies(store):
    rec, notified, fetched = recorder(store)
    job = rec.record("j1", 1, "a", token(), {"id": "rp1", "status": "COMPLETED", "output": {"text": "hi"}})
    assert job.status is JobStatus.COMPLETED and job.output == {"text": "hi"}
    assert [j.id for j in notified] == ["j1"] and fetched == []


def test_a_duplicate_callback_changes_nothing_and_notifies_once(store):
    rec, notified, _ = recorder(store)
    body = {"id": "rp1", "status": "COMPLETED", "output": {"text": "hi"}}
    rec.record("j1", 1, "a", token(), body)
    assert rec.record("j1", 1, "a", token(), {**body, "output": {"text": "other"}}) is None
    assert store.get("j1").output == {"text": "hi"} and len(notified) == 1


def test_a_bad_token_is_refused_and_nothing_is_written(store):
    rec, notified, _ = recorder(store)
    with pytest.raises(Unauthorized):
        rec.record("j1", 1, "a", "forged", {"id": "rp1", "status": "COMPLETED", "output": 1})
    assert store.get("j1").status is JobStatus.IN_PROGRESS and notified == []


@pytest.mark.parametrize(("body", "field"), [
    ({"status": "COMPLETED", "output": 1}, "body.id"),
    ({"id": "rp1", "status": 7}, "body.status"),
    ({"id": "rp1", "status": "COMPLETED", "delayTime": "soon"}, "body.delayTime"),
])
def test_a_callback_body_that_is_not_a_runpod_job_is_refused_naming_the_field(store, body, field):
    rec, notified, _ = recorder(store)
    with pytest.raises(InvalidRequest) as refused:
        rec.record("j1", 1, "a", token(), body)
    assert refused.value.field == field
    assert store.get("j1").status is JobStatus.IN_PROGRESS and notified == []


def test_a_surprising_callback_is_checked_against_runpod_status(store):
    # The body claims COMPLETED for a RunPod job we did not record; RunPod's own /status says FAILED.
    rec, _, fetched = recorder(store, {"rp-x": {"id": "rp-x", "status": "FAILED", "error": "handler crashed"}})
    job = rec.record("j1", 1, "a", token(), {"id": "rp-x", "status": "COMPLETED", "output": "forged"})
    assert fetched == [("a", "rp-x")]
    assert job.status is JobStatus.FAILED and job.output is None and job.error == "handler crashed"


def test_a_non_terminal_callback_is_ignored(store):
    rec, notified, _ = recorder(store)
    assert rec.record("j1", 1, "a", token(), {"id": "rp1", "status": "IN_PROGRESS"}) is None
    assert store.get("j1").status is JobStatus.IN_PROGRESS


@pytest.mark.parametrize(("status", "error", "expected"), [
    # Our worker's structured reports: classified by their own `retryable`.
    (JobStatus.FAILED, '{"error_type": "OutOfMemory", "retryable": true}', ErrorClass.TRANSIENT),
    (JobStatus.FAILED, '{"error_type": "ValidationError", "retryable": false, "field": "x"}', ErrorClass.TERMINAL),
    (JobStatus.FAILED, {"error_type": "ModelNotServed", "retryable": False}, ErrorClass.TERMINAL),
    # Anything else is a crash: the worker died before it could report (whatever the text says).
    (JobStatus.FAILED, "worker w1 crashed", ErrorClass.WORKER_LOST),
    (JobStatus.FAILED, "invalid input: a text that looks like a handler error", ErrorClass.WORKER_LOST),
    (JobStatus.FAILED, None, ErrorClass.WORKER_LOST),
    (JobStatus.FAILED, {"retryable": False}, ErrorClass.WORKER_LOST),  # no error_type: not our report
    # The SDK's own report of an exception that escaped the handler carries no `retryable`.
    (JobStatus.FAILED, '{"error_type": "RuntimeError", "error_message": "boom", "error_traceback": "..."}',
     ErrorClass.WORKER_LOST),
    (JobStatus.TIMED_OUT, None, ErrorClass.WORKER_LOST),
    (JobStatus.COMPLETED, None, None),
])
def test_failed_runpod_jobs_are_classified(status, error, expected):
    assert error_class_of(status, error) is expected


def start_attempt(store, endpoint, runpod_id):
    """One attempt as dispatch makes it: claimed, then recorded IN_PROGRESS once RunPod accepted it."""
    claimed = store.claim_attempt("j2", store.get("j2").attempts)
    store.transition("j2", JobStatus.IN_PROGRESS, actor="recovery", endpoint=endpoint, attempt=claimed.attempts,
                     fields={"runpod_id": runpod_id})
    return claimed.attempts


def learning_recorder(store, status_answers):
    learned = []
    rec = CallbackRecorder(store=store, verify_token=partial(verify_callback_token, SECRET), fetch_status=lambda ep, rp: status_answers[rp],
                           notify=lambda job: None, workflows=FakeWorkflows(),
                           learn=lambda endpoint, status, error_class, error, body, units: learned.append(
                               (endpoint, status, error_class)))
    return rec, learned


RETRYABLE = '{"error_type": "OutOfMemory", "retryable": true}'


def test_an_older_attempt_that_was_never_recorded_frees_its_endpoint_slot(jobs_table):
    # Attempt 1 was accepted by `a` but its submit died before recording it; attempt 2 runs on `b`.
    store = JobStore(jobs_table)
    store.create(make_job("j2"))
    store.claim_attempt("j2", 0)
    start_attempt(store, "b", "rp2")
    failed = {"id": "rp1", "status": "FAILED", "error": RETRYABLE}
    rec, learned = learning_recorder(store, {"rp1": failed})
    assert rec.record("j2", 1, "a", token("j2", 1, "a"), failed) is None
    assert learned == [("a", JobStatus.FAILED, ErrorClass.TRANSIENT)]
    job = store.get("j2")
    assert job.status is JobStatus.IN_PROGRESS and job.endpoint == "b" and job.runpod_id == "rp2"


def test_an_older_attempt_already_reported_when_it_was_retried_is_not_counted_again(jobs_table):
    store = JobStore(jobs_table)
    store.create(make_job("j2"))
    start_attempt(store, "a", "rp1")
    failed = {"id": "rp1", "status": "FAILED", "error": RETRYABLE}
    rec, learned = learning_recorder(store, {"rp1": failed})
    rec.record("j2", 1, "a", token("j2", 1, "a"), failed)  # attempt 1 fails: reported, job RETRYING
    start_attempt(store, "b", "rp2")
    assert rec.record("j2", 1, "a", token("j2", 1, "a"), failed) is None  # a late duplicate webhook
    assert learned == [("a", JobStatus.FAILED, ErrorClass.TRANSIENT)]


def test_an_older_attempt_that_finishes_the_job_stops_the_newer_one_and_frees_each_slot_once(jobs_table):
    """Attempt 1 was declared lost (its endpoint reported then), attempt 2 runs on `b`; attempt 1's
    result arrives after all: it completes the job, `b`'s RunPod job is stopped, and `a` is not
    reported a second time."""
    store = JobStore(jobs_table)
    store.create(make_job("j1"))
    store.claim_attempt("j1", 0)
    store.transition("j1", JobStatus.IN_PROGRESS, actor="dispatch", endpoint="a", attempt=1, fields={"runpod_id": "rp1"})
    store.transition("j1", JobStatus.RETRYING, actor="recovery", endpoint="a", attempt=1,
                     fields={"error": "lost", "error_class": "worker_lost"})
    store.claim_attempt("j1", 1)
    store.transition("j1", JobStatus.IN_PROGRESS, actor="recovery", endpoint="b", attempt=2, fields={"runpod_id": "rp2"})
    learnt, stopped = [], []
    rec = CallbackRecorder(store=store, verify_token=partial(verify_callback_token, SECRET), fetch_status=lambda e, r: {"id": "rp1", "status": "COMPLETED", "output": {"text": "late"}},
                           notify=lambda job: None, learn=lambda endpoint, *rest: learnt.append(endpoint),
                           stop_runpod_job=lambda endpoint, runpod_id: stopped.append((endpoint, runpod_id)))
    job = rec.record("j1", 1, "a", token(attempt=1), {"id": "rp1", "status": "COMPLETED", "output": {"text": "late"}})
    assert job.status is JobStatus.COMPLETED and job.output == {"text": "late"} and job.endpoint == "a"
    assert stopped == [("b", "rp2")] and learnt == []


def test_the_current_attempts_result_is_learnt_and_stops_nothing(store):
    learnt, stopped = [], []
    rec = CallbackRecorder(store=store, verify_token=partial(verify_callback_token, SECRET), fetch_status=lambda e, r: {}, notify=lambda job: None,
                           learn=lambda endpoint, *rest: learnt.append(endpoint),
                           stop_runpod_job=lambda *a: stopped.append(a))
    rec.record("j1", 1, "a", token(), {"id": "rp1", "status": "COMPLETED", "output": {"text": "hi"}})
    assert learnt == ["a"] and stopped == []


def test_a_callback_naming_another_runpod_job_than_its_attempt_started_is_refused_and_changes_nothing(jobs_table):
    """The token proves the URL is ours; the RunPod id must also be the one this attempt started (else a
    holder of the URL could have another RunPod job's result recorded as this job's)."""
    store = JobStore(jobs_table)
    store.create(make_job("j1"))
    store.transition("j1", JobStatus.IN_PROGRESS, actor="dispatch", endpoint="a", attempt=1,
                     fields={"runpod_id": "rp1", "attempts": 1})
    rec, notified, fetched = recorder(store, {"rp-other": {"id": "rp-other", "status": "COMPLETED", "output": "x"}})
    with pytest.raises(Conflict) as refused:
        rec.record("j1", 1, "a", token(), {"id": "rp-other", "status": "COMPLETED", "output": {"text": "not yours"}})
    assert refused.value.field == "body.id"
    job = store.get("j1")
    assert job.status is JobStatus.IN_PROGRESS and job.output is None and notified == [] and fetched == []
    assert rec.record("j1", 1, "a", token(), {"id": "rp1", "status": "COMPLETED", "output": {"text": "hi"}})
    assert store.get("j1").output == {"text": "hi"}


def test_the_caller_is_notified_before_routing_learns_so_a_failure_there_costs_no_webhook(store):
    notified = []

    def learn(*_):
        raise RuntimeError("endpoint state table throttled")

    rec = CallbackRecorder(store=store, verify_token=partial(verify_callback_token, SECRET),
                           fetch_status=lambda e, r: {}, notify=notified.append, learn=learn)
    with pytest.raises(RuntimeError):
        rec.record("j1", 1, "a", token(), {"id": "rp1", "status": "COMPLETED", "output": {"text": "hi"}})
    assert store.get("j1").status is JobStatus.COMPLETED and [j.id for j in notified] == ["j1"]


def _jobs_calls(store) -> list[str]:
    calls: list[str] = []
    store._table.meta.client.meta.events.register("before-call.dynamodb", lambda model, **kw: calls.append(model.name))
    return calls


def test_the_usual_result_is_one_write_and_no_read(jobs_table):
    store = JobStore(jobs_table)
    store.create(make_job("j1"))
    store.transition("j1", JobStatus.IN_PROGRESS, actor="dispatch", endpoint="a", attempt=1,
                     fields={"runpod_id": "rp1", "attempts": 1})
    rec, notified, _ = recorder(store)
    calls = _jobs_calls(store)
    job = rec.record("j1", 1, "a", token(), {"id": "rp1", "status": "COMPLETED", "output": {"text": "hi"},
                                             "delayTime": 3, "executionTime": 50})
    assert calls == ["UpdateItem"]
    assert job.status is JobStatus.COMPLETED and job.output == {"text": "hi"} and [j.id for j in notified] == ["j1"]
    assert job.events[-1].detail == "runpod rp1 delay=3ms exec=50ms"


def test_an_unusual_result_goes_the_long_way_on_the_job_its_refused_write_returned(store):
    rec, notified, fetched = recorder(store, {"rp-x": {"id": "rp-x", "status": "FAILED", "error": "crashed"}})
    calls = _jobs_calls(store)
    job = rec.record("j1", 1, "a", token(), {"id": "rp-x", "status": "COMPLETED", "output": "forged"})
    assert "GetItem" not in calls and fetched == [("a", "rp-x")]
    assert job.status is JobStatus.FAILED and [j.id for j in notified] == ["j1"]


def test_an_output_that_may_not_fit_beside_a_large_input_is_sized_on_the_job_read_first(jobs_table):
    store = JobStore(jobs_table)
    store.create(make_job("j1").model_copy(update={"input": {"text": "x" * 250_000}}))
    store.transition("j1", JobStatus.IN_PROGRESS, actor="dispatch", endpoint="a", attempt=1,
                     fields={"runpod_id": "rp1", "attempts": 1})
    rec, notified, _ = recorder(store)
    calls = _jobs_calls(store)
    job = rec.record("j1", 1, "a", token(), {"id": "rp1", "status": "COMPLETED", "output": {"text": "y" * 100_000}})
    assert calls[0] == "UpdateItem" and calls.count("UpdateItem") == 2  # refused for room, then sized and written
    assert job.status is JobStatus.COMPLETED and job.output == {"text": "y" * 100_000}
