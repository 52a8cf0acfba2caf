"""Traces: a W3C traceparent read or started once per job, carried by every hop, on every log line."""
from __future__ import annotations

import io
import json
import logging

import pytest
from aws_lambda_powertools import Logger
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from stillhouse_local.otel import OtelSpans

from stillhouse.jobs.queue import trace_attributes
from stillhouse.telemetry import tracing
from stillhouse.telemetry.tracing import TraceContext, job_context
from stillhouse.workflows.stepfunctions import Workflows

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.mark.parametrize("value", [None, "", "garbage", f"00-{'0' * 32}-00f067aa0ba902b7-01",
                                   f"00-{TRACE}-{'0' * 16}-01", f"ff-{TRACE}-00f067aa0ba902b7-01",
                                   f"00-{TRACE[:-1]}-00f067aa0ba902b7-01"])
def test_a_missing_or_malformed_traceparent_is_no_trace(value):
    assert TraceContext.parse(value) is None


def test_a_traceparent_reads_back_and_each_hop_gets_its_own_span():
    ctx = TraceContext.parse(PARENT.upper())
    assert ctx.traceparent == PARENT
    hop = ctx.child()
    assert hop.trace_id == TRACE and hop.span_id != ctx.span_id


def test_inside_a_job_context_hops_carry_the_trace_and_outside_nothing_does():
    assert tracing.outgoing() is None and trace_attributes() == {}
    with job_context("j1", PARENT):
        sent = trace_attributes()["MessageAttributes"]["traceparent"]["StringValue"]
        assert TraceContext.parse(sent).trace_id == TRACE
        assert tracing.current().job_id == "j1"
    with job_context("j2", TRACE):  # a job's stored trace id works too
        assert TraceContext.parse(tracing.outgoing()).trace_id == TRACE
    with job_context("j3", None):  # no trace: one starts
        assert TraceContext.parse(tracing.outgoing()).trace_id != TRACE
    assert tracing.current() is None


def test_log_lines_inside_carry_job_and_trace_and_an_outer_jobs_keys_come_back():
    logger = Logger(service="stillhouse")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logger.registered_formatter)
    logger._logger.addHandler(handler)  # the formatter's keys, written to our own stream
    logger.remove_keys(["job_id", "trace_id"])  # whatever an earlier test's request left on the shared logger
    try:
        with job_context("outer", PARENT):
            with job_context("inner", None):
                logger.info("inner line")
            logger.info("outer line")
        logger.info("no job")
    finally:
        logger._logger.removeHandler(handler)
    inner, outer, none = (json.loads(line) for line in out.getvalue().splitlines())
    assert inner["job_id"] == "inner" and inner["trace_id"] != TRACE
    assert (outer["job_id"], outer["trace_id"]) == ("outer", TRACE)
    assert "job_id" not in none and "trace_id" not in none


def test_a_workflow_starts_with_the_jobs_traceparent_in_its_input():
    class Sfn:
        def start_execution(self, **kw):
            self.input = json.loads(kw["input"])
            return {"executionArn": "arn:exec"}

    sfn = Sfn()
    with job_context("j1", PARENT):
        Workflows(sfn, "arn:recovery", "arn:council").start_recovery("j1", 1)
    assert TraceContext.parse(sfn.input["traceparent"]).trace_id == TRACE
    Workflows(sfn, "arn:recovery", "arn:council").start_recovery("j2", 1)
    assert TraceContext.parse(sfn.input["traceparent"])  # always there: the state machines pass it on


def test_embedded_spans_join_the_jobs_trace_and_become_the_next_hops_parent():
    exporter = InMemorySpanExporter()
    spans = OtelSpans(exporter=exporter, environ={})
    tracing.add_span_starter(spans)
    try:
        with job_context("j1", PARENT, "dispatch"):
            sent = TraceContext.parse(tracing.current().trace.traceparent)
    finally:
        tracing.remove_span_starter(spans)
        spans.shutdown()
    (span,) = exporter.get_finished_spans()
    assert span.name == "dispatch" and span.attributes["stillhouse.job_id"] == "j1"
    assert format(span.context.trace_id, "032x") == TRACE
    assert format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert sent.span_id == format(span.context.span_id, "016x")


def test_nothing_is_exported_unless_an_otlp_endpoint_is_configured():
    spans = OtelSpans(environ={})
    assert not spans.provider._active_span_processor._span_processors
    spans.shutdown()


def test_a_function_makes_powertools_tracer_only_where_x_ray_records_it(monkeypatch):
    import aws_lambda_powertools

    from stillhouse.telemetry.tracing import lambda_tracer

    made: list[str] = []

    class Tracer:  # Powertools' would patch botocore for the whole test process
        def __init__(self, service):
            made.append(service)

    monkeypatch.setattr(aws_lambda_powertools, "Tracer", Tracer)

    def handler(event, context):
        return event

    monkeypatch.delenv("LAMBDA_TASK_ROOT", raising=False)
    assert lambda_tracer().capture_lambda_handler(handler) is handler
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")  # the template's Tracing=PassThrough
    assert lambda_tracer().capture_lambda_handler(handler) is handler
    assert made == []
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")  # Tracing=Active
    assert isinstance(lambda_tracer().tracer, Tracer) and made == ["stillhouse"]


def test_a_traced_function_imports_x_ray_at_its_first_event_or_before_its_snapshot(monkeypatch):
    # Making a Tracer imports the X-Ray SDK and patches botocore: hundreds of ms of a cold import.
    import aws_lambda_powertools

    from stillhouse.telemetry import tracing as tracing_module

    made: list[str] = []

    class Tracer:
        def __init__(self, service):
            made.append(service)

        def capture_lambda_handler(self, handler=None, capture_response=None, capture_error=None):
            return handler

    monkeypatch.setattr(aws_lambda_powertools, "Tracer", Tracer)
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")
    monkeypatch.delenv("AWS_SAM_LOCAL", raising=False)
    monkeypatch.setattr(tracing_module, "_traced", [])
    handler = tracing_module.lambda_tracer().capture_lambda_handler(lambda event, context: event)
    assert made == []  # the module's import (the function's init) built nothing
    assert handler({"n": 1}, None) == {"n": 1} and handler({"n": 2}, None) == {"n": 2}
    assert made == ["stillhouse"]  # once, at the first event
    tracing_module.lambda_tracer().capture_lambda_handler(lambda event, context: event)
    tracing_module.warm_tracers()  # SnapStart's before-snapshot hook builds what is left
    assert made == ["stillhouse", "stillhouse"]


def test_on_aws_the_handlers_tracer_records_neither_the_response_nor_the_error(monkeypatch):
    # Responses carry API keys (shown once), webhook secrets and job outputs: none may become X-Ray metadata.
    import aws_lambda_powertools

    decorated = []

    class Tracer:  # Powertools' Tracer as lambda_tracer uses it; the real one would patch botocore here
        def __init__(self, **kwargs):
            pass

        def capture_lambda_handler(self, handler=None, capture_response=None, capture_error=None):
            decorated.append((capture_response, capture_error))
            return handler

    monkeypatch.setattr(aws_lambda_powertools, "Tracer", Tracer)
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")
    monkeypatch.delenv("AWS_SAM_LOCAL", raising=False)

    def handler(event, context):
        return {"api_key": "sh_shown_once"}

    assert tracing.lambda_tracer().capture_lambda_handler(handler)({}, None) == {"api_key": "sh_shown_once"}
    assert decorated == [(False, False)]
