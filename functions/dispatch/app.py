"""Dispatch Lambda: SQS batch of job ids -> submit each to RunPod; failures go back to the queue."""
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from stillhouse import wiring
from stillhouse.queue import job_id_of

logger = Logger(service="stillhouse")
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    job_id = job_id_of(record.body)
    logger.append_keys(job_id=job_id)
    receive_count = int(record.attributes.approximate_receive_count or 1)
    wiring.dispatcher().dispatch(job_id, receive_count)


@logger.inject_lambda_context
def handler(event: dict, context: object) -> dict:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
