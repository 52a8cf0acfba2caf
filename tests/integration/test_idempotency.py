"""Twin submits with one Idempotency-Key, handled at the same time (as by two API instances on AWS):
both get the one job, or the later is told to ask again — never a 5xx, never two jobs."""
import threading
from types import SimpleNamespace

import pytest

from stillhouse.auth import Principal
from stillhouse.container import container
from stillhouse.errors import RetryLater
from stillhouse.http.submission import submit_once
from stillhouse.jobs.model import JobRequest

WHO = Principal(tenant_id="dev")
# What Powertools reads of a Lambda context: how long an in-progress record may stand.
CONTEXT = SimpleNamespace(get_remaining_time_in_millis=lambda: 30_000)


@pytest.fixture
def held_submit(stack, monkeypatch):
    """The first submit's job creation waits until the test lets it go (as if its instance were slow)."""
    service = container().job_service
    real, entered, release = service.submit, threading.Event(), threading.Event()

    def held(who, request, traceparent=None):
        entered.set()
        release.wait(10)
        return real(who, request, traceparent)

    monkeypatch.setattr(service, "submit", held)
    yield entered, release
    release.set()


def start_first(key, request):
    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(submit_once(WHO, key, request, CONTEXT)), daemon=True)
    thread.start()
    return thread, first


def test_a_twin_waits_for_the_first_request_and_gets_its_job(held_submit):
    entered, release = held_submit
    request = JobRequest(task="echo", input={"text": "twin"})
    thread, first = start_first("twin-1", request)
    assert entered.wait(10)
    threading.Timer(0.3, release.set).start()  # the first finishes while its twin waits
    second = submit_once(WHO, "twin-1", request, CONTEXT)
    thread.join(10)
    assert first["id"] == second["id"]
    assert container().job_store.get(first["id"]).input == {"text": "twin"}


def test_a_twin_of_a_request_still_running_is_told_to_ask_again(held_submit):
    entered, release = held_submit
    request = JobRequest(task="echo", input={"text": "slow twin"})
    thread, first = start_first("twin-2", request)
    assert entered.wait(10)
    with pytest.raises(RetryLater) as refused:
        submit_once(WHO, "twin-2", request, CONTEXT)
    assert refused.value.field == "Idempotency-Key" and refused.value.retry_after_s >= 1
    release.set()
    thread.join(10)
    assert submit_once(WHO, "twin-2", request, CONTEXT)["id"] == first["id"]  # asked again: the first's job


def test_twins_over_http_are_served_at_once_and_never_answered_5xx(api, held_submit):
    """The embedded API serves requests concurrently, as API Gateway does: the twin is answered while the
    first request is still being handled (one request at a time would make it wait behind the first)."""
    entered, release = held_submit
    body, headers = {"task": "echo", "input": {"text": "http twin"}}, {"Idempotency-Key": "twin-http"}
    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(response=api.post("/v1/jobs", body, headers=headers)),
                              daemon=True)
    thread.start()
    assert entered.wait(10)
    twin = api.post("/v1/jobs", body, headers=headers)
    assert twin.status_code == 409 and int(twin.headers["Retry-After"]) >= 1
    assert twin.json()["error"]["field"] == "Idempotency-Key"
    release.set()
    thread.join(10)
    assert first["response"].status_code == 202
    again = api.post("/v1/jobs", body, headers=headers)
    assert again.status_code == 202 and again.json()["id"] == first["response"].json()["id"]


def test_concurrent_requests_of_two_tenants_each_see_only_their_own(api, other_tenant):
    """Each request is handled with its own event and principal, however many run at once."""
    from concurrent.futures import ThreadPoolExecutor

    mine, theirs = api.submit("echo", {"text": "mine"}), other_tenant.submit("echo", {"text": "theirs"})
    asks = [(api, mine, theirs), (other_tenant, theirs, mine)] * 20
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda a: (a[0].get(f"/v1/jobs/{a[1]}").status_code,
                                           a[0].get(f"/v1/jobs/{a[2]}").status_code), asks))
    assert answers == [(200, 404)] * len(asks)
