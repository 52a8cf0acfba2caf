"""A caller's receiver holds one try no longer than its deadline, and we read no more of its answer than the
status and headers (a few KB): whether it drips its answer a byte at a time or sends a gigabyte, it costs
the delivery function one bounded try, and its own tenant one try. Real receivers on 127.0.0.1."""
import time

import pytest

from stillhouse.delivery.destinations import ANSWER_HEAD_MAX_BYTES, WebhookGuard, loopback_only_resolver
from stillhouse.delivery.webhooks import DeliveryFailed, GuardedPost
from tests.support.receivers import Dripping, Flooding, HugeHead
from tests.support.stack import Receiver

DEADLINE_S = 1.0


@pytest.fixture
def post():
    return GuardedPost(WebhookGuard(allow_loopback=True, resolve=loopback_only_resolver))


@pytest.fixture
def receivers():
    made = []

    def make(kind, *args, **kwargs):
        made.append(kind(*args, **kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.stop()


def test_a_receiver_that_answers_is_posted_to_as_before(post):
    receiver = Receiver()
    try:
        assert post(receiver.url, b'{"id": "j1"}', {"Content-Type": "application/json"}, DEADLINE_S) == 200
        assert receiver.calls[0]["json"] == {"id": "j1"}
    finally:
        receiver.close()


def test_a_receiver_that_drips_its_answer_is_cut_off_at_the_tries_deadline(post, receivers):
    """One byte every 0.3 s: each read is quick, so per-read timeouts never end it; the deadline does."""
    dripping = receivers(Dripping, every_s=0.3)
    started = time.monotonic()
    with pytest.raises(DeliveryFailed, match="deadline of 1 s"):
        post(dripping.url, b"{}", {}, DEADLINE_S)
    assert time.monotonic() - started < DEADLINE_S + 4  # the old code waited as long as it dripped (30 s)


def test_of_a_receiver_that_sends_a_gigabyte_only_the_status_is_read(post, receivers):
    flooding = receivers(Flooding)
    started = time.monotonic()
    assert post(flooding.url, b"{}", {}, DEADLINE_S) == 200
    assert time.monotonic() - started < DEADLINE_S + 4
    time.sleep(0.5)  # it writes until it notices we hung up: what socket buffers took, and no more
    assert flooding.sent < 32 * 2**20  # the old code read all it sent (256 MB here), into memory


def test_an_answer_whose_head_runs_past_a_few_kb_is_a_failed_try(post, receivers):
    """Headers of 3 MB, each line under http.client's own limits: we stop at ANSWER_HEAD_MAX_BYTES."""
    huge = receivers(HugeHead)
    with pytest.raises(DeliveryFailed, match=f"over {ANSWER_HEAD_MAX_BYTES} bytes"):
        post(huge.url, b"{}", {}, DEADLINE_S)
