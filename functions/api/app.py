"""API Lambda: API Gateway HTTP API (v2) events -> the stillhouse HTTP API."""
from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths

from stillhouse import snapstart
from stillhouse.telemetry.metrics import log_metrics
from stillhouse.telemetry.tracing import lambda_tracer

tracer = lambda_tracer()  # X-Ray on AWS (Tracing: Active); nothing, and no X-Ray SDK import, elsewhere
logger = Logger(service="stillhouse")  # the root the API's own (child) logger attaches to

# The routes, their models and the core load with the first request (a cold start pays only this
# module's imports); with SnapStart, before the snapshot instead (stillhouse/snapstart.py).
snapstart.prepare("stillhouse.http.public_api")


@tracer.capture_lambda_handler
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@log_metrics
def handler(event: dict, context: object) -> dict:
    from stillhouse.http.public_api import serve

    return serve(event, context)  # the answer, and the request's access line with the caller's key id
