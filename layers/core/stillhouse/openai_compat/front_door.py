"""The OpenAI front door: each call is a job like any other, submitted, then waited for or streamed.

A call gets everything a native job gets (the record and timeline, `Idempotency-Key`, `traceparent`,
quotas, routing, breakers, retries and failover) because it *is* a native job: `submit` is the API's own
submission. What this module adds is the waiting:

* **Answers** wait for the job to end, looking at it quickly at first (short jobs) and then every
  `poll_s`, for at most the call's budget; past it the caller gets 504 naming the job, which goes on (the
  same `Idempotency-Key` gets the same job, and its answer once it has one). A failed attempt is retried
  by the router (on another endpoint) while the call waits: the caller sees only the job's end.
* **Streams** read the job's chunks as a streaming endpoint makes them (`StreamReader`, RunPod's
  `/stream`). Before the first chunk nothing is sent, so a failure there is an ordinary HTTP error, and a
  failed attempt is simply retried; after it, a failure ends the stream with an error event, never a
  silent truncation. With no streaming endpoint for the model, the job runs as a plain one and its text
  comes as one chunk.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from stillhouse.auth import Principal
from stillhouse.config import InputLimits, OpenAISettings
from stillhouse.errors import Conflict, GatewayTimeout, InvalidRequest, ServiceUnavailable, StillhouseError
from stillhouse.jobs.model import MODEL_NAME_CHARS, Job, JobRequest, JobStatus
from stillhouse.jobs.streams import StreamPage
from stillhouse.openai_compat import translate
from stillhouse.openai_compat.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    EmbeddingList,
    EmbeddingRequest,
    Model,
    ModelList,
)
from stillhouse.routing.registry import ANY_MODEL, EndpointSpec

log = logging.getLogger(__name__)

#: The first looks at a job come quickly (short jobs end in tens of milliseconds), then every poll_s.
FIRST_LOOKS_S = (0.02, 0.05, 0.1, 0.15, 0.2)
#: Between two reads of a stream: RunPod's own clients poll /stream about this often.
STREAM_POLL_S = 0.1


class JobFailed(StillhouseError):
    """The job behind a call ended without an answer after its retries (500)."""

    code = "job_failed"


class JobRefused(InvalidRequest):
    """The worker refused the job's input: not worth retrying, the request's fault (400)."""

    code = "job_failed"


class JobCancelled(Conflict):
    code = "job_cancelled"


class Submit(Protocol):
    """Submits a job as POST /v1/jobs does (quotas, idempotency, trace): returns its id and trace id."""

    def __call__(self, principal: Principal, request: JobRequest, idempotency_key: str | None,
                 traceparent: str | None) -> tuple[str, str | None]: ...


class Jobs(Protocol):
    def get(self, job_id: str, tenant_id: str | None = None) -> Job: ...


class Streams(Protocol):
    def read(self, principal: Principal, job_id: str) -> StreamPage: ...


class Fleet(Protocol):
    def list(self) -> list[EndpointSpec]: ...

    def candidates(self, model: str | None, streaming: bool = False) -> list[EndpointSpec]: ...


@dataclass(frozen=True)
class Call:
    """What a call submitted: its job and the model name to answer with."""

    job_id: str
    trace_id: str | None
    model: str
    streamed: bool = False  # the job streams (a streaming endpoint serves its model)


@dataclass
class FrontDoor:
    submit: Submit
    jobs: Jobs
    streams: Streams
    fleet: Fleet
    settings: OpenAISettings = field(default_factory=OpenAISettings)
    limits: InputLimits = field(default_factory=InputLimits)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    # --- models --------------------------------------------------------------------------------

    def models(self) -> ModelList:
        """The models a caller can name: every model an enabled endpoint lists by name, and the council
        presets. (An endpoint serving "*" takes any name, so it adds none to the list.)"""
        names: dict[str, None] = {}
        for spec in self.fleet.list():
            if spec.enabled:
                names.update((m, None) for m in spec.models if m != ANY_MODEL)
        names[translate.COUNCIL] = None
        names.update((f"{translate.COUNCIL}:{preset}", None) for preset in self.settings.council_presets)
        return ModelList(data=[Model(id=name) for name in sorted(names)])

    def model(self, model_id: str) -> Model:
        self._check_model(model_id)
        return Model(id=model_id)

    def _check_model(self, model: str) -> bool:
        """Whether `model` names a council; raises ModelNotFound when no enabled endpoint serves it."""
        if translate.council_of(model, self.settings.council_presets) is not None:
            return True
        # A name longer than a job may carry is served by no endpoint: 404, as for any unknown model, not the
        # job's own validation error (a 500) once the request is translated.
        if len(model) > MODEL_NAME_CHARS or not self.fleet.candidates(model):
            raise translate.ModelNotFound(model)
        return False

    # --- calls ---------------------------------------------------------------------------------

    def _streams(self, model: str, council: bool) -> bool:
        return not council and bool(self.fleet.candidates(model, streaming=True))

    def start_chat(self, who: Principal, request: ChatCompletionRequest, idempotency_key: str | None = None,
                   traceparent: str | None = None) -> Call:
        council = self._check_model(request.model)
        streamed = request.stream and self._streams(request.model, council)
        job = translate.chat_job(request, self.limits, self.settings.council_presets, streaming=streamed)
        return Call(*self.submit(who, job, idempotency_key, traceparent), request.model, streamed)

    def start_completion(self, who: Principal, request: CompletionRequest, idempotency_key: str | None = None,
                         traceparent: str | None = None) -> Call:
        if self._check_model(request.model):
            raise InvalidRequest("model: a council answers chat completions only", field="model")
        streamed = request.stream and self._streams(request.model, False)
        job = translate.completion_job(request, self.limits, streaming=streamed)
        return Call(*self.submit(who, job, idempotency_key, traceparent), request.model, streamed)

    def start_embedding(self, who: Principal, request: EmbeddingRequest, idempotency_key: str | None = None,
                        traceparent: str | None = None) -> Call:
        if self._check_model(request.model):
            raise InvalidRequest("model: a council answers chat completions only", field="model")
        job = translate.embedding_job(request, self.limits)
        return Call(*self.submit(who, job, idempotency_key, traceparent), request.model)

    def chat(self, who: Principal, call: Call, budget_s: float | None = None) -> ChatCompletion:
        return translate.chat_completion(self.wait(who, call.job_id, budget_s), call.model)

    def completion(self, who: Principal, call: Call, budget_s: float | None = None) -> Completion:
        return translate.completion(self.wait(who, call.job_id, budget_s), call.model)

    def embedding(self, who: Principal, call: Call, encoding_format: str, budget_s: float | None = None) -> EmbeddingList:
        return translate.embedding_list(self.wait(who, call.job_id, budget_s), call.model, encoding_format)

    # --- waiting -------------------------------------------------------------------------------

    def _pauses(self) -> Iterator[float]:
        yield from FIRST_LOOKS_S
        while True:
            yield self.settings.poll_s

    def wait(self, who: Principal, job_id: str, budget_s: float | None = None) -> Job:
        """The job once it has ended COMPLETED; its failure as a domain error; GatewayTimeout past the budget."""
        budget = self.settings.wait_s if budget_s is None else min(budget_s, self.settings.wait_s)
        deadline = self.clock() + budget
        for pause in self._pauses():
            job = self.jobs.get(job_id, who.tenant_id)
            if job.status.terminal:
                return finished(job)
            left = deadline - self.clock()
            if left <= 0:
                raise still_running(job_id, budget)
            self.sleep(min(pause, left))
        raise AssertionError("unreachable")  # _pauses never ends

    def stream(self, who: Principal, call: Call, kind: str, include_usage: bool) -> Iterator[str]:
        """Server-sent events of the call's job in OpenAI's chunk format, ending with `data: [DONE]`.

        Nothing is yielded before the first chunk, and a failure raises a domain error whenever it comes:
        the HTTP front answers one raised before the first chunk with an error status, and ends a stream
        that has begun with an error event (no [DONE]): `openai_stream.sse_answer`."""
        return _Stream(self, who, call, kind, include_usage).events()


def finished(job: Job) -> Job:
    """A terminal job's answer, or why it has none."""
    if job.status is JobStatus.COMPLETED:
        return job
    if job.status is JobStatus.CANCELLED:
        raise JobCancelled(f"job {job.id} was cancelled")
    detail = job.error or job.status.value
    if job.error_class is not None and not job.error_class.retryable:
        raise JobRefused(f"job {job.id} failed: {detail}")
    raise JobFailed(f"job {job.id} failed after {job.attempts} attempt(s): {detail}")


def still_running(job_id: str, budget_s: float) -> GatewayTimeout:
    return GatewayTimeout(
        f"job {job_id} has not finished within {budget_s:g} s; it goes on. Its answer: repeat this request "
        f"with the same Idempotency-Key, or GET /v1/jobs/{job_id}", job_id=job_id)


def sse(data: Any) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, separators=(',', ':'))}\n\n"


DONE = sse("[DONE]")


class _Stream:
    """One call's stream: the chunks as they come, then the end (see FrontDoor.stream)."""

    def __init__(self, door: FrontDoor, who: Principal, call: Call, kind: str, include_usage: bool) -> None:
        self.door, self.who, self.call, self.kind, self.include_usage = door, who, call, kind, include_usage
        self.sent = ""  # the text sent so far
        self.attempt: int | None = None  # the attempt whose chunks were sent
        self.created = int(time.time())
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        self.id = f"{prefix}-{call.job_id}"

    # --- chunk shapes ---------------------------------------------------------------------------
    def _chunk(self, text: str | None, finish_reason: str | None = None, role: bool = False) -> str:
        if self.kind == "chat":
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            body: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                    "model": self.call.model, "choices": [choice]}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}
            body = {"id": self.id, "object": "text_completion", "created": self.created, "model": self.call.model,
                    "choices": [choice]}
        if self.include_usage:
            body["usage"] = None
        return sse(body)

    def _usage(self, result: dict[str, Any]) -> str:
        kind = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return sse({"id": self.id, "object": kind, "created": self.created, "model": self.call.model,
                    "choices": [], "usage": translate.usage_of(result).model_dump()})

    # --- the stream ------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self.attempt is not None

    def _text(self, text: str, attempt: int) -> Iterator[str]:
        if not self.started:
            self.attempt = attempt
            if self.kind == "chat":
                yield self._chunk("", role=True)
        if text:
            self.sent += text
            yield self._chunk(text)

    def events(self) -> Iterator[str]:
        door = self.door
        deadline = door.clock() + door.settings.stream_max_s
        for pause in door._pauses() if not self.call.streamed else _every(STREAM_POLL_S):
            try:
                status, attempt, chunks = self._look()
            except ServiceUnavailable as err:  # RunPod unreachable for a moment: nothing is lost, look again
                log.warning("stream of job %s: %s", self.call.job_id, err.message)
                status, attempt, chunks = None, self.attempt, []
            if self.started and attempt is not None and attempt != self.attempt:
                raise JobFailed(f"job {self.call.job_id}: the attempt that was streaming failed after its first "
                                "chunk; the job is retried, but this stream cannot go on")
            for out in chunks:
                if isinstance(out, dict) and out.get("error") is not None:
                    break  # the attempt failed: the job's status says what follows (a retry, or the end)
                text = out.get("text") if isinstance(out, dict) else out
                yield from self._text("" if text is None else str(text), attempt or 0)
            if status is not None and status.terminal:
                yield from self._end()
                return
            if door.clock() >= deadline:
                raise still_running(self.call.job_id, door.settings.stream_max_s)
            door.sleep(pause)

    def _look(self) -> tuple[JobStatus | None, int | None, list[Any]]:
        if self.call.streamed:
            page = self.door.streams.read(self.who, self.call.job_id)
            return page.status, page.attempt, [c.get("output") for c in page.stream]
        job = self.door.jobs.get(self.call.job_id, self.who.tenant_id)
        return job.status, None, []

    def _end(self) -> Iterator[str]:
        job = self.door.jobs.get(self.call.job_id, self.who.tenant_id)
        finished(job)
        result, _ = translate.generation_of(job)
        full = str(result.get("text") or "")
        # The job's output is the whole answer: whatever the reads missed (RunPod keeps one read cursor
        # per job) is sent now. A text that does not continue what was sent came from another attempt.
        if full.startswith(self.sent):
            yield from self._text(full[len(self.sent):], self.attempt or job.attempts)
        elif self.started:
            raise JobFailed(f"job {job.id}: its answer came from another attempt than the one streamed; read it "
                            f"at GET /v1/jobs/{job.id}")
        yield self._chunk(None, translate.finish_reason_of(result))
        if self.include_usage:
            yield self._usage(result)
        yield DONE


def _every(seconds: float) -> Iterator[float]:
    while True:
        yield seconds


__all__ = ["Call", "FrontDoor", "JobCancelled", "JobFailed", "JobRefused"]
