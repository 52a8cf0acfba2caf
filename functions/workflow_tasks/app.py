"""Workflow tasks Lambda: one Step Functions task event -> one call of the core.

A raised exception's class name (TransientError, CapacityError, ...) is the error name that the
state machines' Retry and Catch blocks match.
"""
from aws_lambda_powertools import Logger

from stillhouse import snapstart
from stillhouse.telemetry.metrics import log_metrics
from stillhouse.telemetry.tracing import job_context, lambda_tracer

logger = Logger(service="stillhouse")
tracer = lambda_tracer()  # X-Ray on AWS (Tracing: Active); nothing, and no X-Ray SDK import, elsewhere

snapstart.prepare()  # the core loads at first use, or before a SnapStart snapshot


@tracer.capture_lambda_handler
@logger.inject_lambda_context(correlation_id_path="job_id")
@log_metrics
def handler(event: dict, context: object) -> dict:
    from stillhouse.container import container  # the core: loaded with the first event (warm)

    state = event.get("state") or {}  # council_record gets the whole workflow state
    job_id = event.get("job_id") or state.get("job_id") or ""
    with job_context(job_id, event.get("traceparent") or state.get("traceparent"), event.get("action", "task")):
        return container().workflow_tasks.handle(event)
