"""Delivery Lambda: SQS batch of finished jobs' notices -> one signed POST to each caller's webhook.

The notices of a batch are tried all at once (`try_notice`: each waits on its caller's endpoint at most
its try's deadline), so a slow caller holds neither the others' notices nor the batch past the timeout.
A failed try stays in the queue (partial batch failure) and comes back after the schedule's next delay.
"""
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from stillhouse import snapstart
from stillhouse.jobs.queue import traceparent_of
from stillhouse.telemetry.metrics import log_metrics
from stillhouse.telemetry.tracing import job_context, lambda_tracer

logger = Logger(service="stillhouse")
tracer = lambda_tracer()  # X-Ray on AWS (Tracing: Active); nothing, and no X-Ray SDK import, elsewhere
processor = AsyncBatchProcessor(event_type=EventType.SQS)

snapstart.prepare("stillhouse.delivery.webhooks")  # the core loads at first use, or before a SnapStart snapshot


async def record_handler(record: SQSRecord) -> None:
    from stillhouse.container import container  # the core: loaded with the first event (warm)
    from stillhouse.delivery.webhooks import read_notice, try_notice

    notice = read_notice(record.body)
    with job_context(notice.job_id, traceparent_of(record), "deliver"):  # the try's thread inherits it
        await try_notice(container().deliverer, notice, int(record.attributes.approximate_receive_count or 1),
                         record.receipt_handle)


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@log_metrics
def handler(event: dict, context: object) -> dict:
    return async_process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                          context=context)
