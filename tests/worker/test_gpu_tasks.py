"""Job dispatch and the RunPod entry point: input validation, error format, diagnostics, wiring."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpu_handler import tasks
from gpu_handler.engine import Engine
from gpu_handler.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]
HANDLER = REPO / "gpu_handler" / "handler.py"


def run(job_input: dict[str, Any], engine: Engine | None = None) -> dict[str, Any]:
    def no_engine() -> Engine:
        raise AssertionError("this job must not touch the engine")

    return asyncio.run(tasks.run_job(job_input, (lambda: engine) if engine else no_engine))


def error_of(result: dict[str, Any]) -> dict[str, Any]:
    assert set(result) >= {"error"}, result
    return json.loads(result["error"])


def test_echo_returns_its_input_and_text_without_loading_models() -> None:
    job = {"task": "echo", "text": "hi", "extra": [1, 2]}
    assert run(job) == {"echo": job, "text": "hi"}
    assert run({"text": "no task means echo"})["text"] == "no task means echo"


def test_sleep_sleeps_and_reports_the_seconds() -> None:
    assert run({"task": "sleep", "seconds": 0.01}) == {"slept": 0.01}


def test_sleep_outside_its_bounds_is_a_validation_error_naming_seconds() -> None:
    error = error_of(run({"task": "sleep", "seconds": 61}))
    assert error["error_type"] == "ValidationError"
    assert error["field"] == "seconds"
    assert error["retryable"] is False


def test_an_unknown_task_is_a_job_error() -> None:
    error = error_of(run({"task": "paint"}))
    assert "unknown task 'paint'" in error["error_message"]
    assert error["field"] == "task"


@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"task": "generate", "prompt": "hi", "max_new_tokens": 0}, "max_new_tokens"),
        ({"task": "generate", "prompt": "hi", "temperature": -1}, "temperature"),
        ({"task": "generate", "prompt": "hi", "top_p": 0}, "top_p"),
        ({"task": "generate", "prompt": "hi", "max_tokens": 5}, "max_tokens"),
        ({"task": "generate", "messages": [{"role": "user"}]}, "messages.0.content"),
        ({"task": "generate", "prompt": 5}, "prompt"),
        ({"task": "embed", "texts": []}, "texts"),
        ({"task": "embed", "texts": ["a", 3]}, "texts.1"),
    ],
)
def test_bad_parameters_are_a_validation_error_naming_the_field(job: dict[str, Any], field: str) -> None:
    error = error_of(run(job))
    assert error["error_type"] == "ValidationError"
    assert error["field"] == field
    assert field in error["error_message"]
    assert error["retryable"] is False


def test_generate_needs_exactly_one_of_prompt_or_messages() -> None:
    for job in (
        {"task": "generate"},
        {"task": "generate", "prompt": "a", "messages": [{"role": "user", "content": "b"}]},
    ):
        assert "exactly one of `prompt` or `messages`" in error_of(run(job))["error_message"]


def test_a_generate_job_returns_text_counts_finish_reason_and_timings(make_engine: Callable[..., Engine]) -> None:
    out = run({"task": "generate", "prompt": "hello", "max_new_tokens": 6, "stop": None}, make_engine())
    assert set(out) == {"text", "finish_reason", "prompt_tokens", "completion_tokens", "model", "timings"}
    assert (out["completion_tokens"], out["finish_reason"], out["model"]) == (6, "length", "tiny-llama")
    assert out["prompt_tokens"] > 0
    assert {"queue_ms", "first_token_ms", "generate_ms", "total_ms", "batch_size"} <= set(out["timings"])


def test_a_stream_job_on_a_non_streaming_worker_returns_the_whole_text(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    whole = run({"task": "generate", "prompt": "hello", "max_new_tokens": 12}, engine)
    streamed = run({"task": "generate", "prompt": "hello", "max_new_tokens": 12, "stream": True}, engine)
    assert streamed["text"] == whole["text"]
    assert streamed["completion_tokens"] == 12


def test_the_stream_job_yields_text_chunks_then_a_final_chunk_with_counts(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()

    async def collect(job: dict[str, Any]) -> list[Any]:
        return [c async for c in tasks.stream_job(job, lambda: engine)]

    chunks = asyncio.run(collect({"task": "generate", "prompt": "hello", "max_new_tokens": 12, "stream": True}))
    assert len(chunks) > 1 and all("text" in c for c in chunks)
    assert chunks[-1]["completion_tokens"] == 12
    # Other jobs on a streaming worker yield their one result; errors are yielded as {"error": ...}.
    assert asyncio.run(collect({"task": "echo", "text": "x"})) == [{"echo": {"task": "echo", "text": "x"}, "text": "x"}]
    [bad] = asyncio.run(collect({"task": "generate", "prompt": "hello", "stream": True, "top_k": 0}))
    assert json.loads(bad["error"])["field"] == "top_k"


def test_embed_accepts_a_single_text_or_a_list(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    one = run({"task": "embed", "text": "hello world"}, engine)
    many = run({"task": "embed", "texts": ["hello world", "the lazy dog"]}, engine)
    assert (one["count"], one["dims"], len(one["embeddings"][0])) == (1, 32, 32)
    assert many["count"] == 2 and many["embeddings"][0] == pytest.approx(one["embeddings"][0], abs=1e-5)
    assert many["model"] == "tiny-bert"


def test_too_many_texts_is_a_validation_error(make_engine: Callable[..., Engine]) -> None:
    error = error_of(run({"task": "embed", "texts": ["a"] * 3}, make_engine(max_embed_texts=2)))
    assert error["field"] == "texts"


def test_a_model_that_fails_to_load_is_a_retryable_error_that_replaces_the_worker(tmp_path: Path) -> None:
    engine = Engine(WorkerSettings(model_id=str(tmp_path / "missing-model"), model_cache_dir=tmp_path))
    out = run({"task": "generate", "prompt": "hi"}, engine)
    error = error_of(out)
    assert (error["error_type"], error["retryable"]) == ("ModelLoadError", True)
    assert out["refresh_worker"] is True  # the SDK turns this into stopPod: RunPod replaces the worker
    assert error_of(run({"task": "generate", "prompt": "hi"}, engine))["error_type"] == "ModelLoadError"


def test_settings_are_read_from_the_environment() -> None:
    settings = WorkerSettings.from_env(
        {
            "WORKER_CONCURRENCY": "4",
            "BATCH_WINDOW_MS": "7.5",
            "BATCH_MAX_SIZE": "8",
            "MODEL_ID": "org/model",
            "STILLHOUSE_MODEL_CACHE": "/models",
            "PRELOAD_MODELS": "generate, embed",
            "WORKER_STREAMING": "true",
            "EMBED_MODEL_ID": "  ",
        }
    )
    assert (settings.concurrency, settings.batch_window_ms, settings.batch_max_size) == (4, 7.5, 8)
    assert (settings.model_id, settings.embed_model_id, str(settings.model_cache_dir)) == ("org/model", None, "/models")
    assert settings.preload == ("generate", "embed") and settings.streaming is True
    with pytest.raises(ValueError):
        WorkerSettings.from_env({"WORKER_CONCURRENCY": "0"})


# ----------------------------------------------------------------------------------------------
# The entry point.


@pytest.fixture
def handler_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    pytest.importorskip("runpod")
    import gpu_handler.handler as module

    return module


def test_the_handler_is_async_and_delegates_to_the_task_dispatch(handler_module: Any) -> None:
    import inspect

    assert inspect.iscoroutinefunction(handler_module.handler)
    assert inspect.isasyncgenfunction(handler_module.stream_handler)
    assert asyncio.run(handler_module.handler({"id": "j1", "input": {"task": "echo", "text": "hi"}}))["text"] == "hi"


@pytest.mark.parametrize("streaming", [False, True])
def test_main_starts_runpod_with_concurrency_and_aggregated_streams(
    handler_module: Any, monkeypatch: pytest.MonkeyPatch, streaming: bool
) -> None:
    started: dict[str, Any] = {}
    monkeypatch.setattr(handler_module.runpod.serverless, "start", started.update)
    monkeypatch.setattr(tasks, "_engine", None)
    monkeypatch.setenv("WORKER_CONCURRENCY", "5")
    monkeypatch.setenv("WORKER_STREAMING", str(streaming).lower())
    handler_module.main()
    monkeypatch.setattr(tasks, "_engine", None)
    assert started["handler"] is (handler_module.stream_handler if streaming else handler_module.handler)
    assert started["concurrency_modifier"](1) == 5
    assert started["return_aggregate_stream"] is True


def _run_handler_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true", **(env or {})}
    full_env.pop("RUNPOD_WEBHOOK_GET_JOB", None)
    return subprocess.run(
        [sys.executable, str(HANDLER), *args], capture_output=True, text=True, timeout=120, env=full_env, cwd=REPO
    )


def test_the_script_runs_a_test_input_job_locally_and_exits_zero(handler_module: Any) -> None:
    done = _run_handler_script("--test_input", json.dumps({"input": {"task": "echo", "text": "local"}}))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "'text': 'local'" in done.stdout + done.stderr


def test_the_script_exits_non_zero_when_its_model_cannot_be_found(handler_module: Any, tmp_path: Path) -> None:
    done = _run_handler_script(
        "--test_input", json.dumps({"input": {"task": "echo"}}), env={"MODEL_ID": str(tmp_path / "nope")}
    )
    assert done.returncode != 0
    assert "model path not found" in done.stdout + done.stderr


def test_the_echo_model_family_answers_deterministically_without_weights():
    import asyncio

    from gpu_handler.tasks import run_job

    def no_engine():
        raise AssertionError("an echo model must not load a real model")

    out = asyncio.run(run_job({"task": "generate", "model": "echo-a", "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "what is 2+2?"}]}, no_engine))
    assert out["text"] == "echo-a says: what is 2+2?" and out["finish_reason"] == "stop"
    again = asyncio.run(run_job({"task": "generate", "model": "echo-a", "prompt": "what is 2+2?"}, no_engine))
    assert again["text"] == out["text"]
    cut = asyncio.run(run_job({"task": "generate", "model": "echo-b", "prompt": "one two three", "stop": ["two"]}, no_engine))
    assert cut["text"] == "echo-b says: one " and cut["finish_reason"] == "stop"


def test_a_preloaded_model_that_cannot_load_stops_the_worker_before_it_takes_jobs(
    handler_module: Any, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")  # the path resolves; loading it fails
    done = _run_handler_script(env={"MODEL_ID": str(broken), "PRELOAD_MODELS": "generate"})
    assert done.returncode != 0, done.stdout + done.stderr
    assert "worker start-up failed" in done.stdout + done.stderr
