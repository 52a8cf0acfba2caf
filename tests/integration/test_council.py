"""The council workflow: every model answers (Map of callback tasks), optional ranking, a chair
synthesises; a failing member is tolerated; cancel stops it for good."""

import pytest

from stillhouse import aws
from stillhouse.config import get_settings
from stillhouse.container import container
from tests.support.stack import execution_arn, forget_statistics, settled

MODELS = ["echo-a", "echo-b", "echo-c"]
PROMPT = "What makes a good cask?"


@pytest.fixture
def council_endpoints(stack):
    """Three endpoints, one per echo model (a deterministic model family of the GPU worker), each with
    fresh statistics: a breaker a previous test opened would hold its model back."""
    registry = container().registry
    base = stack.standin.api_base()
    forget_statistics("alpha", "beta", "gamma")
    for name, endpoint_id, model in (("alpha", "local", "echo-a"), ("beta", "east", "echo-b"), ("gamma", "west", "echo-c")):
        registry.put({"name": name, "endpoint_id": endpoint_id, "base_url": base, "models": [model]})
    registry.update("local", enabled=False)  # it serves "*": keep it out so each model has one home
    yield
    for name in ("alpha", "beta", "gamma"):
        registry.update(name, enabled=False)
    forget_statistics("alpha", "beta", "gamma")
    registry.update("local", enabled=True)


def submit_council(api, **extra):
    return api.submit("council", {"prompt": PROMPT, "models": MODELS, **extra})


def test_a_council_of_three_gives_a_final_answer_and_every_answer(api, council_endpoints):
    job = api.wait(submit_council(api), timeout=40)
    assert job["status"] == "COMPLETED", job["error"]
    out = job["output"]
    assert [a["model"] for a in out["answers"]] == MODELS
    assert [a["text"] for a in out["answers"]] == [f"{m} says: {PROMPT}" for m in MODELS]
    assert all(a["latency_ms"] is not None for a in out["answers"])
    assert out["failed_models"] == []
    assert out["chair"] == "echo-a" and out["final"].startswith("echo-a says: You chair a council")
    for m in MODELS:  # the chair saw every answer
        assert f"{m} says: {PROMPT}" in out["final"]
    assert "rankings" not in out


def test_a_council_whose_prompt_is_kept_in_s3_asks_every_member_with_the_whole_prompt(api, council_endpoints):
    """A prompt over 2 KB is kept in S3, not in the job's item (outputs.spill): each member still gets it."""
    prompt = "Which cask? " + "oak sherry bourbon " * 200  # ~3.8 KB
    job = api.wait(api.submit("council", {"prompt": prompt, "models": MODELS}), timeout=40)
    assert job["status"] == "COMPLETED", job["error"]
    assert [a["text"] for a in job["output"]["answers"]] == [f"{m} says: {prompt}" for m in MODELS]
    assert job["input"]["prompt"] == prompt
    stored = aws.table(get_settings().jobs_table).get_item(Key={"id": job["id"]})["Item"]
    assert "input" not in stored and stored["input_ref"]


def test_ranking_anonymises_answers_and_the_chair_sees_the_peer_ranking(api, council_endpoints):
    job = api.wait(submit_council(api, rank=True, chair="echo-b"), timeout=60)
    assert job["status"] == "COMPLETED", job["error"]
    out = job["output"]
    assert out["labels"] == {"A": "echo-a", "B": "echo-b", "C": "echo-c"}
    # An echo ranker repeats its prompt, so the only label after its FINAL RANKING: marker is the
    # prompt's own example ("1. Response B"): every ranker ranks echo-b alone.
    assert out["rankings"] == [{"model": m, "ranking": ["echo-b"]} for m in MODELS]
    assert out["aggregate_ranking"] == [{"model": "echo-b", "average_rank": 1, "votes": 3}]
    assert out["chair"] == "echo-b" and out["final"].startswith("echo-b says: You chair a council")
    # The echo chair repeats its prompt: the peer ranking reached it.
    assert "Peer ranking (best first): echo-b\n" in out["final"]


def test_one_failing_model_does_not_sink_the_council(api, council_endpoints, faults):
    faults("west", down=True)  # echo-c's only endpoint
    job = api.wait(submit_council(api), timeout=60)
    assert job["status"] == "COMPLETED", job["error"]
    out = job["output"]
    assert out["failed_models"] == ["echo-c"]
    assert [a["model"] for a in out["answers"]] == ["echo-a", "echo-b"]
    assert "echo-c says" not in out["final"]


def test_more_failures_than_tolerated_fail_the_job_with_the_reasons(api, council_endpoints, faults):
    faults("west", down=True)
    faults("east", down=True)
    job = api.wait(submit_council(api), timeout=60)
    assert job["status"] == "FAILED"
    assert "2 of 3 models failed" in job["error"]


def members_in_flight(job_id, count, timeout=5.0):
    """The job's members once `count` of them have been sent to RunPod (the API never shows them)."""
    return settled(lambda: container().job_store.get(job_id).members or {}, lambda m: len(m) >= count, timeout)


def execution_end(execution_arn, timeout):
    """The execution's status once it is no longer RUNNING (or RUNNING still, at the deadline)."""
    sfn = aws.client("stepfunctions")
    return settled(lambda: sfn.describe_execution(executionArn=execution_arn)["status"],
                   lambda status: status != "RUNNING", timeout, interval=0.1)


def test_cancel_mid_council_cancels_the_members_on_runpod_and_nothing_overwrites_it(
        api, stack, council_endpoints, faults):
    for endpoint in ("local", "east", "west"):
        faults(endpoint, crash_rate=1.0)  # crash_mode "hang": every member stays IN_PROGRESS on RunPod
    job_id = submit_council(api)
    members = members_in_flight(job_id, len(MODELS))
    assert sorted(m.model for m in members.values()) == MODELS
    runpod_ids = [m.runpod_id for m in members.values()]
    assert {stack.standin.job_status(r)["status"] for r in runpod_ids} <= {"IN_QUEUE", "IN_PROGRESS"}
    assert api.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "CANCELLED"
    # The cancel stops every member in flight. A member whose callback timed out just now may have been
    # asked again meanwhile; its retry stops the try read above, so allow that a moment.
    statuses = settled(lambda: [stack.standin.job_status(r)["status"] for r in runpod_ids],
                       lambda seen: set(seen) == {"CANCELLED"}, timeout=3.0)
    assert statuses == ["CANCELLED"] * len(MODELS)
    # moto ends a stopped execution only when the step under way does (here: the callback timeout);
    # whatever that step does on its way out must not touch the cancelled job.
    assert execution_end(execution_arn(job_id), timeout=15) != "RUNNING"
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "CANCELLED" and job["output"] is None


def test_council_input_is_validated_with_the_field_named(api):
    response = api.post("/v1/jobs", {"task": "council", "input": {"prompt": PROMPT, "models": ["echo-a"]}})
    assert response.status_code == 422 and response.json()["error"]["field"] == "input.models"
    response = api.post("/v1/jobs", {"task": "council", "input": {"models": MODELS}})
    assert response.status_code == 422 and response.json()["error"]["field"] == "input.prompt"
    response = api.post("/v1/jobs", {"task": "council", "input": {"prompt": PROMPT, "models": ["x", "x"]}})
    assert response.status_code == 422


def test_task_tokens_and_members_are_never_shown(api, council_endpoints):
    job = api.wait(submit_council(api), timeout=40)
    assert "members" not in job and "task_token" not in job
