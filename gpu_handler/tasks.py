"""Job dispatch: `input` dict in, result dict out. Everything the RunPod handler does, minus RunPod.

A job never crashes the worker: bad input, out-of-memory and model-load failures all come back as
`{"error": "<JSON string>"}` (see errors.py); only a failure to start (preflight) exits the process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .errors import InvalidInput, JobError, ModelLoadError, classify, error_result
from .schemas import BatchInput, BatchLine, EmbedInput, GenerateInput, SleepInput
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
    if task == "batch":
        return await run_batch(BatchInput.model_validate(_task_fields(job_input)), engine_for, settings)
    raise JobError(f"unknown task {task!r}; expected one of echo, sleep, generate, embed, batch", field="task")


@dataclass
class _LineOutcome:
    custom_id: str
    output: dict[str, Any] | None = None
    error: JobError | None = None
    unexpected: Exception | None = None  # the exception behind an InternalError-like failure, for the log

    def entry(self) -> dict[str, Any]:
        if self.error is not None:
            return {"custom_id": self.custom_id, "error": self.error.payload()}
        return {"custom_id": self.custom_id, "output": self.output}


async def _run_line(
    line: BatchLine, model: str, engine_for: Callable[[], Any], settings: WorkerSettings
) -> _LineOutcome:
    """One line of a batch, as the single job it describes; its failure is its own (never raised)."""
    job_input = line.input.job_input()
    try:
        named = job_input.get("model")
        if named is not None and named != model:
            raise InvalidInput(f"the line names model {named!r}, but this batch is for {model!r}", field="model")
        if line.input.task != "echo":
            job_input["model"] = model  # a line naming no model runs with the batch's
        return _LineOutcome(line.custom_id, output=await _run(job_input, engine_for, settings))
    except (JobError, ValidationError) as exc:
        return _LineOutcome(line.custom_id, error=classify(exc))
    except Exception as exc:  # logged once per chunk by run_batch, not once per line
        return _LineOutcome(line.custom_id, error=classify(exc), unexpected=exc)


async def run_batch(params: BatchInput, engine_for: Callable[[], Any], settings: WorkerSettings) -> dict[str, Any]:
    """A `batch` job: one chunk of a Batch API file. Every line runs at once, so the engine's
    micro-batcher takes the chunk's generations as GPU batches; the result has one entry per line, in
    order, with the line's `output` or its `error` (the parsed error object). A failed line never fails
    the chunk, except that a chunk whose lines ALL failed retryably (out of memory, model load) fails as
    a whole with a retryable error, so the router tries it again elsewhere."""
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(_run_line(line, params.model, engine_for, settings) for line in params.lines))
    errors = [o.error for o in outcomes if o.error is not None]
    unexpected = [o.unexpected for o in outcomes if o.unexpected is not None]
    if unexpected:
        log.error("%d of %d batch lines failed unexpectedly; the first: %s", len(unexpected), len(outcomes),
                  classify(unexpected[0]).message, exc_info=unexpected[0])
    if len(errors) == len(outcomes) and all(e.retryable for e in errors):
        first = errors[0]
        log.warning("batch of %d lines: every line failed retryably (%s)", len(outcomes), first.error_type)
        raise type(first)(f"all {len(outcomes)} lines of the batch failed, retryably; the first: {first.message}")
    outputs = [o.output for o in outcomes if o.output is not None]
    result: dict[str, Any] = {
        "lines": [o.entry() for o in outcomes],
        "model": params.model,
        "prompt_tokens": sum(int(out.get("prompt_tokens") or 0) for out in outputs),
        "completion_tokens": sum(int(out.get("completion_tokens") or 0) for out in outputs),
    }
    log.info("batch of %d lines: %d failed, %d prompt + %d completion tokens in %.0f ms", len(outcomes),
             len(errors), result["prompt_tokens"], result["completion_tokens"], (time.perf_counter() - started) * 1000)
    if any(isinstance(e, ModelLoadError) for e in errors):
        result["refresh_worker"] = True  # as for a single job: the SDK replaces this worker after the chunk
    return result


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
