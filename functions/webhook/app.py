"""Webhook Lambda: RunPod's result POST -> record the job's terminal status once, notify the caller."""
from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths

from stillhouse.http.runpod_callbacks import app

# Its own root logger (the module's child logger attaches to it): importing the public API's only for
# its logger cost this function the whole API at every cold start (idempotency, streams, ...).
logger = Logger(service="stillhouse")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def handler(event: dict, context: object) -> dict:
    return app.resolve(event, context)
