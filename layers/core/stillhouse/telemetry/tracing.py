"""End-to-end traces: one W3C `traceparent` per job, from the caller's submit to the caller's webhook.

The API takes the caller's `traceparent` (or starts a trace) and the job keeps its `trace_id`. Every hop
passes it on: the SQS message attributes, the Step Functions input, the RunPod job's input (the worker
logs it), the callback URL and the caller's webhook (a `traceparent` header). A function working on a job
enters `job_context(job_id, traceparent)`: while inside, every log line carries `job_id` and `trace_id`,
and the outgoing hops read the trace from it, the way OpenTelemetry's context travels, so the domain code
between the handler and the hop does not pass it along by hand.

Spans: on AWS Powertools' Tracer (X-Ray) traces each function and is annotated with `job_id` and
`trace_id`; the embedded stack adds OpenTelemetry spans through `add_span_starter`
(stillhouse_local.otel).
"""
from __future__ import annotations

import functools
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

HEADER = "traceparent"
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

logger = Logger(service="stillhouse")  # the functions' logger: its keys are on every line of theirs


@dataclass(frozen=True)
class TraceContext:
    """A W3C trace context: the trace, the span a hop comes from, and whether it is sampled."""

    trace_id: str
    span_id: str
    flags: str = "01"

    @classmethod
    def parse(cls, value: str | None) -> TraceContext | None:
        """A `traceparent` header's value; None when absent or malformed (then a new trace starts)."""
        found = _TRACEPARENT.match((value or "").strip().lower())
        if not found or found.group(1) == "ff":
            return None
        _, trace_id, span_id, flags = found.groups()
        if trace_id == "0" * 32 or span_id == "0" * 16:
            return None
        return cls(trace_id, span_id, flags)

    @classmethod
    def new(cls) -> TraceContext:
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    @classmethod
    def of(cls, trace_id: str) -> TraceContext:
        """A hop of a known trace (a job's `trace_id`)."""
        return cls(trace_id, secrets.token_hex(8))

    def child(self) -> TraceContext:
        """The context of the next hop: same trace, a new span."""
        return TraceContext(self.trace_id, secrets.token_hex(8), self.flags)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


@dataclass(frozen=True)
class JobContext:
    job_id: str
    trace: TraceContext


_current: ContextVar[JobContext | None] = ContextVar("stillhouse_job_context", default=None)

#: (span name, job context) -> a context manager around the work: where spans are made. It may yield the
#: new span's id (16 hex digits): the next hops then name that span as their parent.
SpanStarter = Callable[[str, JobContext], AbstractContextManager[str | None]]


def _xray_enabled() -> bool:
    """Powertools' Tracer's own rule: in Lambda, not SAM local, not POWERTOOLS_TRACE_DISABLED."""
    disabled = os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").lower() in ("1", "true", "yes", "on")
    return bool(os.environ.get("LAMBDA_TASK_ROOT")) and not os.environ.get("AWS_SAM_LOCAL") and not disabled


class _Untraced:
    """A Tracer's handler decorator where nothing records traces."""

    @staticmethod
    def capture_lambda_handler(handler: Callable[..., Any]) -> Callable[..., Any]:
        return handler


class _Traced:
    """Powertools' Tracer whose handler decorator records neither the handler's response nor its error as
    trace metadata. Powertools' default records both, and every response is then kept in X-Ray: the API
    key `POST /v1/tenants` and `/keys` show once, webhook secrets, job outputs. The template also sets
    POWERTOOLS_TRACER_CAPTURE_RESPONSE and _CAPTURE_ERROR to false; this holds without them.

    Built at the first event, not at import: making a Tracer imports the X-Ray SDK and patches botocore
    (350-970 ms of a traced cold import on our measurements), and botocore itself loads with the first
    event. With SnapStart, `warm_tracers` builds it before the snapshot instead."""

    def __init__(self, service: str) -> None:
        self._service = service
        self._tracer: Any = None
        _traced.append(self)

    @property
    def tracer(self) -> Any:
        if self._tracer is None:
            from aws_lambda_powertools import Tracer

            self._tracer = Tracer(service=self._service)
        return self._tracer

    def capture_lambda_handler(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        traced: list[Callable[..., Any]] = []

        @functools.wraps(handler)
        def first_built(event: Any, context: Any) -> Any:
            if not traced:
                traced.append(self.tracer.capture_lambda_handler(handler, capture_response=False,
                                                                 capture_error=False))
            return traced[0](event, context)

        return first_built


_traced: list[_Traced] = []


def warm_tracers() -> None:
    """Build every handler's Tracer now (SnapStart's before-snapshot hook), not at the first event."""
    for traced in _traced:
        _ = traced.tracer


def lambda_tracer(service: str = "stillhouse") -> Any:
    """Powertools' Tracer where X-Ray records this function (on AWS, `Tracing: Active`), and a decorator
    that does nothing elsewhere. Either way the decorator never puts the handler's response or error into
    a trace (`_Traced`), and nothing imports the X-Ray SDK before the first event."""
    if not _xray_enabled():
        return _Untraced()
    return _Traced(service)


@contextmanager
def xray_subsegment(name: str, ctx: JobContext) -> Iterator[None]:
    """On AWS: one X-Ray subsegment per job a function works on, annotated so that X-Ray's console finds
    a job's segments by `job_id` or by our `trace_id`."""
    if not _xray_enabled():
        yield None
        return
    from aws_lambda_powertools import Tracer

    with Tracer(service="stillhouse").provider.in_subsegment(f"## {name}") as subsegment:
        subsegment.put_annotation("job_id", ctx.job_id)
        subsegment.put_annotation("trace_id", ctx.trace.trace_id)
        yield None


_span_starters: list[SpanStarter] = [xray_subsegment]


def add_span_starter(starter: SpanStarter) -> None:
    _span_starters.append(starter)


def remove_span_starter(starter: SpanStarter) -> None:
    if starter in _span_starters:
        _span_starters.remove(starter)


def current() -> JobContext | None:
    return _current.get()


def outgoing() -> str | None:
    """The `traceparent` to send on the next hop of the job being worked on (None outside a job)."""
    ctx = _current.get()
    return ctx.trace.child().traceparent if ctx else None


def hop(trace_id: str | None) -> str | None:
    """The `traceparent` of a hop of the job whose trace is `trace_id` (a job read from the store)."""
    return TraceContext.of(trace_id).traceparent if trace_id else None


@contextmanager
def job_context(job_id: str, trace: str | TraceContext | None, span: str = "job") -> Iterator[JobContext]:
    """Work on `job_id` within its trace (`trace`: a traceparent or a job's trace id; None: a new trace).
    Log lines inside carry job_id and trace_id, in this thread only (a batch handles jobs concurrently)."""
    if isinstance(trace, str):
        trace = TraceContext.parse(trace) or (TraceContext.of(trace) if re.fullmatch(r"[0-9a-f]{32}", trace)
                                              else None)
    ctx = JobContext(job_id, trace or TraceContext.new())
    token = _current.set(ctx)
    before = logger.thread_safe_get_current_keys()
    logger.thread_safe_append_keys(job_id=job_id, trace_id=ctx.trace.trace_id)
    try:
        starters = list(_span_starters)  # a copy: an embedded stack may add or remove one meanwhile
        with ExitStack() as spans:
            for start in starters:
                span_id = spans.enter_context(start(span, ctx))
                if span_id:  # this hop's own span: the next hops' parent
                    ctx = JobContext(job_id, TraceContext(ctx.trace.trace_id, span_id, ctx.trace.flags))
                    _current.set(ctx)
            yield ctx
    finally:
        _current.reset(token)
        logger.thread_safe_remove_keys(["job_id", "trace_id"])
        if {"job_id", "trace_id"} & set(before):  # an enclosing job context's keys come back
            logger.thread_safe_append_keys(**{k: before[k] for k in ("job_id", "trace_id") if k in before})
