"""What routing learns from a result: a latency that means health, not a job's whole time."""
import pytest

from stillhouse.errors import ErrorClass
from stillhouse.jobs.status import JobStatus
from stillhouse.routing.feedback import latency_ms, report_outcome, total_ms, work_units


class Learner:
    def __init__(self):
        self.calls = []

    def succeeded(self, name, latency_ms):
        self.calls.append(("succeeded", name, latency_ms))

    def failed(self, name, error_class, *, latency_ms=None, error=None):
        self.calls.append(("failed", name, error_class, latency_ms))

    def released(self, name):
        self.calls.append(("released", name))


@pytest.mark.parametrize(("task", "output", "job_input", "units"), [
    ("sleep", {"slept": 30}, {"seconds": 30}, None),  # diagnostics teach no latency
    ("generate", {"text": "...", "completion_tokens": 400}, {"prompt": "q"}, 400.0),
    ("generate", {"text": "", "completion_tokens": 0}, {"prompt": "q"}, 1.0),
    ("generate", None, {"prompt": "q"}, 1.0),  # a failure has no output to count
    ("embed", {"embeddings": []}, {"texts": ["a", "b", "c"]}, 3.0),
    ("echo", {"text": "hi"}, {"text": "hi"}, 1.0),
])
def test_the_work_a_result_paid_for(task, output, job_input, units):
    assert work_units(task, output, job_input) == units


def test_a_long_generation_is_measured_per_output_token_plus_its_queue_delay():
    body = {"delayTime": 120, "executionTime": 20_000}
    assert latency_ms(body, 400.0) == 120 + 50
    assert total_ms(body) == 20_120  # what the caller waited: shown, not learnt


def test_a_diagnostic_sleep_succeeds_without_teaching_any_latency():
    router = Learner()
    report_outcome(router, "a", JobStatus.COMPLETED, None, None, {"delayTime": 5, "executionTime": 30_000}, None)
    assert router.calls == [("succeeded", "a", None)]


def test_a_failure_still_counts_with_its_normalised_latency():
    router = Learner()
    report_outcome(router, "a", JobStatus.FAILED, ErrorClass.TRANSIENT, "boom", {"executionTime": 900}, 3.0)
    assert router.calls == [("failed", "a", ErrorClass.TRANSIENT, 300.0)]
