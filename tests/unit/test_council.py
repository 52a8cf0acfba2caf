"""Council stages: anonymised ranking, its parsing, aggregation and the chair's prompt."""
import pytest

from stillhouse.errors import JobFinished, RetryLater, TerminalError
from stillhouse.jobs.model import Job, JobStatus, Task
from stillhouse.runpod.callbacks import CallbackRecorder
from stillhouse.workflows import council_prompts as council
from stillhouse.workflows.council import CouncilTasks
from stillhouse.workflows.events import CouncilState, MemberAnswer
from tests.support.fakes import FakeWorkflows


def members(answers):
    """Answers as the state machine hands them to a task (the Map's results, typed)."""
    return [MemberAnswer.model_validate(a) for a in answers]


ANSWERS = [{"model": "m1", "text": "one"}, {"model": "m2", "text": "two"}, {"model": "m3", "text": "three"}]


def test_labels_are_letters_in_answer_order():
    assert council.labels_for(["m1", "m2", "m3"]) == {"A": "m1", "B": "m2", "C": "m3"}


def test_ranking_prompt_hides_model_names():
    labels = council.labels_for(["m1", "m2", "m3"])
    text = council.ranking_messages("q?", ANSWERS, labels)[0]["content"]
    assert "Response A:\none" in text and "Response C:\nthree" in text
    assert "m1" not in text and "m2" not in text
    assert council.RANKING_MARKER in text


def test_a_ranking_is_read_after_the_last_marker():
    labels = {"A": "m1", "B": "m2", "C": "m3"}
    text = "Response A is fine. FINAL RANKING:\n1. Response C\n2. Response A\n3. Response B\nResponse A again"
    assert council.parse_ranking(text, labels) == ["m3", "m1", "m2"]
    assert council.parse_ranking("no marker, Response B then Response Z", labels) == ["m2"]


def test_rankings_aggregate_by_average_position():
    rows = council.aggregate_rankings([["m1", "m2"], ["m2", "m1"], ["m2"]])
    assert [r["model"] for r in rows] == ["m2", "m1"]
    assert rows[0] == {"model": "m2", "average_rank": pytest.approx(4 / 3), "votes": 3}


def test_the_chair_sees_every_answer_and_the_peer_ranking():
    text = council.synthesis_messages("q?", ANSWERS, [{"model": "m2"}, {"model": "m1"}])[0]["content"]
    assert all(f"Answer from {a['model']}:\n{a['text']}" in text for a in ANSWERS)
    assert "Peer ranking (best first): m2, m1" in text


class Store:
    """One council job, as the JobStore keeps it (annotate replaces whole fields, as DynamoDB SET does)."""

    def __init__(self, spec):
        self.job = Job(id="j", tenant_id="t", task=Task.COUNCIL, status=JobStatus.IN_PROGRESS, input=spec,
                       created_at="now", updated_at="now", members={})

    def get(self, job_id):
        return self.job

    def annotate(self, job_id, fields):
        self.job = self.job.model_copy(update=fields)

    def transition(self, job_id, status, **kw):
        self.job = self.job.model_copy(update={"status": status, **kw["fields"]})
        return self.job


class OneEndpoint:
    """Router and RunPod client in one: every model has one endpoint, which accepts every /run."""

    name, endpoint_id, base_url, secret_ref = "e1", "ep-1", "http://runpod", None

    def __init__(self):
        self.sent, self.cancelled, self.released_names = [], [], []

    def plan(self, model, streaming=False):
        return [self]

    def allow(self, name, plan=None):
        return True

    def submitted(self, name):
        pass

    def stop(self, name, runpod_id):
        self.released_names.append(name)
        self.cancelled.append(runpod_id)

    def run(self, base_url, endpoint_id, payload, webhook, policy):
        self.sent.append(payload)
        return {"id": f"rp-{len(self.sent)}"}


class Members:
    """MemberStore's rules on the one job: put refuses once the job has ended; finish takes a try once."""

    def __init__(self, store):
        self.store = store

    def _set(self, key, member):
        self.store.job = self.store.job.model_copy(update={"members": {**self.store.job.members, key: member}})

    def put(self, job_id, key, member):
        if self.store.job.status.terminal:
            return False
        self._set(key, member)
        return True

    def finish(self, job_id, key):
        member = self.store.job.members.get(key)
        if member is None or member.done:
            return False
        self._set(key, member.model_copy(update={"done": True}))
        return True


def council_job(**spec):
    store, endpoint = Store({"prompt": "q?", "models": ["m1", "m2", "m3"], **spec}), OneEndpoint()
    tasks = CouncilTasks(store=store, members=Members(store), router=endpoint, client_for=lambda e: endpoint,
                         callback_url=lambda *a: "http://cb", policy={}, notify=lambda job: None,
                         stop_runpod_job=endpoint.stop)
    return tasks, store, endpoint


def quorum(answers, tolerated):
    tasks, store, _ = council_job()
    return tasks.quorum("j", members(answers), tolerated), {"council": store.job.council}


def test_a_quorum_keeps_answers_and_names_failed_models():
    result, kept = quorum([*ANSWERS[:2], {"model": "m3", "error": "TransientError"}], 50)
    assert result == {"answered": ["m1", "m2"], "failed_models": ["m3"]}
    assert kept["council"]["labels"] == {"A": "m1", "B": "m2"}


def test_more_failures_than_tolerated_is_terminal():
    with pytest.raises(TerminalError, match="2 of 3 models failed"):
        quorum([ANSWERS[0], {"model": "m2", "error": "x"}, {"model": "m3", "error": "y"}], 50)
    with pytest.raises(TerminalError):
        quorum([{"model": "m1", "error": "x"}, {"model": "m2", "error": "y"}], 100)  # nobody answered


def ranked(model, *labels):
    return {"model": model, "text": "Thoughts.\n" + council.RANKING_MARKER + "\n" + "\n".join(
        f"{i}. Response {label}" for i, label in enumerate(labels, start=1))}


def ask_the_chair(tasks, endpoint):
    tasks.handle({"action": "council_member", "job_id": "j", "stage": "synthesis", "index": 0, "model": "m1",
                  "task_token": "t"})
    return endpoint.sent[-1]["messages"][-1]["content"]


def test_the_chair_is_asked_with_the_peer_ranking_when_the_council_ranks():
    tasks, _, endpoint = council_job(rank=True)
    tasks.handle({"action": "council_quorum", "job_id": "j", "answers": ANSWERS, "tolerated_failure_percentage": 50})
    tasks.handle({"action": "council_tally", "job_id": "j", "rankings": [
        ranked("m1", "B", "C", "A"), ranked("m2", "B", "A", "C"), {"model": "m3", "error": "TransientError"}]})
    prompt = ask_the_chair(tasks, endpoint)
    assert "Peer ranking (best first): m2, m1, m3" in prompt  # m1 and m3 tie on 2.5; ties go by name
    assert all(f"Answer from {a['model']}:\n{a['text']}" in prompt for a in ANSWERS)


def test_without_ranking_the_chair_sees_only_the_answers():
    tasks, _, endpoint = council_job()
    tasks.handle({"action": "council_quorum", "job_id": "j", "answers": ANSWERS, "tolerated_failure_percentage": 50})
    prompt = ask_the_chair(tasks, endpoint)
    assert "Answer from m3:\nthree" in prompt
    assert "Peer ranking" not in prompt


def test_the_result_carries_the_rankings_the_chair_was_given():
    tasks, store, endpoint = council_job(rank=True)
    tasks.quorum("j", members(ANSWERS), 50)
    tasks.tally("j", members([ranked("m1", "C", "A"), ranked("m3", "C", "B", "A"), {"model": "m2", "error": "x"}]))
    prompt = ask_the_chair(tasks, endpoint)
    tasks.record(CouncilState(job_id="j", final=MemberAnswer(model="m1", text="final")))
    out = store.job.output
    assert out["rankings"] == [{"model": "m1", "ranking": ["m3", "m1"]}, {"model": "m3", "ranking": ["m3", "m2", "m1"]}]
    assert out["aggregate_ranking"] == council.aggregate_rankings([["m3", "m1"], ["m3", "m2", "m1"]])
    assert "Peer ranking (best first): " + ", ".join(r["model"] for r in out["aggregate_ranking"]) in prompt
    assert out["labels"] == {"A": "m1", "B": "m2", "C": "m3"}


def test_an_unranked_result_has_no_ranking_fields():
    tasks, store, _ = council_job()
    tasks.quorum("j", members(ANSWERS), 50)
    tasks.record(CouncilState(job_id="j", final=MemberAnswer(model="m1", text="final")))
    assert store.job.output["final"] == "final"
    assert not {"rankings", "aggregate_ranking", "labels"} & store.job.output.keys()


def test_a_member_submitted_while_the_job_is_cancelled_is_cancelled_on_runpod():
    tasks, store, endpoint = council_job()
    run = endpoint.run

    def cancelled_meanwhile(*args, **kw):
        accepted = run(*args, **kw)
        store.job = store.job.model_copy(update={"status": JobStatus.CANCELLED})  # the caller's cancel wins
        return accepted

    endpoint.run = cancelled_meanwhile
    with pytest.raises(JobFinished):
        tasks.member("j", "answer", 0, "m1", "token")
    assert endpoint.cancelled == ["rp-1"] and endpoint.released_names == ["e1"]


def test_a_member_retried_after_its_callback_timed_out_cancels_the_earlier_try_once():
    tasks, store, endpoint = council_job()
    tasks.member("j", "answer", 0, "m1", "token-1")
    tasks.member("j", "answer", 0, "m1", "token-2")  # the Ask timed out; the workflow asks again
    assert endpoint.cancelled == ["rp-1"] and endpoint.released_names == ["e1"]
    assert store.job.members["answer-0"].runpod_id == "rp-2"
    assert store.job.members["answer-0"].task_token == "token-2"
    tasks.member("j", "answer", 0, "m1", "token-3")
    assert endpoint.cancelled == ["rp-1", "rp-2"]  # each earlier try once


def test_a_retried_member_whose_earlier_result_was_taken_cancels_nothing():
    tasks, store, endpoint = council_job()
    tasks.member("j", "answer", 0, "m1", "token-1")
    assert tasks.members.finish("j", "answer-0")  # its webhook came (and freed the slot) just too late
    tasks.member("j", "answer", 0, "m1", "token-2")
    assert endpoint.cancelled == [] and endpoint.released_names == []
    assert store.job.members["answer-0"].runpod_id == "rp-2"


def test_a_members_result_that_comes_before_the_member_is_recorded_is_asked_for_again_not_dropped():
    """RunPod can finish a member and post its webhook before the task that asked it has recorded it (on a
    busy machine, the echo job of the overhead benchmark's council did, issue 23 item 6). Dropping that
    result left the council waiting out its callback timeout (15 min), and its caller got no webhook.
    The callback asks to be sent again (RetryLater: 409 with Retry-After, which RunPod retries), and the
    copy that comes after the record resumes the task."""
    tasks, store, endpoint = council_job()
    workflows = FakeWorkflows()
    callbacks = CallbackRecorder(store=store, verify_token=lambda *a: True, fetch_status=lambda *a: {},
                                 notify=lambda job: None, workflows=workflows, members=tasks.members)
    early, run = [], endpoint.run

    def answered_at_once(*args, **kw):
        accepted = run(*args, **kw)
        result = {"id": accepted["id"], "status": "COMPLETED", "output": {"text": "early"}}
        try:
            early.append(callbacks.record_member("j", "answer-0", "e1", "token", result))
        except RetryLater as asked_again:
            early.append(asked_again)
        return accepted

    endpoint.run = answered_at_once
    tasks.member("j", "answer", 0, "m1", "task-token-1")
    assert isinstance(early[0], RetryLater) and early[0].retry_after_s >= 1
    assert workflows.task_results == []  # nothing resumed yet, and nothing taken
    assert not store.job.members["answer-0"].done
    # RunPod's retry of the same webhook, after the member's record: it resumes the task, once.
    again = {"id": "rp-1", "status": "COMPLETED", "output": {"text": "early"}}
    assert callbacks.record_member("j", "answer-0", "e1", "token", again) is True
    assert [(kind, token, out["text"]) for kind, token, out in workflows.task_results] == [
        ("succeed", "task-token-1", "early")]
    assert callbacks.record_member("j", "answer-0", "e1", "token", again) is False  # a duplicate


def test_a_members_result_for_a_job_that_has_ended_is_dropped_not_asked_for_again():
    tasks, store, _ = council_job()
    store.job = store.job.model_copy(update={"status": JobStatus.CANCELLED})
    callbacks = CallbackRecorder(store=store, verify_token=lambda *a: True, fetch_status=lambda *a: {},
                                 notify=lambda job: None, workflows=FakeWorkflows(), members=tasks.members)
    assert callbacks.record_member("j", "answer-0", "e1", "token", {"id": "rp-9", "status": "COMPLETED"}) is False


def test_a_council_past_its_deadline_ends_timed_out_and_asks_no_more_models():
    tasks, store, endpoint = council_job()
    store.job = store.job.model_copy(update={"deadline_at": "2020-01-01T00:00:00.000Z"})
    with pytest.raises(JobFinished):
        tasks.member("j", "synthesis", 0, "m1", "token")
    assert store.job.status is JobStatus.TIMED_OUT and "synthesis" in store.job.error
    assert endpoint.sent == []
