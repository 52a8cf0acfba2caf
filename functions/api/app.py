"""API Lambda: API Gateway HTTP API (v2) events -> the stillhouse HTTP API."""
from aws_lambda_powertools.logging import correlation_paths

from stillhouse.container import startup_check
from stillhouse.http.public_api import logger, serve
from stillhouse.telemetry.metrics import log_metrics
from stillhouse.telemetry.tracing import lambda_tracer

tracer = lambda_tracer()  # X-Ray on AWS (Tracing: Active); nothing, and no X-Ray SDK import, elsewhere

startup_check()  # every setting validated now (Lambda init), not at first use


@tracer.capture_lambda_handler
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@log_metrics
def handler(event: dict, context: object) -> dict:
    return serve(event, context)  # the answer, and the request's access line with the caller's key id
