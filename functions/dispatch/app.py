"""Dispatch Lambda: SQS batch of job ids -> submit each to RunPod; failures go back to the queue.

The records of a batch are dispatched concurrently (each waits on RunPod's /run), so the tenth job
of a batch does not queue behind the first nine.
"""
import asyncio

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from stillhouse import snapstart
from stillhouse.jobs.queue import read_message, traceparent_of
from stillhouse.telemetry.metrics import log_metrics
from stillhouse.telemetry.tracing import job_context, lambda_tracer

logger = Logger(service="stillhouse")
tracer = lambda_tracer()  # X-Ray on AWS (Tracing: Active); nothing, and no X-Ray SDK import, elsewhere
processor = AsyncBatchProcessor(event_type=EventType.SQS)

snapstart.prepare()  # the core loads at first use, or before a SnapStart snapshot


async def record_handler(record: SQSRecord) -> None:
    from stillhouse.container import container  # the core: loaded with the first event (warm)

    receive_count = int(record.attributes.approximate_receive_count or 1)
    message = read_message(record.body)
    with job_context(message.job_id, traceparent_of(record), "dispatch"):  # the thread below inherits it
        logger.info("dispatching", extra={"receive_count": receive_count})
        await asyncio.to_thread(container().dispatcher.dispatch, message.job_id, receive_count, message,
                                record.receipt_handle)


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@log_metrics
def handler(event: dict, context: object) -> dict:
    return async_process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                          context=context)
