"""OpenTelemetry spans for the embedded stack: one span per job a function works on, in the job's own W3C
trace, exported by OTLP/HTTP only when OTEL_EXPORTER_OTLP_ENDPOINT is set (the SDK reads its usual
OTEL_* variables), so a local run can be looked at in Jaeger or any OTLP collector.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from stillhouse.telemetry.tracing import JobContext


class OtelSpans:
    """A span starter (stillhouse.telemetry.tracing.add_span_starter) with its own TracerProvider (the
    process-global one is left to whoever embeds the stack)."""

    def __init__(self, exporter: SpanExporter | None = None, environ: Mapping[str, str] = os.environ) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": "stillhouse"}))
        if exporter is not None:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("stillhouse")

    @contextmanager
    def __call__(self, name: str, ctx: JobContext) -> Iterator[str]:
        parent = SpanContext(int(ctx.trace.trace_id, 16), int(ctx.trace.span_id, 16), is_remote=True,
                             trace_flags=TraceFlags(int(ctx.trace.flags, 16)))
        with self.tracer.start_as_current_span(name, context=set_span_in_context(NonRecordingSpan(parent)),
                                               attributes={"stillhouse.job_id": ctx.job_id}) as span:
            yield format(span.get_span_context().span_id, "016x")

    def shutdown(self) -> None:
        self.provider.shutdown()
