"""OpenAI-compatible routes: GET /v1/models[/{id}], POST /v1/chat/completions, /v1/completions, /v1/embeddings.

Each call is a job (`openai_compat.front_door`). Behind API Gateway's HTTP API an answer is buffered, so a
`stream: true` call gets its whole event stream at once, in the same format; the streaming front
(`http/openai_stream.py`, a Function URL in RESPONSE_STREAM mode) sends it as it is made. Errors come in
OpenAI's shape (http.resolver picks it by path)."""
from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Path

from stillhouse.auth import Principal
from stillhouse.config import get_settings
from stillhouse.container import Container, container
from stillhouse.errors import StillhouseError
from stillhouse.http import streaming, submission
from stillhouse.http.resolver import JOB_ID_HEADER, http_status_of
from stillhouse.jobs.model import JobRequest
from stillhouse.jobs.streams import StreamReader
from stillhouse.openai_compat import errors as openai_errors
from stillhouse.openai_compat.front_door import Call, FrontDoor, sse
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
from stillhouse.telemetry import tracing

router = Router()
#: Time a Lambda keeps for answering after it stops waiting for the job.
ANSWER_MARGIN_S = 2.0

IdempotencyKey = Annotated[str | None, Header(alias="idempotency-key", max_length=200)]
TraceParent = Annotated[str | None, Header(alias="traceparent", max_length=200)]


def front_door() -> FrontDoor:
    return _front_door(container())


@lru_cache(maxsize=1)  # one per container: a reset (another backend, new settings) builds a new one
def _front_door(built: Container) -> FrontDoor:
    settings = built.settings
    return FrontDoor(submit=_submit, jobs=built.job_store,
                     streams=StreamReader(built.job_store, built.registry, built.runpod.client_for),
                     fleet=built.registry, settings=settings.openai, limits=settings.input_limits)


def _submit(who: Principal, request: JobRequest, idempotency_key: str | None,
            traceparent: str | None) -> tuple[str, str | None]:
    accepted = submission.submit(who, request, idempotency_key, traceparent, router.lambda_context)
    return accepted["id"], accepted.get("trace_id")


def budget_s(lambda_context: Any) -> float:
    """How long this call may wait: the setting, within what the function has left."""
    wait_s = get_settings().openai.wait_s
    remaining = getattr(lambda_context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return wait_s
    return max(0.0, min(wait_s, remaining() / 1000 - ANSWER_MARGIN_S))


def call_headers(call: Call) -> dict[str, str]:
    """The job behind the answer, and the trace it joined (a `traceparent` for the caller's next hop)."""
    headers = {JOB_ID_HEADER: call.job_id}
    if traceparent := tracing.hop(call.trace_id):
        headers[tracing.HEADER] = traceparent
    return headers


def error_event(err: StillhouseError) -> str:
    status = int(http_status_of(err))
    return sse({"error": openai_errors.error_detail(status, err.code, err.message, err.field)})


def sse_answer(events: Iterator[str]) -> Iterator[str]:
    """The events of a stream that has begun; a failure from then on is an error event (OpenAI's SDKs raise
    it as APIError), never a silent end. The first event is asked for by the caller, so that a failure
    before it is still an ordinary HTTP error."""
    try:
        yield from events
    except StillhouseError as err:
        yield error_event(err)


def first_and_rest(events: Iterator[str]) -> Iterator[str]:
    """Takes the first event now (raising what fails before it), then gives it back with the rest."""
    first = next(events, None)

    def rest() -> Iterator[str]:
        if first is not None:
            yield first
        yield from sse_answer(events)

    return rest()


def _principal() -> Principal:
    return router.context["principal"]


def _stream_response(call: Call, events: Iterator[str]) -> Response:
    """(The route's answer is `X | str`: the str is this event stream, so that response validation passes it.)"""
    events = first_and_rest(events)  # what fails before the first event raises here: an HTTP error
    headers = {**call_headers(call), "cache-control": "no-cache"}
    if streaming.accepts():  # the streaming front sends the events as they come
        streaming.hold(events)
        return Response(status_code=200, content_type="text/event-stream", body="", headers=headers)
    body = "".join(events)  # buffered: API Gateway's HTTP API cannot stream
    return Response(status_code=200, content_type="text/event-stream", body=body, headers=headers)


def _answer(call: Call, body: Any) -> Response:
    return Response(status_code=200, content_type="application/json", body=body, headers=call_headers(call))


@router.get("/v1/models")
def list_models() -> ModelList:
    """The models this caller may name (OpenAI's `models.list`)."""
    return front_door().models()


@router.get("/v1/models/<model_id>")
def get_model(model_id: Annotated[str, Path(max_length=600)]) -> Model:
    return front_door().model(model_id)


@router.post("/v1/chat/completions", responses={200: {"description": "a chat completion, or its event stream"}})
def chat_completions(request: ChatCompletionRequest, idempotency_key: IdempotencyKey = None,
                     traceparent: TraceParent = None) -> ChatCompletion | str:
    """OpenAI's chat completion, run as a `generate` job (or a council: `model: "council:a,b,c"`)."""
    who, door = _principal(), front_door()
    call = door.start_chat(who, request, idempotency_key, traceparent)
    if request.stream:
        return _stream_response(call, door.stream(who, call, "chat", request.include_usage))
    return _answer(call, door.chat(who, call, budget_s(router.lambda_context)))


@router.post("/v1/completions", responses={200: {"description": "a completion, or its event stream"}})
def completions(request: CompletionRequest, idempotency_key: IdempotencyKey = None,
                traceparent: TraceParent = None) -> Completion | str:
    """OpenAI's (legacy) completion: the prompt is sent as it is, with no chat template."""
    who, door = _principal(), front_door()
    call = door.start_completion(who, request, idempotency_key, traceparent)
    if request.stream:
        return _stream_response(call, door.stream(who, call, "text", request.include_usage))
    return _answer(call, door.completion(who, call, budget_s(router.lambda_context)))


@router.post("/v1/embeddings")
def embeddings(request: EmbeddingRequest, idempotency_key: IdempotencyKey = None,
               traceparent: TraceParent = None) -> EmbeddingList:
    who, door = _principal(), front_door()
    call = door.start_embedding(who, request, idempotency_key, traceparent)
    return _answer(call, door.embedding(who, call, request.encoding_format, budget_s(router.lambda_context)))
