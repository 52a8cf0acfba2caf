"""Webhook Lambda: RunPod's result POST -> record the job's terminal status once, notify the caller."""
from aws_lambda_powertools.logging import correlation_paths

from stillhouse.container import startup_check
from stillhouse.http.public_api import logger
from stillhouse.http.runpod_callbacks import app

startup_check()  # every setting validated now (Lambda init), not at first use


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def handler(event: dict, context: object) -> dict:
    return app.resolve(event, context)
