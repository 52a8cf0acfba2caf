"""The recovery workflow's status check: a lost attempt is retried, and routing hears of it exactly once."""
from functools import partial

import pytest

from stillhouse import errors
from stillhouse.errors import ErrorClass
from stillhouse.jobs.model import JobStatus
from stillhouse.jobs.store import JobStore
from stillhouse.runpod.callback_urls import callback_token, verify_callback_token
from stillhouse.runpod.callbacks import CallbackRecorder
from stillhouse.runpod.client import RunPodError
from stillhouse.workflows.recovery import RecoveryTasks
from tests.support.callbacks import SECRET
from tests.support.fakes import Ep, FakeRouter, FakeRunPod, FakeWorkflows, make_dispatcher
from tests.support.jobs import make_job

RETRYABLE = '{"error_type": "OutOfMemory", "retryable": true}'


class RunPodStatus:
    """RunPod's /status as the check sees it: a body per RunPod job id, or an error."""

    def __init__(self, answers):
        self.answers = answers

    def __call__(self, endpoint, runpod_id):
        answer = self.answers[runpod_id]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def store(jobs_table):
    s = JobStore(jobs_table)
    s.create(make_job("j1"))
    s.claim_attempt("j1", 0)
    s.transition("j1", JobStatus.IN_PROGRESS, actor="recovery", endpoint="a", attempt=1,
                 fields={"runpod_id": "rp1", "task_token": "tt1"})
    return s


def recovery(store, answers):
    learned = []
    fetch = RunPodStatus(answers)
    callbacks = CallbackRecorder(store=store, verify_token=partial(verify_callback_token, SECRET), fetch_status=fetch, notify=lambda job: None,
                                 workflows=FakeWorkflows(),
                                 learn=lambda endpoint, status, error_class, error, body, units: learned.append(
                                     (endpoint, status, error_class)))
    # check_status never submits, so it needs no dispatcher.
    tasks = RecoveryTasks(store=store, dispatcher=None, callbacks=callbacks, fetch_status=fetch,
                          notify=lambda job: None, max_attempts=3)
    return tasks, learned


def test_a_job_runpod_no_longer_knows_is_lost_and_reported_once(store):
    vanished = RunPodError("HTTP 404", error_class=ErrorClass.WORKER_LOST, status_code=404)
    tasks, learned = recovery(store, {"rp1": vanished})
    with pytest.raises(errors.WorkerLostError):
        tasks.check_status("j1")
    with pytest.raises(errors.WorkerLostError):
        tasks.check_status("j1")  # the same check delivered twice
    assert learned == [("a", JobStatus.FAILED, ErrorClass.WORKER_LOST)]
    job = store.get("j1")
    assert job.status is JobStatus.RETRYING and job.error_class is ErrorClass.WORKER_LOST and job.endpoint == "a"


@pytest.mark.parametrize(("body", "error_class"), [
    ({"id": "rp1", "status": "TIMED_OUT", "executionTime": 20000}, ErrorClass.WORKER_LOST),
    ({"id": "rp1", "status": "FAILED", "error": RETRYABLE}, ErrorClass.TRANSIENT),
])
def test_an_attempt_that_ended_retryably_is_reported_once_even_when_its_webhook_follows(store, body, error_class):
    tasks, learned = recovery(store, {"rp1": body})
    with pytest.raises(errors.WorkerLostError):
        tasks.check_status("j1")
    # RunPod's webhook for the same attempt comes in after the check moved the job on.
    assert tasks.callbacks.record("j1", 1, "a", callback_token(SECRET, "j1", 1, "a"), body) is None
    assert learned == [("a", JobStatus.FAILED, error_class)]
    assert store.get("j1").status is JobStatus.RETRYING



def test_a_webhook_landing_while_the_check_asks_runpod_is_reported_instead_of_the_check(store):
    body = {"id": "rp1", "status": "FAILED", "error": RETRYABLE}
    tasks, learned = recovery(store, {"rp1": body})
    ask_runpod = tasks.fetch_status

    def webhook_lands_first(endpoint, runpod_id):
        tasks.callbacks.record("j1", 1, "a", callback_token(SECRET, "j1", 1, "a"), body)
        return ask_runpod(endpoint, runpod_id)

    tasks.fetch_status = webhook_lands_first
    with pytest.raises(errors.WorkerLostError):
        tasks.check_status("j1")
    assert learned == [("a", JobStatus.FAILED, ErrorClass.TRANSIENT)]


class NothingAvailable:
    """A dispatcher whose router has no endpoint to offer (all open, full, or none serves the model)."""

    def plan(self, job):
        return []

    def time_out_if_overdue(self, job, attempt, *, actor):
        return False  # within its deadline

    def submit(self, *args, **kwargs):
        raise AssertionError("nothing may be submitted while no endpoint is available")


def test_with_no_endpoint_the_submit_task_waits_without_spending_an_attempt_and_records_its_execution(jobs_table):
    store = JobStore(jobs_table)
    store.create(make_job("j2"))  # still IN_QUEUE: the dispatcher that started us has not written yet
    tasks = RecoveryTasks(store=store, dispatcher=NothingAvailable(), callbacks=None, fetch_status=None,
                          notify=lambda job: None, max_attempts=3)
    with pytest.raises(errors.NoEndpointAvailable):
        tasks.handle({"action": "submit", "job_id": "j2", "task_token": "tt", "execution_arn": "arn:exec:j2-1"})
    job = store.get("j2")
    assert job.status is JobStatus.RETRYING and job.attempts == 0
    assert job.execution_arn == "arn:exec:j2-1" and "no endpoint available" in job.error


def test_a_submit_task_reads_the_endpoints_once_to_decide_and_to_place(jobs_table):
    class CountingRouter(FakeRouter):
        plans = 0

        def plan(self, model, *, streaming=False):
            self.plans += 1  # each plan is a read of every endpoint's state
            return super().plan(model, streaming=streaming)

    store = JobStore(jobs_table)
    store.create(make_job("j3"))
    store.transition("j3", JobStatus.RETRYING, actor="dispatch", fields={"execution_arn": "arn:exec:j3-0"})
    router = CountingRouter([Ep("a")])
    tasks = RecoveryTasks(store=store, dispatcher=make_dispatcher(store, None, FakeRunPod(), router=router),
                          callbacks=None, fetch_status=None, notify=lambda job: None, max_attempts=3)
    placed = tasks.handle({"action": "submit", "job_id": "j3", "task_token": "tt", "execution_arn": "arn:exec:j3-0"})
    assert placed["endpoint"] == "a" and placed["attempt"] == 1
    assert router.plans == 1


@pytest.mark.parametrize(("event", "field"), [
    ({"action": "submit", "job_id": "j1"}, "submit.task_token"),
    ({"action": "council_member", "job_id": "j1", "stage": "vote", "index": 0, "model": "m", "task_token": "t"},
     "council_member.stage"),
    ({"action": "launch"}, "action"),
])
def test_a_malformed_task_event_fails_terminally_naming_the_field(event, field):
    tasks = RecoveryTasks(store=None, dispatcher=None, callbacks=None, fetch_status=None,
                          notify=lambda job: None, max_attempts=3)
    with pytest.raises(errors.TerminalError) as raised:
        tasks.handle(event)
    assert raised.value.field == field


def test_aws_throttling_a_task_is_raised_as_the_error_every_task_waits_out(store):
    from botocore.exceptions import ClientError

    class Throttled:
        def get(self, job_id):
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetItem")

    tasks, _ = recovery(store, {})
    tasks.store = Throttled()
    with pytest.raises(errors.AwsUnavailable):
        tasks.handle({"action": "check_status", "job_id": "j1"})
    assert "AwsUnavailable" in errors.WORKFLOW_ERROR_NAMES  # a name the state machines may match
