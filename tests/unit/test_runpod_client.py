"""RunPod's HTTP answers, classified: what the router does next depends on who is at fault."""
import pytest

from stillhouse.errors import ErrorClass
from stillhouse.runpod.client import classify_status


@pytest.mark.parametrize(("status_code", "error_class"), [
    (429, ErrorClass.CAPACITY),
    (500, ErrorClass.TRANSIENT),
    (503, ErrorClass.TRANSIENT),
    (408, ErrorClass.TRANSIENT),
    # Our API key for that endpoint is wrong: the endpoint's fault (fail over, trip its breaker), not the job's.
    (401, ErrorClass.TRANSIENT),
    (403, ErrorClass.TRANSIENT),
    (404, ErrorClass.WORKER_LOST),
    (400, ErrorClass.TERMINAL),
    (413, ErrorClass.TERMINAL),
    (422, ErrorClass.TERMINAL),
])
def test_http_statuses_are_classified_by_who_is_at_fault(status_code, error_class):
    assert classify_status(status_code) is error_class
