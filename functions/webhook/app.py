"""Webhook Lambda: RunPod's result POST -> record the job's terminal status once, notify the caller."""
from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths

from stillhouse.container import startup_check
from stillhouse.http.runpod_callbacks import app
from stillhouse.telemetry.metrics import log_metrics
from stillhouse.telemetry.tracing import lambda_tracer

tracer = lambda_tracer()  # X-Ray on AWS (Tracing: Active); nothing, and no X-Ray SDK import, elsewhere

startup_check()  # every setting validated now (Lambda init), not at first use

# Its own root logger (the module's child logger attaches to it): importing the public API's only for
# its logger cost this function the whole API at every cold start (idempotency, streams, ...).
logger = Logger(service="stillhouse")


@tracer.capture_lambda_handler
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@log_metrics
def handler(event: dict, context: object) -> dict:
    return app.resolve(event, context)
