"""Batches Lambda: a batch's control steps from SQS. `start` checks the lines and queues the chunks; `finish`
writes the output and error files once every chunk has ended. Each step is safe to run twice."""
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from stillhouse import snapstart
from stillhouse.batches.steps import read_step
from stillhouse.telemetry.metrics import log_metrics
from stillhouse.telemetry.tracing import lambda_tracer

logger = Logger(service="stillhouse")
tracer = lambda_tracer()  # X-Ray on AWS (Tracing: Active); nothing, and no X-Ray SDK import, elsewhere
processor = BatchProcessor(event_type=EventType.SQS)

snapstart.prepare()  # the core loads at first use, or before a SnapStart snapshot


def record_handler(record: SQSRecord) -> None:
    from stillhouse.container import container  # the core: loaded with the first event (warm)

    step = read_step(record.body)
    service = container().batch_service
    outcome = service.start(step.batch_id) if step.step == "start" else service.finish(step.batch_id)
    logger.info("batch step", extra={"batch_id": step.batch_id, "step": step.step, "outcome": outcome})


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@log_metrics
def handler(event: dict, context: object) -> dict:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
