"""A queue function that holds each batch until the test lets it go (tests/support/batch_probe.py), with
its batch processor at module level as functions/dispatch/app.py has: loaded once per instance."""
import uuid

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from tests.support.batch_probe import PROBE

INSTANCE = uuid.uuid4().hex  # this loaded instance
processor = BatchProcessor(event_type=EventType.SQS)  # module state, as Powertools' processors keep


def record_handler(record: SQSRecord) -> str:
    if not PROBE.releases.acquire(timeout=20):  # bounded: a stuck test fails instead of hanging
        raise TimeoutError("the test never released this batch")
    return record.body


def handler(event: dict, context: object) -> dict:
    bodies = [r["body"] for r in event["Records"]]
    PROBE.enter(INSTANCE, bodies)
    try:
        return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                        context=context)
    finally:
        # What this instance's processor handled: its own batch's records only, unless another batch shared it.
        PROBE.leave(INSTANCE, [m["body"] for m in processor.success_messages])
