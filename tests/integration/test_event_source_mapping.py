"""An SQS event source mapping of the embedded stack runs up to N batches at once (StackOptions
.mapping_concurrency, capped by the mapping's MaximumConcurrency), as Lambda's does: each batch on an
instance of the function loaded apart, so no two batches in flight share module state (a Powertools
batch processor). The stack's own mappings run at the default, 1; this test runs a mapping at 3 on the
stack's moto."""
import uuid
from pathlib import Path

import pytest
from stillhouse_local.lambdas import FunctionRegistry, InProcessFunction
from stillhouse_local.pollers import QueuePoller
from stillhouse_local.template import FunctionSpec

from tests.support.batch_probe import PROBE
from tests.support.stack import settled

SUPPORT = Path(__file__).resolve().parents[1] / "support"
N = 3


@pytest.fixture
def sqs(stack):
    return stack.moto.client("sqs")


@pytest.fixture
def mapping(sqs):
    """A queue of 6 messages and a mapping at 3 batches of 1 at once onto tests/support/slow_batch_handler."""
    PROBE.reset()
    url = sqs.create_queue(QueueName=f"esm-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    for i in range(6):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    functions = FunctionRegistry()
    # As the stack sizes a queue's function: one instance per batch its mappings run at once.
    functions.add(InProcessFunction(FunctionSpec("SlowBatchFunction", SUPPORT, "slow_batch_handler.handler"),
                                    "slow-batch", concurrency=N, per_instance=True))
    poller = QueuePoller(sqs, url, "SlowBatchFunction", functions, batch_size=1, report_batch_item_failures=True,
                         wait_s=1, concurrency=N)
    poller.start()
    yield url
    PROBE.release(10)  # a test that failed midway leaves no batch waiting
    poller.stop()
    sqs.delete_queue(QueueUrl=url)


def test_a_mapping_runs_n_batches_at_once_never_more_each_on_its_own_instance(sqs, mapping):
    # Every batch waits in the handler until released: the mapping takes N of the 6 and stops there.
    assert settled(lambda: PROBE.active, lambda active: active >= N, timeout=15) == N
    # Given a second to overshoot, it does not take a 4th while N are in flight.
    assert settled(lambda: PROBE.active, lambda active: active > N, timeout=1.0) == N
    assert len(PROBE.instances_at_most_active) == N  # the N batches in flight ran on N distinct instances

    for finished in range(1, 7):  # one at a time: each one done frees a slot for the next batch
        PROBE.release()
        assert len(settled(lambda: PROBE.done, lambda done, f=finished: len(done) >= f, timeout=15)) == finished

    assert PROBE.most_active == N
    # No more instances loaded than batches at once: an idle instance takes the next batch.
    assert len({instance for instance, _ in PROBE.started}) == N
    # Each instance's batch processor handled exactly its own batch: no state shared between batches in flight.
    assert sorted(handled for _, handled in PROBE.done) == [[f"m{i}"] for i in range(6)]

    def left(_=None):
        attrs = sqs.get_queue_attributes(QueueUrl=mapping, AttributeNames=["All"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    assert settled(left, lambda n: n == 0, timeout=10) == 0  # every batch that succeeded was deleted
