"""Webhook Lambda: RunPod's result POST -> record the job's terminal status once, notify the caller."""
from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths

from stillhouse import snapstart
from stillhouse.telemetry.metrics import log_metrics
from stillhouse.telemetry.tracing import lambda_tracer

tracer = lambda_tracer()  # X-Ray on AWS (Tracing: Active); nothing, and no X-Ray SDK import, elsewhere

# Its own root logger (the module's child logger attaches to it): importing the public API's only for
# its logger cost this function the whole API at every cold start (idempotency, streams, ...).
logger = Logger(service="stillhouse")

# The callback route and the core load with the first callback (a cold start pays only this module's
# imports); with SnapStart, before the snapshot instead (stillhouse/snapstart.py).
snapstart.prepare("stillhouse.http.runpod_callbacks")


@tracer.capture_lambda_handler
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@log_metrics
def handler(event: dict, context: object) -> dict:
    from stillhouse.http.runpod_callbacks import app

    return app.resolve(event, context)
