"""GET /v1/jobs/{id}/stream without HTTP: which RunPod stream is read, and what a caller gets back."""
from __future__ import annotations

import pytest

from stillhouse.auth import Principal
from stillhouse.errors import ErrorClass, JobNotFound, ServiceUnavailable
from stillhouse.jobs.model import JobStatus
from stillhouse.jobs.streams import StreamReader, chunks_of
from stillhouse.routing.registry import EndpointNotFound, EndpointSpec
from stillhouse.runpod.client import RunPodError
from tests.support.jobs import make_job

ACME = Principal(tenant_id="acme")


class FakeStore:
    """JobStore.get as the reader uses it: another tenant's job is indistinguishable from none."""

    def __init__(self, *jobs):
        self.jobs = {j.id: j for j in jobs}

    def get(self, job_id, tenant_id=None):
        job = self.jobs.get(job_id)
        if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
            raise JobNotFound(f"job {job_id} not found", field="id")
        return job


class FakeRegistry:
    def __init__(self, *specs):
        self.specs = {s.name: s for s in specs}

    def get(self, name):
        if name not in self.specs:
            raise EndpointNotFound(name)
        return self.specs[name]


class FakeRunPod:
    """RunPod's /stream: each call hands out the chunks no call has returned yet."""

    def __init__(self, chunks=(), status="IN_PROGRESS", error=None):
        self.pending, self.status, self.error = list(chunks), status, error
        self.calls = []

    def stream(self, base_url, endpoint_id, job_id):
        self.calls.append((base_url, endpoint_id, job_id))
        if self.error is not None:
            raise self.error
        out, self.pending = self.pending, []
        return {"status": self.status, "stream": [{"output": c} for c in out]}


GEN = EndpointSpec(name="gen", endpoint_id="rp-gen", base_url="http://rp.test/v2", streaming=True)


def reader(the_job, runpod=None, *specs):
    runpod = runpod or FakeRunPod()
    clients = []

    def client_for(endpoint):
        clients.append(endpoint.name)
        return runpod

    r = StreamReader(FakeStore(the_job), FakeRegistry(*(specs or (GEN,))), client_for)
    r.clients = clients
    return r, runpod


def job(status=JobStatus.IN_QUEUE, **kw):
    return make_job(**kw).model_copy(update={"status": status})


def running(status=JobStatus.IN_PROGRESS, **kw):
    return job(status, **{"endpoint": "gen", "runpod_id": "rp-1", "attempts": 1, **kw})


def test_a_running_job_returns_the_new_chunks_from_its_endpoint():
    r, runpod = reader(running(), FakeRunPod([{"text": "Hel"}, {"text": "lo"}]))
    page = r.read(ACME, "j1")
    assert page.model_dump(mode="json") == {
        "id": "j1", "status": "IN_PROGRESS", "attempt": 1,
        "stream": [{"output": {"text": "Hel"}}, {"output": {"text": "lo"}}],
    }
    assert runpod.calls == [("http://rp.test/v2", "rp-gen", "rp-1")]
    assert r.clients == ["gen"]  # the client of the job's own endpoint (its API key)


def test_each_call_returns_only_chunks_not_returned_before():
    runpod = FakeRunPod([{"text": "a"}])
    r, _ = reader(running(), runpod)
    assert [c["output"]["text"] for c in r.read(ACME, "j1").stream] == ["a"]
    assert r.read(ACME, "j1").stream == []
    runpod.pending = [{"text": "b"}, {"text": "c"}]
    assert [c["output"]["text"] for c in r.read(ACME, "j1").stream] == ["b", "c"]


def test_a_job_not_yet_submitted_has_its_status_and_an_empty_stream():
    r, runpod = reader(make_job())  # IN_QUEUE, no endpoint, no RunPod id
    page = r.read(ACME, "j1")
    assert (page.status, page.stream, page.attempt) == (JobStatus.IN_QUEUE, [], 0)
    assert runpod.calls == []


def test_a_retrying_job_does_not_replay_the_failed_attempts_stream():
    # The recorded RunPod job is the failed attempt's; the next attempt streams from the start.
    r, runpod = reader(running(status=JobStatus.RETRYING, attempts=2), FakeRunPod([{"text": "old"}]))
    page = r.read(ACME, "j1")
    assert (page.status, page.attempt, page.stream) == (JobStatus.RETRYING, 2, [])
    assert runpod.calls == []


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_a_finished_job_returns_its_status_with_the_chunks_still_unread(status):
    r, runpod = reader(running(status=status), FakeRunPod([{"text": "tail", "finish_reason": "length"}], status="COMPLETED"))
    page = r.read(ACME, "j1")
    assert page.status is status  # ours, not RunPod's
    assert page.stream == [{"output": {"text": "tail", "finish_reason": "length"}}]


def test_a_finished_job_whose_runpod_result_expired_has_an_empty_stream():
    gone = RunPodError("GET .../stream/rp-1: HTTP 404", error_class=ErrorClass.WORKER_LOST, status_code=404)
    r, _ = reader(running(status=JobStatus.COMPLETED), FakeRunPod(error=gone))
    page = r.read(ACME, "j1")
    assert (page.status, page.stream) == (JobStatus.COMPLETED, [])


def test_a_job_that_failed_before_dispatch_has_an_empty_stream():
    r, runpod = reader(job(JobStatus.FAILED, error="no endpoint"))
    assert r.read(ACME, "j1").stream == []
    assert runpod.calls == []


def test_another_tenants_job_is_not_found():
    r, runpod = reader(running())
    with pytest.raises(JobNotFound):
        r.read(Principal(tenant_id="other"), "j1")
    with pytest.raises(JobNotFound):
        r.read(ACME, "missing")
    assert runpod.calls == []


@pytest.mark.parametrize("error_class", [ErrorClass.TRANSIENT, ErrorClass.CAPACITY, ErrorClass.TERMINAL])
def test_runpod_failing_is_unavailable_without_leaking_its_urls(error_class):
    err = RunPodError("GET http://rp.test/v2/rp-gen/stream/rp-1: HTTP 503", error_class=error_class)
    r, _ = reader(running(), FakeRunPod(error=err))
    with pytest.raises(ServiceUnavailable) as caught:
        r.read(ACME, "j1")
    assert "rp.test" not in caught.value.message and "rp-1" not in caught.value.message
    assert "j1" in caught.value.message


def test_a_running_job_whose_runpod_job_vanished_has_an_empty_stream():
    gone = RunPodError("HTTP 404", error_class=ErrorClass.WORKER_LOST, status_code=404)
    r, _ = reader(running(), FakeRunPod(error=gone))
    assert r.read(ACME, "j1").stream == []  # the sweeper / workflow settles the job itself


def test_an_endpoint_no_longer_configured_gives_an_empty_stream():
    r, runpod = reader(running(endpoint="gone"))
    assert r.read(ACME, "j1").stream == []
    assert runpod.calls == []


@pytest.mark.parametrize(
    ("body", "chunks"),
    [
        ({"status": "IN_PROGRESS", "stream": [{"output": {"text": "a"}}]}, [{"output": {"text": "a"}}]),
        ({"stream": [{"output": "plain"}, "bare"]}, [{"output": "plain"}, {"output": "bare"}]),
        ({"status": "IN_QUEUE"}, []),
        ({"stream": None}, []),
        ([], []),
    ],
)
def test_chunks_of_normalises_runpods_stream_list(body, chunks):
    assert chunks_of(body) == chunks
