"""RunPod's HTTP answers, classified: what the router does next depends on who is at fault."""
import pytest

from stillhouse.errors import ErrorClass
from stillhouse.runpod.client import RunPodClient, RunPodError, classify_status


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


class Answer:
    """One HTTP answer of RunPod's API, as requests returns it."""

    def __init__(self, body, status_code=200):
        self.body, self.status_code, self.text, self.headers = body, status_code, str(body), {}

    def json(self):
        return self.body


class Session:
    def __init__(self, answer):
        self.headers, self.answer, self.sent = {}, answer, []

    def request(self, method, url, json=None, timeout=None):
        self.sent.append((method, url, json))
        return self.answer


def test_run_sends_runpods_body_and_returns_the_job_it_accepted():
    session = Session(Answer({"id": "rp1", "status": "IN_QUEUE"}))
    client = RunPodClient("key", session=session)
    accepted = client.run("https://rp", "ep", {"task": "echo"}, webhook="https://cb", policy={"ttl": 1000})
    assert accepted == {"id": "rp1", "status": "IN_QUEUE"}
    assert session.sent == [("POST", "https://rp/ep/run",
                             {"input": {"task": "echo"}, "webhook": "https://cb", "policy": {"ttl": 1000}})]


@pytest.mark.parametrize("answer", [{"status": "IN_QUEUE"}, {"id": "", "status": "IN_QUEUE"}, ["rp1"]])
def test_a_run_answer_without_a_job_id_is_a_transient_fault_of_runpod(answer):
    client = RunPodClient("key", session=Session(Answer(answer)))
    with pytest.raises(RunPodError) as raised:
        client.run("https://rp", "ep", {"task": "echo"})
    assert raised.value.error_class is ErrorClass.TRANSIENT
