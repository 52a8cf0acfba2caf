"""Sweeper Lambda: each scheduled run settles due jobs in rounds; {"action": "redrive"} empties the DLQs."""
from aws_lambda_powertools import Logger

from stillhouse import snapstart
from stillhouse.telemetry.metrics import log_metrics
from stillhouse.telemetry.tracing import lambda_tracer

logger = Logger(service="stillhouse")
tracer = lambda_tracer()  # X-Ray on AWS (Tracing: Active); nothing, and no X-Ray SDK import, elsewhere

snapstart.prepare()  # the core loads at first use, or before a SnapStart snapshot


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@log_metrics
def handler(event: dict, context: object) -> dict:
    from stillhouse.container import container  # the core: loaded with the first event (warm)

    if event.get("action") == "redrive":
        return {"redriven": container().queue.redrive_dlqs(),
                "webhooks_redriven": container().delivery_queue.redrive_dlq()}
    if event.get("detail-type") == "Scheduled Event":
        result = container().sweep_rounds.run()
    else:  # invoked by hand: one round, `ahead_s` to look at jobs due later too
        result = container().sweeper.sweep(ahead_s=float(event.get("ahead_s", 0)))
    logger.info("sweep done", extra={"result": result})
    return result
