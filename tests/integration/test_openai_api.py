"""The OpenAI-compatible front door, driven by the official `openai` SDK against the embedded stack.

The session stack's `local` endpoint runs the real worker; its diagnostic `echo-*` models answer
"<model> says: <last message>" with no weights, so answers are exact. Real models (SmolLM2, MiniLM) and
a streaming endpoint are in test_generate_e2e.py."""
from __future__ import annotations

import dataclasses
import uuid

import openai
import pytest
import requests

from stillhouse.config import OpenAISettings
from stillhouse.container import container
from stillhouse.http import openai_api
from stillhouse.tenants.store import LimitsPatch

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def client(stack):
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.dev_api_key, max_retries=0, timeout=60)


def test_models_lists_the_fleet_s_named_models_and_councils(client):
    ids = {m.id for m in client.models.list()}
    assert {"SmolLM2-135M-Instruct", "all-MiniLM-L6-v2", "council"} <= ids
    assert "*" not in ids
    assert client.models.retrieve("SmolLM2-135M-Instruct").id == "SmolLM2-135M-Instruct"


def test_a_model_no_endpoint_serves_is_not_found(client, stack):
    container().registry.update("local", models=["echo-a"])
    try:
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="gpt-4o", messages=HELLO)
        assert caught.value.code == "model_not_found" and caught.value.param == "model"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("gpt-4o")
    finally:
        container().registry.update("local", models=["SmolLM2-135M-Instruct", "all-MiniLM-L6-v2", "*"])


def test_a_chat_completion_is_a_job_with_its_answer_and_usage(client, api):
    raw = client.chat.completions.with_raw_response.create(model="echo-a", messages=HELLO)
    completion = raw.parse()
    job_id = raw.headers["x-stillhouse-job-id"]
    assert completion.choices[0].message.content == "echo-a says: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.id == f"chatcmpl-{job_id}" and completion.model == "echo-a"
    assert completion.usage.prompt_tokens == 2 and completion.usage.completion_tokens == 4
    assert completion.usage.total_tokens == 6
    job = api.get(f"/v1/jobs/{job_id}").json()  # the same record and timeline as a native job
    assert job["status"] == "COMPLETED" and job["task"] == "generate" and job["model"] == "echo-a"
    assert job["input"]["messages"] == HELLO
    assert [e["status"] for e in job["events"]][:2] == ["IN_QUEUE", "IN_PROGRESS"]


def test_text_parts_developer_messages_and_max_tokens(client):
    completion = client.chat.completions.create(
        model="echo-b", max_completion_tokens=3,
        messages=[{"role": "developer", "content": "be brief"},
                  {"role": "user", "content": [{"type": "text", "text": "one two "}, {"type": "text", "text": "three"}]}])
    assert completion.choices[0].message.content == "echo-b says: one"
    assert completion.choices[0].finish_reason == "length"


def test_a_completion_sends_the_prompt_as_it_is(client):
    completion = client.completions.create(model="echo-a", prompt="say hi", stop=["hi"])
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "echo-a says: say "


def test_streamed_text_equals_the_answer_and_ends_with_usage_and_done(client, stack):
    answer = client.chat.completions.create(model="echo-a", messages=HELLO).choices[0].message.content
    chunks = list(client.chat.completions.create(model="echo-a", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 6
    body = requests.post(f"{stack.url}/v1/chat/completions", json={"model": "echo-a", "messages": HELLO, "stream": True},
                         headers={"Authorization": f"Bearer {stack.dev_api_key}"}, timeout=60)
    assert body.headers["content-type"].startswith("text/event-stream")
    assert body.text.rstrip().endswith("data: [DONE]")


def test_a_council_model_answers_with_the_chair_and_keeps_the_members(client):
    completion = client.chat.completions.create(model="council:echo-a,echo-b,echo-c",
                                                messages=[{"role": "user", "content": "name a metal"}])
    assert completion.choices[0].message.content.startswith("echo-a says:")  # the first member chairs
    council = completion.model_extra["stillhouse"]["council"]
    assert {a["model"] for a in council["answers"]} == {"echo-a", "echo-b", "echo-c"}
    assert all(a["text"].endswith("says: name a metal") for a in council["answers"])


def test_embeddings_refuse_what_they_cannot_do_by_name(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="all-MiniLM-L6-v2", input="x", dimensions=8)
    assert caught.value.param == "dimensions"


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"temperature": 3}, "temperature"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"max_tokens": 10**6}, "max_tokens"),
])
def test_bad_parameters_are_400_naming_the_parameter(client, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="echo-a", messages=HELLO, **extra)
    assert caught.value.param == param, caught.value.body
    assert caught.value.type == "invalid_request_error"


def test_an_unknown_parameter_is_refused_by_name(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="echo-a", messages=HELLO, extra_body={"frobnicate": 1})
    assert caught.value.param == "frobnicate"


def test_a_bad_key_is_an_authentication_error(stack):
    bad = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="echo-a", messages=HELLO)


def test_a_tenant_over_its_rate_gets_a_rate_limit_error_with_its_retry_delay(stack):
    tenant = container().tenants.create("openai-slow", LimitsPatch(requests_per_minute=1))
    slow = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.create_api_key(tenant.tenant_id), max_retries=0)
    slow.chat.completions.create(model="echo-a", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as caught:
        slow.chat.completions.create(model="echo-a", messages=HELLO)
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert caught.value.code == "rate_limit_exceeded"


def test_an_idempotency_key_gets_the_same_job_and_a_changed_body_conflicts(client):
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = client.chat.completions.with_raw_response.create(model="echo-a", messages=HELLO, extra_headers=key)
    again = client.chat.completions.with_raw_response.create(model="echo-a", messages=HELLO, extra_headers=key)
    assert first.headers["x-stillhouse-job-id"] == again.headers["x-stillhouse-job-id"]
    with pytest.raises(openai.ConflictError):
        client.chat.completions.create(model="echo-b", messages=HELLO, extra_headers=key)


def test_past_the_wait_bound_a_504_names_the_job_which_goes_on(client, api, faults, monkeypatch):
    door = openai_api.front_door()
    monkeypatch.setattr(openai_api, "front_door", lambda: dataclasses.replace(door, settings=OpenAISettings(wait_s=0.3)))
    faults("local", latency_ms=1500)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="echo-a", messages=HELLO, extra_headers=key)
    assert caught.value.status_code == 504
    job_id = caught.value.response.headers["x-stillhouse-job-id"]
    assert job_id in caught.value.message
    assert api.wait(job_id, timeout=30)["status"] == "COMPLETED"  # it went on
    monkeypatch.setattr(openai_api, "front_door", lambda: door)
    again = client.chat.completions.with_raw_response.create(model="echo-a", messages=HELLO, extra_headers=key)
    assert again.headers["x-stillhouse-job-id"] == job_id  # the same key: that job, and now its answer
    assert again.parse().choices[0].message.content == "echo-a says: hello there"


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_with_one_endpoint_down_the_completion_succeeds_on_another(client, api, faults, two_endpoints, stream):
    faults("west", down=True)
    for _ in range(4):  # the router may try west first: the job fails over before the caller sees anything
        raw = client.chat.completions.with_raw_response.create(model="echo-a", messages=HELLO, stream=stream)
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        else:
            text = raw.parse().choices[0].message.content
        assert text == "echo-a says: hello there"
        assert api.get(f"/v1/jobs/{raw.headers['x-stillhouse-job-id']}").json()["endpoint"] == "east"


def test_openapi_documents_the_routes(stack):
    paths = requests.get(f"{stack.url}/openapi.json", timeout=30).json()["paths"]
    assert {"/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings"} <= set(paths)
