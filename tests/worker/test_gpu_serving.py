"""A worker serves the model its endpoint is deployed with (`MODEL`), and nothing else: a job naming
another model was misrouted and fails with a clear, non-retryable error instead of another model's answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from gpu_handler import tasks
from gpu_handler.engine import Engine
from gpu_handler.settings import WorkerSettings


def no_engine() -> Engine:
    raise AssertionError("a misrouted job must not touch the engine")


def run(job: dict[str, Any], settings: WorkerSettings, engine: Engine | None = None) -> dict[str, Any]:
    return asyncio.run(tasks.run_job(job, (lambda: engine) if engine else no_engine, settings))


def misroute(result: dict[str, Any]) -> dict[str, Any]:
    error = json.loads(result["error"])
    assert error["error_type"] == "ModelNotServed", error
    assert error["retryable"] is False and error["field"] == "model"
    return error


def test_model_is_read_from_the_environment_as_a_list_of_names() -> None:
    assert WorkerSettings.from_env({"MODEL": " llama-8b, llama-8b-instruct ,llama-8b"}).models == (
        "llama-8b", "llama-8b-instruct")
    assert WorkerSettings.from_env({}).models == ()


def test_a_job_for_a_model_the_worker_was_not_deployed_with_fails_as_misrouted_and_names_both() -> None:
    deployed = WorkerSettings(models=("llama-8b",))
    for task in ("generate", "embed"):
        job = {"task": task, "model": "qwen-7b", "prompt" if task == "generate" else "text": "hi"}
        error = misroute(run(job, deployed))
        assert "'qwen-7b'" in error["error_message"] and "llama-8b" in error["error_message"]


def test_a_deployed_worker_does_not_answer_the_echo_family_unless_deployed_with_it() -> None:
    misroute(run({"task": "generate", "model": "echo-a", "prompt": "hi"}, WorkerSettings(models=("llama-8b",))))
    out = run({"task": "generate", "model": "echo-a", "prompt": "hi"}, WorkerSettings(models=("echo-a",)))
    assert out["text"] == "echo-a says: hi" and out["model"] == "echo-a"


def test_a_job_naming_no_model_gets_the_endpoint_s_model() -> None:
    out = run({"task": "generate", "prompt": "hi"}, WorkerSettings(models=("echo-deployed", "echo-alias")))
    assert out["text"] == "echo-deployed says: hi" and out["model"] == "echo-deployed"


def test_the_model_the_worker_serves_answers_with_the_engine(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(models=("tiny-llama", "tiny-bert"))
    out = run({"task": "generate", "model": "tiny-llama", "prompt": "hello", "max_new_tokens": 3}, engine.settings, engine)
    assert out["model"] == "tiny-llama" and out["completion_tokens"] == 3
    assert run({"task": "embed", "model": "tiny-bert", "text": "hello"}, engine.settings, engine)["count"] == 1


def test_without_model_the_worker_serves_its_loaded_models_by_name_and_the_echo_family() -> None:
    plain = WorkerSettings()
    misroute(run({"task": "generate", "model": "qwen-7b", "prompt": "hi"}, plain))
    misroute(run({"task": "embed", "model": "SmolLM2-135M-Instruct", "text": "hi"}, plain))  # not its embedder
    assert run({"task": "generate", "model": "echo-b", "prompt": "hi"}, plain)["model"] == "echo-b"
    named = WorkerSettings(model_id="/models/Qwen2.5-0.5B-Instruct.gguf")
    misroute(run({"task": "generate", "model": "SmolLM2-135M-Instruct", "prompt": "hi"}, named))


def test_a_streaming_worker_refuses_a_misrouted_stream_job_too() -> None:
    async def collect() -> list[Any]:
        job = {"task": "generate", "model": "qwen-7b", "prompt": "hi", "stream": True}
        return [c async for c in tasks.stream_job(job, no_engine, WorkerSettings(models=("llama-8b",)))]

    [only] = asyncio.run(collect())
    misroute(only)


def test_the_router_classes_a_misroute_as_terminal_so_it_is_not_retried() -> None:
    from stillhouse.errors import ErrorClass
    from stillhouse.jobs.status import JobStatus
    from stillhouse.runpod.callbacks import error_class_of

    result = run({"task": "generate", "model": "qwen-7b", "prompt": "hi"}, WorkerSettings(models=("llama-8b",)))
    assert json.loads(result["error"])["retryable"] is False
    assert error_class_of(JobStatus.FAILED, result["error"]) is ErrorClass.TERMINAL
