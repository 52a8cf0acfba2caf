"""Sweeper Lambda: the 1-minute schedule settles stale jobs; {"action": "redrive"} empties the DLQs."""
from aws_lambda_powertools import Logger

from stillhouse.container import container, startup_check

startup_check()  # every setting validated now (Lambda init), not at first use

logger = Logger(service="stillhouse")


@logger.inject_lambda_context
def handler(event: dict, context: object) -> dict:
    if event.get("action") == "redrive":
        return {"redriven": container().queue.redrive_dlqs(),
                "webhooks_redriven": container().delivery_queue.redrive_dlq()}
    result = container().sweeper.sweep(stale_after_s=event.get("stale_after_s"))
    logger.info("sweep done", extra={"result": result})
    return result
