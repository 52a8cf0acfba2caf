"""The `batch` task: one chunk of a Batch API file, its lines run at once as the single jobs they describe.

Echo models (`echo*`) need no weights; fake engines stand in for out-of-memory and for counting how many
lines are in the engine at once; the tiny Llama shows the lines really meet in the micro-batcher.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpu_handler import tasks
from gpu_handler.engine import Engine
from gpu_handler.errors import OutOfMemory
from gpu_handler.schemas import MAX_BATCH_LINES, EmbedInput, GenerateInput
from gpu_handler.settings import WorkerSettings

FAKE = WorkerSettings(models=("fake-lm",))  # a worker deployed to serve the fake engines' model


def no_engine() -> Any:
    raise AssertionError("this chunk must not touch the engine")


def run(job: dict[str, Any], engine: Any = None, settings: WorkerSettings | None = None) -> dict[str, Any]:
    return asyncio.run(tasks.run_job(job, (lambda: engine) if engine else no_engine, settings))


def chunk(model: str, *inputs: dict[str, Any]) -> dict[str, Any]:
    return {"task": "batch", "model": model,
            "lines": [{"custom_id": f"req-{i}", "input": line} for i, line in enumerate(inputs, 1)]}


def gen(model: str | None, content: str, **fields: Any) -> dict[str, Any]:
    line = {"task": "generate", "messages": [{"role": "user", "content": content}], **fields}
    return line if model is None else {**line, "model": model}


def error_of(result: dict[str, Any]) -> dict[str, Any]:
    assert "error" in result and "lines" not in result, result
    return json.loads(result["error"])


class FakeEngine:
    """Answers generate/embed after a short await; counts how many calls are in flight at once, and
    fails the prompts (or texts) listed in `fail` with the exception given."""

    def __init__(self, fail: dict[str, BaseException] | None = None) -> None:
        self.fail = fail or {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0

    async def _call(self, key: str) -> None:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            if key in self.fail:
                raise self.fail[key]
        finally:
            self.in_flight -= 1

    async def generate(self, params: GenerateInput) -> dict[str, Any]:
        said = params.prompt if params.prompt is not None else params.messages[-1].content
        await self._call(said)
        return {"text": said.upper(), "finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": 2,
                "model": params.model}

    async def embed(self, params: EmbedInput) -> dict[str, Any]:
        await self._call(params.all_texts[0])
        return {"embeddings": [[1.0, 0.0]] * len(params.all_texts), "dims": 2, "count": len(params.all_texts),
                "prompt_tokens": 5, "model": params.model}


# ----------------------------------------------------------------------------------------------
# Results: one entry per line, in order, each with its output or its error.


def test_each_line_gets_its_output_under_its_custom_id_in_input_order() -> None:
    out = run(chunk("echo-a", gen("echo-a", "one two"), gen("echo-a", "three"), {"task": "echo", "text": "hi"},
                    gen("echo-a", "four five six", max_new_tokens=3)))
    assert [e["custom_id"] for e in out["lines"]] == ["req-1", "req-2", "req-3", "req-4"]
    assert all(set(e) == {"custom_id", "output"} for e in out["lines"])
    texts = [e["output"]["text"] for e in out["lines"]]
    assert texts == ["echo-a says: one two", "echo-a says: three", "hi", "echo-a says: four"]
    # Each output is exactly what the line would get as a single job.
    for entry, line in zip(out["lines"], chunk("echo-a", gen("echo-a", "one two"), gen("echo-a", "three"),
                                                {"task": "echo", "text": "hi"})["lines"]):
        assert entry["output"] == run(line["input"])
    # Token counts are the sums over the lines (echo counts words); the chunk names its model.
    assert (out["model"], out["prompt_tokens"], out["completion_tokens"]) == ("echo-a", 2 + 1 + 3, 4 + 3 + 3)
    assert set(out) == {"lines", "model", "prompt_tokens", "completion_tokens"}


def test_a_line_naming_no_model_runs_with_the_chunks_and_a_line_with_no_task_is_echo() -> None:
    out = run(chunk("echo-b", gen(None, "hello"), {"text": "plain"}))
    assert out["lines"][0]["output"]["text"] == "echo-b says: hello"
    assert out["lines"][1]["output"] == {"echo": {"text": "plain"}, "text": "plain"}


def test_a_bad_line_fails_alone_with_its_parsed_error_while_the_others_complete() -> None:
    out = run(chunk("echo-a", gen("echo-a", "fine"), gen("echo-a", "bad", max_new_tokens=0),
                    {"task": "generate", "model": "echo-a"}, gen("echo-a", "also fine")))
    first, bad, empty, last = out["lines"]
    assert first["output"]["text"] == "echo-a says: fine" and last["output"]["text"] == "echo-a says: also fine"
    assert set(bad) == {"custom_id", "error"} and bad["custom_id"] == "req-2"
    assert bad["error"] == {"error_type": "ValidationError", "retryable": False, "field": "max_new_tokens",
                            "error_message": bad["error"]["error_message"]}
    assert "max_new_tokens" in bad["error"]["error_message"]
    assert "exactly one of `prompt` or `messages`" in empty["error"]["error_message"]
    # The error object is what the same input gets as a single job, parsed rather than a JSON string.
    assert bad["error"] == json.loads(run(gen("echo-a", "bad", max_new_tokens=0))["error"])
    # Failed lines count no tokens.
    assert (out["prompt_tokens"], out["completion_tokens"]) == (1 + 2, 3 + 4)


def test_a_line_of_another_model_fails_that_line_only() -> None:
    out = run(chunk("echo-a", gen("echo-b", "wrong model"), gen("echo-a", "right model")))
    wrong, right = out["lines"]
    assert (wrong["error"]["field"], wrong["error"]["retryable"]) == ("model", False)
    assert "'echo-b'" in wrong["error"]["error_message"] and "'echo-a'" in wrong["error"]["error_message"]
    assert right["output"]["text"] == "echo-a says: right model"


def test_a_chunk_for_a_model_this_worker_does_not_serve_fails_its_model_lines_not_the_chunk() -> None:
    out = run(chunk("llama-70b", gen("llama-70b", "hi"), {"task": "embed", "texts": ["a"]}, {"task": "echo"}),
              settings=WorkerSettings(models=("echo-a",)))
    generate, embed, echo = out["lines"]
    assert generate["error"]["error_type"] == embed["error"]["error_type"] == "ModelNotServed"
    assert generate["error"]["retryable"] is False
    assert echo["output"] == {"echo": {"task": "echo"}, "text": None}


# ----------------------------------------------------------------------------------------------
# Retryable failures: a line's stays in its entry, unless every line failed retryably.


def test_a_chunk_whose_every_line_ran_out_of_memory_fails_as_a_whole_and_retryably() -> None:
    engine = FakeEngine({"a": OutOfMemory("CUDA out of memory"), "b": RuntimeError("CUDA out of memory. Tried"),
                         "c": MemoryError()})
    out = run(chunk("fake-lm", gen("fake-lm", "a"), gen("fake-lm", "b"), {"task": "embed", "texts": ["c"]}),
              engine, FAKE)
    error = error_of(out)
    assert (error["error_type"], error["retryable"]) == ("OutOfMemory", True)
    assert "all 3 lines" in error["error_message"] and "CUDA out of memory" in error["error_message"]
    assert engine.calls == 3


def test_a_retryable_line_failure_beside_a_success_stays_in_its_entry() -> None:
    engine = FakeEngine({"a": OutOfMemory("CUDA out of memory")})
    out = run(chunk("fake-lm", gen("fake-lm", "a"), gen("fake-lm", "b")), engine, FAKE)
    oom, ok = out["lines"]
    assert (oom["error"]["error_type"], oom["error"]["retryable"]) == ("OutOfMemory", True)
    assert ok["output"]["text"] == "B"
    assert (out["prompt_tokens"], out["completion_tokens"]) == (3, 2)


def test_a_chunk_whose_lines_all_failed_but_not_all_retryably_succeeds_with_their_errors() -> None:
    engine = FakeEngine({"a": OutOfMemory("CUDA out of memory")})
    out = run(chunk("fake-lm", gen("fake-lm", "a"), gen("fake-lm", "b", top_k=0)), engine, FAKE)
    assert [e["error"]["retryable"] for e in out["lines"]] == [True, False]
    assert (out["prompt_tokens"], out["completion_tokens"]) == (0, 0)


def test_a_model_that_cannot_load_fails_the_chunk_retryably_and_replaces_the_worker(tmp_path: Path) -> None:
    engine = Engine(WorkerSettings(model_id=str(tmp_path / "missing-model"), model_cache_dir=tmp_path))
    settings = WorkerSettings(models=("fake-lm",), model_id=str(tmp_path / "missing-model"))
    out = run(chunk("fake-lm", gen("fake-lm", "a"), gen("fake-lm", "b")), engine, settings)
    assert (error_of(out)["error_type"], error_of(out)["retryable"]) == ("ModelLoadError", True)
    assert out["refresh_worker"] is True
    # With an echo line beside them the chunk succeeds, and still asks for the worker to be replaced.
    mixed = run(chunk("fake-lm", gen("fake-lm", "a"), {"task": "echo", "text": "x"}), engine, settings)
    assert mixed["lines"][0]["error"]["error_type"] == "ModelLoadError"
    assert mixed["lines"][1]["output"]["text"] == "x"
    assert mixed["refresh_worker"] is True


def test_an_unexpected_line_failure_is_an_internal_error_logged_once_per_chunk(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = FakeEngine({f"p{i}": ValueError(f"boom {i}") for i in range(40)})
    with caplog.at_level(logging.DEBUG, logger="gpu_handler"):
        out = run(chunk("fake-lm", *(gen("fake-lm", f"p{i}") for i in range(40))), engine, FAKE)
    assert all(e["error"]["error_type"] == "InternalError" for e in out["lines"])
    assert out["lines"][7]["error"]["error_message"] == "ValueError: boom 7"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "40 of 40 batch lines failed unexpectedly" in errors[0].getMessage()
    assert errors[0].exc_info is not None  # with the first failure's traceback


def test_a_big_chunk_logs_one_summary_line_not_one_per_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="gpu_handler"):
        out = run(chunk("echo-a", *(gen("echo-a", f"line {i}", max_new_tokens=i % 3) for i in range(MAX_BATCH_LINES))))
    assert len(out["lines"]) == MAX_BATCH_LINES
    assert sum("error" in e for e in out["lines"]) == MAX_BATCH_LINES // 3 + 1  # max_new_tokens=0 is invalid
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert f"batch of {MAX_BATCH_LINES} lines: {MAX_BATCH_LINES // 3 + 1} failed" in records[0].getMessage()


# ----------------------------------------------------------------------------------------------
# A malformed chunk is an ordinary job error naming the field.


@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"task": "batch", "model": "echo-a", "lines": []}, "lines"),
        ({"task": "batch", "model": "echo-a"}, "lines"),
        ({"task": "batch", "model": "echo-a", "lines": {"custom_id": "a"}}, "lines"),
        (chunk("echo-a", *([{"task": "echo"}] * (MAX_BATCH_LINES + 1))), "lines"),
        ({"task": "batch", "lines": [{"custom_id": "a", "input": {}}]}, "model"),
        ({"task": "batch", "model": "", "lines": [{"custom_id": "a", "input": {}}]}, "model"),
        ({"task": "batch", "model": "echo-a", "lines": [{"input": {}}]}, "lines.0.custom_id"),
        ({"task": "batch", "model": "echo-a", "lines": [{"custom_id": "a", "input": {}},
                                                        {"custom_id": "", "input": {}}]}, "lines.1.custom_id"),
        ({"task": "batch", "model": "echo-a", "lines": [{"custom_id": 7, "input": {}}]}, "lines.0.custom_id"),
        ({"task": "batch", "model": "echo-a", "lines": [{"custom_id": "a"}]}, "lines.0.input"),
        ({"task": "batch", "model": "echo-a", "lines": [{"custom_id": "a", "input": "hi"}]}, "lines.0.input"),
        (chunk("echo-a", {"task": "echo"}, {"task": "batch", "model": "echo-a", "lines": []}), "lines.1.input.task"),
        (chunk("echo-a", {"task": "sleep", "seconds": 1}), "lines.0.input.task"),
        (chunk("echo-a", {"task": "paint"}), "lines.0.input.task"),
        ({"task": "batch", "model": "echo-a", "lines": [{"custom_id": "a", "input": {}, "extra": 1}]},
         "lines.0.extra"),
        ({**chunk("echo-a", {"task": "echo"}), "max_new_tokens": 5}, "max_new_tokens"),
    ],
)
def test_a_malformed_chunk_is_a_validation_error_naming_the_field(job: dict[str, Any], field: str) -> None:
    error = error_of(run(job))
    assert (error["error_type"], error["field"], error["retryable"]) == ("ValidationError", field, False)
    assert field in error["error_message"]


# ----------------------------------------------------------------------------------------------
# Throughput: the lines run at once, so the micro-batcher takes them as GPU batches.


def test_the_lines_of_a_chunk_are_in_the_engine_at_the_same_time() -> None:
    engine = FakeEngine()
    lines = [gen("fake-lm", f"p{i}") if i % 4 else {"task": "embed", "model": "fake-lm", "texts": [f"t{i}"]}
             for i in range(24)]
    out = run(chunk("fake-lm", *lines), engine, FAKE)
    assert all("output" in e for e in out["lines"])
    assert engine.calls == 24 and engine.max_in_flight == 24


def test_a_chunk_on_the_real_engine_is_micro_batched_and_each_line_matches_its_single_job(
    make_engine: Callable[..., Engine],
) -> None:
    settings = WorkerSettings(models=("tiny-llama",))
    prompts = ["hello", "the lazy dog", "a serverless worker", "greedy decoding", "stop sequences end", "fine"]
    lines = [gen("tiny-llama", p, max_new_tokens=4 + i) for i, p in enumerate(prompts)]
    engine = make_engine()
    out = run(chunk("tiny-llama", *lines), engine, settings)
    assert max(engine.batcher.batch_sizes) > 1 and sum(engine.batcher.batch_sizes) == len(lines)
    alone = make_engine()
    singles = [run(line, alone, settings) for line in lines]
    assert alone.batcher.batch_sizes == [1] * len(lines)
    assert [e["output"]["text"] for e in out["lines"]] == [s["text"] for s in singles]  # greedy: identical
    assert [e["output"]["completion_tokens"] for e in out["lines"]] == [4 + i for i in range(len(prompts))]
    assert out["completion_tokens"] == sum(s["completion_tokens"] for s in singles)
    assert out["prompt_tokens"] == sum(s["prompt_tokens"] for s in singles) > 0


# ----------------------------------------------------------------------------------------------
# The entry point: a batch job goes through run_job whole, never streamed.


def test_the_handler_and_the_streaming_path_return_a_batch_as_one_result() -> None:
    job = chunk("echo-a", gen("echo-a", "hi", stream=True), {"task": "echo", "text": "x"})
    expected = run(job)
    assert expected["lines"][0]["output"]["text"] == "echo-a says: hi"

    async def streamed() -> list[Any]:
        return [c async for c in tasks.stream_job(job, no_engine)]

    assert asyncio.run(streamed()) == [expected]
    pytest.importorskip("runpod")
    import gpu_handler.handler as handler_module

    assert asyncio.run(handler_module.handler({"id": "j1", "input": job})) == expected
