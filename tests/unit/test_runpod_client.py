"""RunPod's HTTP answers, classified: what the router does next depends on who is at fault."""
import pytest
from tenacity import wait_none

from stillhouse.errors import ErrorClass
from stillhouse.runpod.client import RunPodClient, RunPodError, classify_status
from tests.support.receivers import Recorder


@pytest.mark.parametrize(("status_code", "error_class"), [
    (429, ErrorClass.CAPACITY),
    (500, ErrorClass.TRANSIENT),
    (503, ErrorClass.TRANSIENT),
    (408, ErrorClass.TRANSIENT),
    # A redirect is not followed (it would carry our key): the endpoint's fault, like a 5xx.
    (301, ErrorClass.TRANSIENT),
    (307, ErrorClass.TRANSIENT),
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

    def request(self, method, url, json=None, timeout=None, allow_redirects=True):
        assert allow_redirects is False  # a redirect would carry the session's Authorization elsewhere
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


class KeyedSession(Session):
    """RunPod that accepts only `valid` as the API key."""

    def __init__(self, valid):
        super().__init__(None)
        self.valid = valid

    def request(self, method, url, json=None, timeout=None, allow_redirects=True):
        assert allow_redirects is False
        self.sent.append((method, url, self.headers["Authorization"]))
        if self.headers["Authorization"] != f"Bearer {self.valid}":
            return Answer({"error": "unauthorized"}, 401)
        return Answer({"id": "rp1", "status": "IN_QUEUE"})


class KeyStore:
    """The secret holding the API key; `cached` is what a 5-minute cache still hands out."""

    def __init__(self, cached, stored):
        self.cached, self.stored, self.reads = cached, stored, []

    def __call__(self, refresh=False):
        self.reads.append(refresh)
        return self.stored if refresh else self.cached


def test_a_rotated_runpod_key_is_read_again_once_after_a_401_and_the_request_goes_through():
    keys, session = KeyStore(cached="old", stored="new"), KeyedSession(valid="new")
    client = RunPodClient(keys, session=session)
    assert client.run("https://rp", "ep", {"task": "echo"})["id"] == "rp1"
    assert [auth for _, _, auth in session.sent] == ["Bearer old", "Bearer new"]
    assert keys.reads == [False, True]
    client.run("https://rp", "ep", {"task": "echo"})  # the new key is kept
    assert session.sent[-1][2] == "Bearer new" and keys.reads == [False, True]


def test_a_key_that_is_simply_wrong_fails_after_one_reread_and_is_not_reread_at_every_request():
    now = [0.0]
    keys, session = KeyStore(cached="wrong", stored="wrong"), KeyedSession(valid="right")
    client = RunPodClient(keys, session=session, clock=lambda: now[0])
    for _ in range(2):
        with pytest.raises(RunPodError) as raised:
            client.run("https://rp", "ep", {"task": "echo"})
        assert raised.value.status_code == 401 and raised.value.error_class is ErrorClass.TRANSIENT
    assert keys.reads == [False, True]  # one re-read within the interval
    assert len(session.sent) == 2  # the same key is not sent twice for one request


# --- redirects: a real HTTP exchange on 127.0.0.1 ----------------------------------------------------------

@pytest.fixture
def target():
    server = Recorder()
    yield server
    server.close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("call", [
    lambda client, base: client.run(base, "ep", {"task": "echo"}),
    lambda client, base: client.status(base, "ep", "rp1"),
    lambda client, base: client.cancel(base, "ep", "rp1"),
], ids=["run", "status", "cancel"])
def test_a_redirect_is_not_followed_so_our_key_never_reaches_its_target(monkeypatch, target, status, call):
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    for method in (RunPodClient.status, RunPodClient.cancel):  # reads are retried: without the waits
        monkeypatch.setattr(method.retry, "wait", wait_none())
    runpod = Recorder(status=status, location=f"{target.url}/v2/ep/run")
    try:
        client = RunPodClient("sk-our-runpod-key")  # its own requests session, as in production
        with pytest.raises(RunPodError) as raised:
            call(client, f"{runpod.url}/v2")
    finally:
        runpod.close()
    assert raised.value.status_code == status and raised.value.error_class is ErrorClass.TRANSIENT
    assert runpod.received and all(auth == "Bearer sk-our-runpod-key" for _, _, auth in runpod.received)
    assert target.received == []  # neither the key nor the request went to where the redirect pointed
    assert target.url not in str(raised.value)
