"""Job dispatch: `input` dict in, result dict out. Everything the RunPod handler does, minus RunPod.

A job never crashes the worker: bad input, out-of-memory and model-load failures all come back as
`{"error": "<JSON string>"}` (see errors.py); only a failure to start (preflight) exits the process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import ValidationError

from .errors import JobError, classify, error_result
from .schemas import EmbedInput, GenerateInput, SleepInput
from .serving import is_echo_model, resolve_model, served_models
from .settings import WorkerSettings

log = logging.getLogger(__name__)

_engine: Any = None  # gpu_handler.engine.Engine, created on the first model task
_engine_lock = threading.Lock()
_settings: WorkerSettings | None = None  # read from the environment once, or installed by preflight


def current_settings() -> WorkerSettings:
    """This worker's settings: those preflight installed, else the environment's (read once)."""
    global _settings
    if _settings is None:
        _settings = WorkerSettings.from_env()
    return _settings


def set_settings(settings: WorkerSettings | None) -> None:
    """Install specific settings (preflight, tests); None reads the environment again on next use."""
    global _settings
    _settings = settings


def get_engine(settings: WorkerSettings | None = None) -> Any:
    """The process-wide engine. Imported lazily: engine.py pulls in nothing heavy at import, but the
    models it loads do, and echo/sleep jobs must not pay for them."""
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                from .engine import Engine

                _engine = Engine(settings or current_settings())
    return _engine


def set_engine(engine: Any) -> None:
    """Install a specific engine (tests, benchmarks)."""
    global _engine
    _engine = engine


def echo_generate(gen: GenerateInput) -> dict[str, Any]:
    """A diagnostic model family: `model: "echo..."` answers deterministically, with no weights, so
    routing, councils and failover can be tested end to end with exact expectations."""
    said = gen.prompt if gen.prompt is not None else gen.messages[-1].content
    text = f"{gen.model} says: {said}"
    if gen.max_new_tokens is not None:
        text = " ".join(text.split(" ")[: gen.max_new_tokens])
    finish = "length" if gen.max_new_tokens is not None and len(text) < len(f"{gen.model} says: {said}") else "stop"
    for stop in gen.stop:
        if stop in text:
            text, finish = text[: text.index(stop)], "stop"
    words = len(said.split())
    return {"text": text, "finish_reason": finish, "prompt_tokens": words,
            "completion_tokens": len(text.split()), "model": gen.model}


def _task_fields(job_input: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job_input.items() if k != "task"}


async def _run(job_input: dict[str, Any], engine_for: Callable[[], Any], settings: WorkerSettings) -> dict[str, Any]:
    task = job_input.get("task", "echo")
    if task == "echo":
        return {"echo": job_input, "text": job_input.get("text")}
    if task == "sleep":
        params = SleepInput.model_validate(_task_fields(job_input))
        await asyncio.sleep(params.seconds)  # async, so a worker with concurrency > 1 keeps serving
        return {"slept": params.seconds}
    if task == "generate":
        gen = GenerateInput.model_validate(_task_fields(job_input))
        model = resolve_model(gen.model, "generate", settings)  # a misrouted job stops here
        if is_echo_model(model):
            return echo_generate(gen.model_copy(update={"model": model}))
        engine = engine_for()
        if gen.stream:
            # A non-streaming worker still answers `stream: true` jobs, with the complete text.
            chunks = [c async for c in engine.stream(gen)]
            final = dict(chunks[-1])
            final["text"] = "".join(c["text"] for c in chunks)
            return final
        return await engine.generate(gen)
    if task == "embed":
        emb = EmbedInput.model_validate(_task_fields(job_input))  # validate before any model is touched
        resolve_model(emb.model, "embed", settings)
        return await engine_for().embed(emb)
    raise JobError(f"unknown task {task!r}; expected one of echo, sleep, generate, embed", field="task")


async def run_job(
    job_input: dict[str, Any], engine_for: Callable[[], Any] = get_engine, settings: WorkerSettings | None = None
) -> dict[str, Any]:
    """Run one job; failures become a job error, never an exception."""
    try:
        return await _run(job_input, engine_for, settings or current_settings())
    except (JobError, ValidationError) as exc:
        return error_result(classify(exc))
    except Exception as exc:  # still a job error, never a crash; logged with its traceback
        err = classify(exc)
        log.exception("job failed: %s", err.message)
        return error_result(err)


async def stream_job(
    job_input: dict[str, Any], engine_for: Callable[[], Any] = get_engine, settings: WorkerSettings | None = None
) -> AsyncIterator[Any]:
    """Streaming variant: `generate` with `stream: true` yields text chunks; other jobs yield their
    single result. An error is yielded as `{"error": ...}`, which RunPod turns into a failed job."""
    try:
        if job_input.get("task") == "generate" and job_input.get("stream"):
            gen = GenerateInput.model_validate(_task_fields(job_input))
            model = resolve_model(gen.model, "generate", settings or current_settings())
            if is_echo_model(model):
                yield echo_generate(gen.model_copy(update={"model": model}))
                return
            async for chunk in engine_for().stream(gen):
                yield chunk
            return
    except (JobError, ValidationError) as exc:
        yield error_result(classify(exc))
        return
    except Exception as exc:  # still a job error, never a crash; logged with its traceback
        err = classify(exc)
        log.exception("streaming job failed: %s", err.message)
        yield error_result(err)
        return
    yield await run_job(job_input, engine_for, settings)


def preflight(settings: WorkerSettings) -> None:
    """Start-up check: model sources must resolve, and models listed in PRELOAD_MODELS must load.

    Raises ModelLoadError; the entry point turns that into a non-zero exit, which RunPod sees as an
    unhealthy worker. Cheap unless something is preloaded (no torch import otherwise)."""
    set_settings(settings)
    log.info("serving models: generate %s, embed %s", ", ".join(served_models(settings, "generate")),
             ", ".join(served_models(settings, "embed")))
    engine = get_engine(settings)
    for task, source in engine.sources().items():
        source.check()
        log.info("model for %s: %s", task, source)
    engine.preload(settings.preload)
