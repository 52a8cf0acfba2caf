"""OpenAI's Batch API, driven by the official `openai` SDK against the embedded stack: files in, batches run
as chunks (jobs of the batch lane, each a GPU micro-batch on the real worker), output and error files out.

The session stack runs four lines to a chunk (STILLHOUSE_BATCH__CHUNK_LINES); the diagnostic `echo-*` models
answer "<model> says: <last message>" with no weights, so every line's answer is exact."""
from __future__ import annotations

import io
import json
import time

import openai
import pytest

from stillhouse.config import BatchSettings
from stillhouse.container import container
from stillhouse.delivery.signing import verify_webhook

CHAT = "/v1/chat/completions"


@pytest.fixture
def client(stack):
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.dev_api_key, max_retries=0, timeout=60)


def chat_line(custom_id: str, text: str, model: str = "echo-a", **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": CHAT,
            "body": {"model": model, "messages": [{"role": "user", "content": text}], **body}}


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def upload(client, rows, name="requests.jsonl"):
    return client.files.create(file=(name, io.BytesIO(jsonl(rows) if isinstance(rows, list) else rows)),
                               purpose="batch")


def wait_for(client, batch_id, statuses=("completed", "failed", "expired", "cancelled"), timeout_s=90):
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch.request_counts}"
        time.sleep(0.2)


def lines_of(client, file_id) -> list[dict]:
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines() if line.strip()]


def test_a_chat_batch_runs_every_line_once_and_returns_each_custom_id(client, api):
    rows = [chat_line(f"req-{i}", f"question {i}", model="echo-a" if i % 3 else "echo-b") for i in range(10)]
    file = upload(client, rows)
    assert file.purpose == "batch" and file.bytes == len(jsonl(rows)) and file.id.startswith("file-")
    batch = client.batches.create(input_file_id=file.id, endpoint=CHAT, completion_window="24h",
                                  metadata={"project": "tests"})
    assert batch.status == "validating" and batch.metadata == {"project": "tests"}
    done = wait_for(client, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (10, 10, 0)
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.error_file_id is None
    out = lines_of(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in out) == sorted(r["custom_id"] for r in rows)
    for line in out:
        i = int(line["custom_id"].split("-")[1])
        model = "echo-a" if i % 3 else "echo-b"
        assert line["error"] is None and line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == model
        assert body["choices"][0]["message"]["content"] == f"{model} says: question {i}"
    # Lines grouped by model, four to a chunk: echo-a's 6 lines make 2 chunks, echo-b's 4 make 1.
    assert done.model_extra["stillhouse"]["chunks"] == 3
    chunk = api.get(f"/v1/jobs/{done.id}-c00000").json()  # a chunk is an ordinary job, with its timeline
    assert chunk["task"] == "batch" and chunk["status"] == "COMPLETED" and chunk["priority"] == "batch"


def test_an_embeddings_batch_returns_vectors_per_line(client):
    rows = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
             "body": {"model": "all-MiniLM-L6-v2", "input": [f"text {i}", "another"]}} for i in range(3)]
    batch = client.batches.create(input_file_id=upload(client, rows).id, endpoint="/v1/embeddings",
                                  completion_window="24h")
    done = wait_for(client, batch.id, timeout_s=180)
    assert done.status == "completed", done
    out = {line["custom_id"]: line["response"]["body"] for line in lines_of(client, done.output_file_id)}
    assert set(out) == {"e0", "e1", "e2"}
    for body in out.values():
        assert body["object"] == "list" and len(body["data"]) == 2
        assert len(body["data"][0]["embedding"]) == 384 and body["usage"]["prompt_tokens"] > 0


def test_a_line_the_worker_refuses_goes_to_the_error_file_and_the_rest_complete(client):
    # `local` serves "*", so the router lets any model name through; its worker knows no `no-such-model`
    # and refuses that line, as it would refuse the same single job.
    rows = [chat_line("good-1", "one"), chat_line("bad", "two", model="no-such-model"), chat_line("good-2", "three")]
    batch = client.batches.create(input_file_id=upload(client, rows).id, endpoint=CHAT, completion_window="24h")
    done = wait_for(client, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    assert {line["custom_id"] for line in lines_of(client, done.output_file_id)} == {"good-1", "good-2"}
    [bad] = lines_of(client, done.error_file_id)
    assert bad["custom_id"] == "bad" and bad["response"]["status_code"] == 400
    assert "no-such-model" in bad["response"]["body"]["error"]["message"]


def test_validation_refuses_the_batch_naming_each_bad_line(client):
    rows = [chat_line("a", "fine"), chat_line("a", "duplicate id"),
            {**chat_line("c", "wrong method"), "method": "GET"},
            {**chat_line("d", "wrong url"), "url": "/v1/embeddings"},
            chat_line("e", "no such model", model="gpt-nope"),
            {"custom_id": "f", "method": "POST", "url": CHAT, "body": {"model": "echo-a"}}]
    container().registry.update("local", models=["echo-a"])
    try:
        batch = client.batches.create(input_file_id=upload(client, rows).id, endpoint=CHAT, completion_window="24h")
        done = wait_for(client, batch.id)
    finally:
        container().registry.update("local", models=["SmolLM2-135M-Instruct", "all-MiniLM-L6-v2", "*"])
    assert done.status == "failed" and done.failed_at and done.output_file_id is None
    assert [(e.line, e.code) for e in done.errors.data] == [
        (2, "duplicate_custom_id"), (3, "invalid_method"), (4, "invalid_url"), (5, "model_not_found"),
        (6, "invalid_body")]
    assert done.errors.data[4].param == "body.messages"


def test_a_file_past_the_line_limit_is_refused_and_nothing_is_stored(client):
    before = {f.id for f in client.files.list()}
    with pytest.raises(openai.BadRequestError) as caught:
        upload(client, b"{}\n" * 50_001)
    assert "50001 lines" in caught.value.message and caught.value.param == "file"
    assert {f.id for f in client.files.list()} == before


def test_files_are_listed_read_and_deleted_by_their_tenant_only(client, stack, other_tenant):
    file = upload(client, [chat_line("x", "hi")], name="mine.jsonl")
    assert client.files.retrieve(file.id).filename == "mine.jsonl"
    assert file.id in {f.id for f in client.files.list(purpose="batch")}
    assert json.loads(client.files.content(file.id).text)["custom_id"] == "x"
    assert other_tenant.get(f"/v1/files/{file.id}").status_code == 404
    assert client.files.delete(file.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file.id)


def test_the_batch_request_is_checked(client):
    file = upload(client, [chat_line("x", "hi")])
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(input_file_id=file.id, endpoint="/v1/responses", completion_window="24h")
    assert caught.value.param == "endpoint"
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(input_file_id=file.id, endpoint=CHAT, completion_window="1h")
    assert caught.value.param == "completion_window"
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint=CHAT, completion_window="24h")


@pytest.fixture
def slow_model(stack, faults):
    """`echo-slow` runs on `east` only, which takes 60 s a job; everything else stays fast on `local`."""
    container().registry.update("local", models=["echo-a"])
    container().registry.update("east", enabled=True, models=["echo-slow"])
    faults("east", latency_ms=60_000)
    yield "echo-slow"
    container().registry.update("east", enabled=False, models=["*"])
    container().registry.update("local", models=["SmolLM2-135M-Instruct", "all-MiniLM-L6-v2", "*"])


def test_cancel_stops_what_has_not_run_and_keeps_what_finished(client, slow_model):
    rows = [chat_line(f"fast-{i}", "hi") for i in range(4)] + [chat_line(f"slow-{i}", "hi", model=slow_model)
                                                              for i in range(4)]
    batch = client.batches.create(input_file_id=upload(client, rows).id, endpoint=CHAT, completion_window="24h")
    deadline = time.monotonic() + 60
    while client.batches.retrieve(batch.id).request_counts.completed < 4:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = wait_for(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    assert {line["custom_id"] for line in lines_of(client, done.output_file_id)} == {f"fast-{i}" for i in range(4)}
    errors = lines_of(client, done.error_file_id)
    assert {line["custom_id"] for line in errors} == {f"slow-{i}" for i in range(4)}
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    slow_chunk = client.get(f"/jobs/{done.id}-c00001", cast_to=object)
    assert slow_chunk["status"] == "CANCELLED"
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_a_batch_past_its_window_expires_and_keeps_what_was_done(client, slow_model, monkeypatch):
    # 10 s: the fast chunk ends well inside the window even on a busy machine (the every-minute sweep may
    # expire the batch at any moment after it), while the slow one (60 s) is still running.
    monkeypatch.setattr(container().batch_service, "settings", BatchSettings(chunk_lines=4, window_s=10))
    rows = [chat_line(f"fast-{i}", "hi") for i in range(2)] + [chat_line("slow-0", "hi", model=slow_model)]
    batch = client.batches.create(input_file_id=upload(client, rows).id, endpoint=CHAT, completion_window="24h")
    deadline = time.monotonic() + 60
    while client.batches.retrieve(batch.id).request_counts.completed < 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(max(0.0, batch.created_at + 10.5 - time.time()))
    container().sweeper.sweep()
    done = wait_for(client, batch.id)
    assert done.status == "expired" and done.expired_at
    assert {line["custom_id"] for line in lines_of(client, done.output_file_id)} == {"fast-0", "fast-1"}
    assert [(e["custom_id"], e["error"]["code"]) for e in lines_of(client, done.error_file_id)] == [
        ("slow-0", "batch_expired")]
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)


def test_batches_are_listed_newest_first_with_a_cursor(client):
    ids = [client.batches.create(input_file_id=upload(client, [chat_line("x", "hi")]).id, endpoint=CHAT,
                                 completion_window="24h").id for _ in range(3)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    rest = client.batches.list(limit=2, after=page.data[-1].id)
    assert rest.data[0].id == ids[0]
    for batch_id in ids:
        wait_for(client, batch_id)


def test_the_batch_s_end_is_posted_to_its_webhook_signed(client, stack, receiver):
    file = upload(client, [chat_line("w1", "hi"), chat_line("w2", "there")])
    batch = client.batches.create(input_file_id=file.id, endpoint=CHAT, completion_window="24h",
                                  extra_body={"webhook": receiver.url})
    assert wait_for(client, batch.id).status == "completed"
    (call,) = receiver.wait_for(1, timeout=30)
    assert call["json"]["type"] == "batch.completed" and call["json"]["id"] == batch.id
    assert call["json"]["data"]["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert verify_webhook(stack.dev_webhook_secret, call["body"], call["headers"])
