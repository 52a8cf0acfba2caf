"""Dispatch: one RunPod submission per job, failover across the plan, a terminal state at the end."""
import pytest

from stillhouse.errors import ErrorClass
from stillhouse.jobs.dispatch import DispatchDeferred, runpod_payload
from stillhouse.jobs.model import JobStatus, Priority, Task
from stillhouse.jobs.queue import JobQueue, Queued, read_message
from stillhouse.jobs.status import NOTE_WAITING
from stillhouse.jobs.store import JobStore
from stillhouse.runpod.client import RunPodError, classify_status
from tests.support.fakes import Ep, FakeRouter, FakeRunPod, FakeWorkflows, make_dispatcher
from tests.support.jobs import make_job


@pytest.fixture
def store(jobs_table):
    s = JobStore(jobs_table)
    s.create(make_job("j1", params={"max_new_tokens": 8}))
    return s


def test_a_queued_job_is_submitted_once_and_goes_in_progress(store):
    runpod = FakeRunPod()
    job = make_dispatcher(store, [Ep("a", "ep-a")], runpod).dispatch("j1")
    assert job.status is JobStatus.IN_PROGRESS and job.endpoint == "a" and job.runpod_id == "rp-1"
    assert job.attempts == 1
    (endpoint_id, payload, webhook, policy), = runpod.runs
    assert endpoint_id == "ep-a" and webhook == "http://cb/j1?a=1&e=a" and policy == {"executionTimeout": 30000}
    assert payload == {"max_new_tokens": 8, "text": "hi", "x": 1.5, "task": "echo"}


def test_a_duplicate_delivery_submits_nothing(store):
    runpod = FakeRunPod()
    d = make_dispatcher(store, [Ep("a")], runpod)
    d.dispatch("j1")
    assert d.dispatch("j1") is None
    assert len(runpod.runs) == 1


def test_a_failing_endpoint_fails_over_to_the_next(store):
    runpod = FakeRunPod({"ep-a": RunPodError("boom", error_class=ErrorClass.TRANSIENT, status_code=503)})
    job = make_dispatcher(store, [Ep("a", "ep-a"), Ep("b", "ep-b")], runpod).dispatch("j1")
    assert job.endpoint == "b"
    assert [r[0] for r in runpod.runs] == ["ep-a", "ep-b"]


def test_when_no_endpoint_takes_the_job_it_goes_to_the_recovery_workflow(store):
    runpod = FakeRunPod({"ep-a": RunPodError("busy", error_class=ErrorClass.CAPACITY, status_code=429)})
    workflows = FakeWorkflows()
    job = make_dispatcher(store, [Ep("a", "ep-a")], runpod, workflows=workflows).dispatch("j1")
    assert job.status is JobStatus.RETRYING and job.error_class is ErrorClass.CAPACITY
    assert workflows.recoveries == [("j1", 1)]
    assert store.get("j1").execution_arn == "arn:exec:j1-1"


def test_a_hand_over_still_records_its_reason_when_the_workflows_first_task_got_there_first(store):
    """The execution runs as soon as it is started; its first task may find nothing to place and move
    the job to RETRYING before the dispatcher records why it handed the job over."""
    class EagerWorkflows(FakeWorkflows):
        def start_recovery(self, job_id, attempt):
            arn = super().start_recovery(job_id, attempt)
            store.transition(job_id, NOTE_WAITING, actor="recovery", detail="no endpoint available",
                             fields={"error": "no endpoint available", "execution_arn": arn})
            return arn

    runpod = FakeRunPod({"ep-a": RunPodError("busy", error_class=ErrorClass.CAPACITY, status_code=429)})
    make_dispatcher(store, [Ep("a", "ep-a")], runpod, workflows=EagerWorkflows()).dispatch("j1")
    job = store.get("j1")
    assert job.status is JobStatus.RETRYING and job.error_class is ErrorClass.CAPACITY
    assert job.execution_arn == "arn:exec:j1-1"


def test_without_a_workflow_an_unplaced_job_stays_queued_for_redelivery(store):
    runpod = FakeRunPod({"ep-a": RunPodError("busy", error_class=ErrorClass.CAPACITY, status_code=429)})
    with pytest.raises(DispatchDeferred):
        make_dispatcher(store, [Ep("a", "ep-a")], runpod).dispatch("j1", receive_count=1)
    assert store.get("j1").status is JobStatus.IN_QUEUE


def test_the_last_delivery_ends_the_job_failed_before_the_dlq(store):
    runpod = FakeRunPod({"ep-a": RunPodError("down", error_class=ErrorClass.TRANSIENT, status_code=503)})
    with pytest.raises(DispatchDeferred):
        make_dispatcher(store, [Ep("a", "ep-a")], runpod, max_receive_count=3).dispatch("j1", receive_count=3)
    job = store.get("j1")
    assert job.status is JobStatus.FAILED and "down" in job.error and job.error_class is ErrorClass.TRANSIENT


def test_aws_throttling_on_the_last_delivery_leaves_the_job_waiting_for_the_dlq_redrive(store):
    from botocore.exceptions import ClientError

    class ThrottledStore:
        """The job store as DynamoDB throttles it: every write refused."""

        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        def claim_attempt(self, *args, **kwargs):
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "UpdateItem")

    dispatcher = make_dispatcher(ThrottledStore(store), [Ep("a")], FakeRunPod(), max_receive_count=3)
    with pytest.raises(ClientError):
        dispatcher.dispatch("j1", receive_count=3)
    assert store.get("j1").status is JobStatus.IN_QUEUE  # not the job's fault: the sweeper sends it back


def test_a_terminal_refusal_fails_the_job_at_once(store):
    runpod = FakeRunPod({"ep-a": RunPodError("bad input", error_class=ErrorClass.TERMINAL, status_code=400)})
    make_dispatcher(store, [Ep("a", "ep-a"), Ep("b", "ep-b")], runpod).dispatch("j1")
    job = store.get("j1")
    assert job.status is JobStatus.FAILED and job.error_class is ErrorClass.TERMINAL
    assert len(runpod.runs) == 1  # no failover for the caller's own mistake


def test_a_job_cancelled_while_queued_is_not_submitted(store):
    store.transition("j1", JobStatus.CANCELLED, actor="api")
    runpod = FakeRunPod()
    assert make_dispatcher(store, [Ep("a")], runpod).dispatch("j1") is None
    assert runpod.runs == []


def test_payload_puts_input_over_params_and_names_the_task(store):
    job = store.get("j1").model_copy(update={"params": {"text": "param"}, "model": "m"})
    assert runpod_payload(job) == {"text": "hi", "x": 1.5, "task": "echo", "model": "m"}


def test_outcomes_reach_the_router_for_learning(store):
    runpod = FakeRunPod({"ep-a": RunPodError("busy", error_class=ErrorClass.CAPACITY, status_code=429)})
    router = FakeRouter([Ep("a", "ep-a"), Ep("b", "ep-b")])
    make_dispatcher(store, None, runpod, router=router).dispatch("j1")
    assert router.outcomes == [("refused", "a", ErrorClass.CAPACITY), ("submitted", "b")]


def test_an_endpoint_the_breaker_refuses_is_skipped(store):
    runpod = FakeRunPod()
    router = FakeRouter([Ep("a", "ep-a"), Ep("b", "ep-b")], closed={"a"})
    job = make_dispatcher(store, None, runpod, router=router).dispatch("j1")
    assert job.endpoint == "b" and [r[0] for r in runpod.runs] == ["ep-b"]


def test_workflow_mode_always_hands_every_job_to_the_workflow(store):
    runpod, workflows = FakeRunPod(), FakeWorkflows()
    make_dispatcher(store, [Ep("a")], runpod, workflows=workflows, mode="always").dispatch("j1")
    assert workflows.recoveries == [("j1", 0)] and runpod.runs == []


def test_council_jobs_start_the_council_workflow(jobs_table):
    store = JobStore(jobs_table)
    store.create(make_job("c1").model_copy(update={"task": Task.COUNCIL, "input": {"prompt": "p", "models": ["a", "b"]}}))
    workflows = FakeWorkflows()
    job = make_dispatcher(store, [Ep("a")], FakeRunPod(), workflows=workflows).dispatch("c1")
    assert workflows.councils == [("c1", {"prompt": "p", "models": ["a", "b"]})]
    assert job.status is JobStatus.IN_PROGRESS and job.execution_arn == "arn:exec:c1-council"


def test_a_streaming_job_is_planned_over_streaming_endpoints(jobs_table):
    store = JobStore(jobs_table)
    store.create(make_job("s1").model_copy(update={"input": {"prompt": "hi", "stream": True}}))
    router = FakeRouter([Ep("a")])
    make_dispatcher(store, None, FakeRunPod(), router=router).dispatch("s1")
    assert router.streaming is True


def lost_attempt(store, endpoint):
    """j1 after its first attempt was lost by `endpoint`'s worker, as the recovery workflow records it."""
    store.claim_attempt("j1", 0)
    store.transition("j1", JobStatus.IN_PROGRESS, actor="recovery", endpoint=endpoint, attempt=1,
                     fields={"runpod_id": "rp-lost"})
    store.transition("j1", JobStatus.RETRYING, actor="recovery", endpoint=endpoint, attempt=1,
                     fields={"error": "TIMED_OUT", "error_class": ErrorClass.WORKER_LOST.value})
    return store.claim_attempt("j1", 1)


def test_after_a_worker_lost_the_job_the_next_attempt_goes_elsewhere(store):
    runpod = FakeRunPod()
    retry = lost_attempt(store, "a")
    job = make_dispatcher(store, [Ep("a", "ep-a"), Ep("b", "ep-b")], runpod).submit(retry, 2, actor="recovery")
    assert job.endpoint == "b" and [r[0] for r in runpod.runs] == ["ep-b"]


def test_the_endpoint_that_lost_the_job_is_still_used_when_no_other_takes_it(store):
    runpod = FakeRunPod({"ep-b": RunPodError("busy", error_class=ErrorClass.CAPACITY, status_code=429)})
    retry = lost_attempt(store, "a")
    job = make_dispatcher(store, [Ep("a", "ep-a"), Ep("b", "ep-b")], runpod).submit(retry, 2, actor="recovery")
    assert job.endpoint == "a" and [r[0] for r in runpod.runs] == ["ep-b", "ep-a"]


def test_an_endpoint_refusing_our_api_key_fails_over_and_counts_against_its_breaker(store):
    rejected = RunPodError("HTTP 401", error_class=classify_status(401), status_code=401)
    router = FakeRouter([Ep("a", "ep-a"), Ep("b", "ep-b")])
    job = make_dispatcher(store, None, FakeRunPod({"ep-a": rejected}), router=router).dispatch("j1")
    assert job.status is JobStatus.IN_PROGRESS and job.endpoint == "b"
    assert router.outcomes == [("refused", "a", ErrorClass.TRANSIENT), ("submitted", "b")]


# --- the queue message carries what dispatch needs --------------------------------------------------


class ReadCountingStore(JobStore):
    def __init__(self, table):
        super().__init__(table)
        self.reads = 0

    def get(self, job_id, tenant_id=None):
        self.reads += 1
        return super().get(job_id, tenant_id)


@pytest.fixture
def counting(jobs_table):
    s = ReadCountingStore(jobs_table)
    s.create(make_job("j1", params={"max_new_tokens": 8}))
    return s


def test_a_message_with_the_jobs_attempts_is_dispatched_without_reading_the_job(counting):
    runpod = FakeRunPod()
    job = make_dispatcher(counting, [Ep("a", "ep-a")], runpod).dispatch("j1", 1, Queued("j1", 0, "echo"))
    assert job.status is JobStatus.IN_PROGRESS and job.attempts == 1 and len(runpod.runs) == 1
    assert counting.reads == 0


def test_a_job_cancelled_after_its_message_was_sent_is_still_not_submitted(counting):
    counting.transition("j1", JobStatus.CANCELLED, actor="api")
    runpod = FakeRunPod()
    assert make_dispatcher(counting, [Ep("a")], runpod).dispatch("j1", 1, Queued("j1", 0, "echo")) is None
    assert runpod.runs == [] and counting.get("j1").attempts == 0


def test_a_duplicate_message_submits_nothing(counting):
    runpod = FakeRunPod()
    d = make_dispatcher(counting, [Ep("a")], runpod)
    d.dispatch("j1", 1, Queued("j1", 0, "echo"))
    assert d.dispatch("j1", 1, Queued("j1", 0, "echo")) is None  # the claim is refused; the read says why
    assert len(runpod.runs) == 1 and counting.reads == 1


def test_a_stale_message_never_claims_a_job_a_workflow_owns(counting):
    counting.transition("j1", NOTE_WAITING, actor="recovery", detail="waiting")  # RETRYING: the workflow's
    runpod = FakeRunPod()
    assert make_dispatcher(counting, [Ep("a")], runpod).dispatch("j1", 1, Queued("j1", 0, "echo")) is None
    assert runpod.runs == [] and counting.get("j1").attempts == 0


def test_a_council_message_still_goes_to_the_council_workflow(jobs_table):
    s = JobStore(jobs_table)
    s.create(make_job("c1").model_copy(update={"task": Task.COUNCIL, "input": {"prompt": "p", "models": ["a", "b"]}}))
    workflows = FakeWorkflows()
    job = make_dispatcher(s, [Ep("a")], FakeRunPod(), workflows=workflows).dispatch("c1", 1, Queued("c1", 0, "council"))
    assert job.status is JobStatus.IN_PROGRESS and workflows.councils and job.attempts == 0


def test_messages_carry_the_attempts_and_task_and_old_ones_still_read():
    sent = []

    class Sqs:
        def send_message(self, **kw):
            sent.append(kw)

    JobQueue(Sqs(), {Priority.NORMAL: "q"}).send("j1", Priority.NORMAL, attempts=2, task="echo")
    assert read_message(sent[0]["MessageBody"]) == Queued("j1", 2, "echo")
    assert read_message('{"job_id": "j1"}') == Queued("j1", None, None)
    with pytest.raises(ValueError):
        read_message('{"job_id": ""}')
