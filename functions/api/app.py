"""API Lambda: API Gateway HTTP API (v2) events -> the stillhouse HTTP API."""
from aws_lambda_powertools.logging import correlation_paths

from stillhouse.container import startup_check
from stillhouse.http.public_api import app, logger

startup_check()  # every setting validated now (Lambda init), not at first use


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def handler(event: dict, context: object) -> dict:
    return app.resolve(event, context)
