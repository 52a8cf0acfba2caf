"""A batch input file's lines: each checked as its route would check the same call, then planned into
chunks of one model, in file order. And a finished chunk's lines, sorted into the output and error files."""
import json

from stillhouse.batches.lines import check_lines, count_lines, plan_chunks
from stillhouse.batches.results import chunk_lines
from stillhouse.config import InputLimits
from stillhouse.jobs.model import Job, JobStatus, Priority, Task

CHAT = "/v1/chat/completions"
LIMITS = InputLimits()


def served(model):
    return model != "unknown"


def line(custom_id, text="hi", model="m1", url=CHAT, **body):
    return {"custom_id": custom_id, "method": "POST", "url": url,
            "body": {"model": model, "messages": [{"role": "user", "content": text}], **body}}



def as_file(*rows):
    return "".join((json.dumps(r) if isinstance(r, dict) else r) + "\n" for r in rows).encode()


def test_a_valid_line_becomes_the_job_its_route_would_run():
    checked = check_lines(as_file(line("a", "hello", max_tokens=5, temperature=0)), CHAT, LIMITS, served)
    assert checked.errors == []
    [only] = checked.lines
    assert (only.number, only.custom_id, only.model) == (1, "a", "m1")
    assert only.payload == {"task": "generate", "model": "m1", "messages": [{"role": "user", "content": "hello"}],
                            "max_new_tokens": 5, "temperature": 0.0, "top_p": 1.0}


def test_every_refused_line_is_named_by_its_number_and_blank_lines_are_skipped():
    content = as_file(line("a"), "", line("a"), {**line("b"), "method": "GET"}, {**line("c"), "url": "/v1/embeddings"},
                      line("d", model="unknown"), "not json", line("e", stream=True),
                      {"custom_id": "f", "method": "POST", "url": CHAT, "body": {"model": "m1"}},
                      line("g", max_tokens=10**6), line("h", model="council"))
    checked = check_lines(content, CHAT, LIMITS, served)
    assert [(e.line, e.code, e.param) for e in checked.errors] == [
        (3, "duplicate_custom_id", "custom_id"), (4, "invalid_method", "method"), (5, "invalid_url", "url"),
        (6, "model_not_found", "body.model"), (7, "invalid_json_line", None), (8, "invalid_body", "body.stream"),
        (9, "invalid_body", "body.messages"), (10, "invalid_body", "body.max_tokens"),
        (11, "invalid_body", "body.model")]


def test_the_errors_listed_are_bounded_and_the_rest_counted():
    checked = check_lines(as_file(*["nope"] * 150), CHAT, LIMITS, served)
    assert len(checked.errors) == 101 and checked.errors[-1].code == "too_many_errors"
    assert "50 more lines" in checked.errors[-1].message


def test_an_empty_file_is_refused():
    assert [e.code for e in check_lines(b"\n\n", CHAT, LIMITS, served).errors] == ["empty_file"]
    assert count_lines(b"a\n\nb\n") == 2


def test_embedding_lines_keep_their_encoding_format():
    row = {"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
           "body": {"model": "m1", "input": ["x", "y"], "encoding_format": "base64"}}
    [only] = check_lines(as_file(row), "/v1/embeddings", LIMITS, served).lines
    assert only.payload == {"task": "embed", "model": "m1", "texts": ["x", "y"]} and only.encoding_format == "base64"


def test_chunks_hold_one_model_in_file_order_up_to_their_size():
    rows = [line(f"r{i}", model="m1" if i % 3 else "m2") for i in range(10)]
    lines = check_lines(as_file(*rows), CHAT, LIMITS, served).lines
    chunks = plan_chunks(lines, chunk_lines=3, chunk_max_bytes=1_000_000)
    assert [(c.model, [ln.custom_id for ln in c.lines]) for c in chunks] == [
        ("m2", ["r0", "r3", "r6"]), ("m1", ["r1", "r2", "r4"]), ("m1", ["r5", "r7", "r8"]), ("m2", ["r9"])]
    by_bytes = plan_chunks(lines, chunk_lines=100, chunk_max_bytes=lines[0].size() * 2)
    assert all(len(c.lines) <= 2 for c in by_bytes) and sum(len(c.lines) for c in by_bytes) == 10


def chunk_of(*custom_ids):
    return {"lines": [{"custom_id": c, "input": {}} for c in custom_ids],
            "meta": [{"line": i + 1, "encoding_format": None} for i in range(len(custom_ids))]}


def chunk_job(status=JobStatus.COMPLETED, output=None, error=None):
    return Job(id="batch_x-c00000", tenant_id="t", task=Task.BATCH, status=status, input={}, model="m1",
               priority=Priority.BATCH, created_at="2026-12-07T00:00:00.000Z", updated_at="2026-12-07T00:00:01.000Z",
               output=output, error=error)


def test_a_completed_chunk_sends_each_line_to_exactly_one_file():
    output = {"lines": [{"custom_id": "a", "output": {"text": "hello", "prompt_tokens": 1, "completion_tokens": 1}},
                        {"custom_id": "b", "error": {"error_type": "ValidationError", "error_message": "bad stop",
                                                     "retryable": False, "field": "stop"}}]}
    lines = chunk_lines(CHAT, chunk_of("a", "b"), chunk_job(output=output), output, None)
    [good], [bad] = lines.output, lines.errors
    assert good["custom_id"] == "a" and good["error"] is None
    assert good["response"]["status_code"] == 200 and good["response"]["request_id"] == "batch_x-c00000-0"
    assert good["response"]["body"]["choices"][0]["message"]["content"] == "hello"
    assert bad["custom_id"] == "b" and bad["response"]["status_code"] == 400
    refusal = bad["response"]["body"]["error"]
    assert refusal["message"] == "bad stop" and refusal["param"] == "stop"


def test_a_chunk_that_did_not_complete_fails_all_its_lines_saying_why():
    failed = chunk_lines(CHAT, chunk_of("a", "b"), chunk_job(JobStatus.FAILED, error="boom"), None, None)
    assert [(e["custom_id"], e["error"]["code"]) for e in failed.errors] == [("a", "request_failed"),
                                                                              ("b", "request_failed")]
    assert "boom" in failed.errors[0]["error"]["message"] and failed.output == []
    expired = chunk_lines(CHAT, chunk_of("a"), chunk_job(JobStatus.CANCELLED), None, "expired")
    assert expired.errors[0]["error"]["code"] == "batch_expired" and expired.errors[0]["response"] is None
    never_made = chunk_lines(CHAT, chunk_of("a"), None, None, "cancelled")
    assert never_made.errors[0]["error"]["code"] == "batch_cancelled"


def test_a_worker_answer_that_does_not_match_its_lines_is_an_error_per_line_never_a_guess():
    short = {"lines": [{"custom_id": "a", "output": {"text": "x"}}]}
    lines = chunk_lines(CHAT, chunk_of("a", "b"), chunk_job(output=short), short, None)
    assert lines.output == [] and [e["error"]["code"] for e in lines.errors] == ["worker_error", "worker_error"]
    swapped = {"lines": [{"custom_id": "b", "output": {"text": "x"}}, {"custom_id": "a", "output": {"text": "y"}}]}
    lines = chunk_lines(CHAT, chunk_of("a", "b"), chunk_job(output=swapped), swapped, None)
    assert lines.output == [] and {e["response"]["status_code"] for e in lines.errors} == {500}
