"""One embedded stack (moto + in-process Lambdas + RunPod stand-in with the real worker) per session."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from stillhouse_local.stack import EmbeddedStack, StackOptions

from stillhouse import aws
from stillhouse.config import get_settings
from stillhouse.container import container

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


class Api:
    """A tiny HTTP client of our API, bound to one API key."""

    def __init__(self, url: str, key: str | None):
        self.url = url
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def post(self, path, body=None, **kw):
        return requests.post(self.url + path, json=body, headers={**self.headers, **kw.pop("headers", {})}, timeout=10, **kw)

    def get(self, path, **kw):
        return requests.get(self.url + path, headers=self.headers, timeout=10, **kw)

    def put(self, path, body):
        return requests.put(self.url + path, json=body, headers=self.headers, timeout=10)

    def submit(self, task="echo", input=None, **extra):
        response = self.post("/v1/jobs", {"task": task, "input": input if input is not None else {"text": "hi"}, **extra})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def wait(self, job_id, statuses=TERMINAL, timeout=20.0):
        return settled(lambda: self.get(f"/v1/jobs/{job_id}").json(), lambda job: job["status"] in statuses, timeout)


def settled(read, done, timeout, interval=0.05):
    """What `read()` returns once `done` holds for it, or at the deadline (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    options = StackOptions(
        port=0,
        endpoints=["local", "east", "west"],
        parameters={
            # Short, so redelivery and the DLQ run in seconds; but longer than one dispatch under a busy
            # CI machine, else a redelivery races the first delivery and claims a second attempt.
            "QueueVisibilityTimeout": "3", "MaxReceiveCount": "2",
            # Step Functions sleeps are real: short backoffs and callback timeouts keep tests quick.
            "RetryIntervalSeconds": "1", "CapacityIntervalSeconds": "1", "RetryBackoffRate": "2",
            "RetryMaxAttempts": "3", "RetryMaxDelaySeconds": "4", "CallbackTimeoutSeconds": "4",
            "StatusPollSeconds": "1", "MaxAttempts": "6", "WaitForEndpointIntervalSeconds": "1",
            # A RunPod job lost inside a worker times out (-> worker_lost -> retried) within a test.
            "ExecutionTimeoutMs": "20000",
        },
        # Short breaker cool-down so recovery is observable within a test.
        environment={"STILLHOUSE_BREAKER__COOLDOWN_S": "1.5", "STILLHOUSE_BREAKER__MAX_COOLDOWN_S": "3",
                     # The DLQ tests look at what lands there: the every-minute sweep must not take it first
                     # (the DLQ policy itself is tested in tests/unit/test_sweeper.py).
                     "STILLHOUSE_SETTLE_DLQS": "false"},
        webhook_retry_delay_s=0.2,
        log_dir=tmp_path_factory.mktemp("logs"),
    )
    with EmbeddedStack(options) as running:
        # Only `local` takes jobs unless a test says otherwise: assertions need to know where jobs run.
        for name in ("east", "west"):
            container().registry.update(name, enabled=False)
        yield running


@pytest.fixture
def api(stack):
    return Api(stack.url, stack.dev_api_key)


@pytest.fixture
def other_tenant(stack):
    return Api(stack.url, stack.create_api_key("other-tenant"))


@pytest.fixture
def faults(stack):
    """Set fault knobs on stand-in endpoints. What the router learnt of an endpoint (breaker, latency and
    success statistics) is forgotten when a test first touches it and again afterwards, so a fault test
    sees exactly its own faults' effect; every knob is reset after the test."""
    touched = set()

    def set_faults(endpoint="local", **knobs):
        if endpoint not in touched:
            touched.add(endpoint)
            forget_statistics(endpoint)
        stack.standin.set_faults(endpoint, **knobs)

    yield set_faults
    for endpoint in touched:
        stack.standin.reset_faults(endpoint)
        forget_statistics(endpoint)


class Receiver:
    """A caller's webhook endpoint on 127.0.0.1 that records what it is sent."""

    def __init__(self):
        self.calls = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                return None

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.calls.append({"headers": dict(self.headers), "body": body, "json": json.loads(body)})
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while len(self.calls) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.calls


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def two_endpoints(stack):
    """Route between `east` and `west` only, from fresh statistics; `local` is back afterwards."""
    forget_statistics("east", "west")
    for name in ("east", "west"):
        container().registry.update(name, enabled=True)
    container().registry.update("local", enabled=False)
    yield ("east", "west")
    for name in ("east", "west"):
        container().registry.update(name, enabled=False)
    forget_statistics("east", "west")
    container().registry.update("local", enabled=True)


def forget_statistics(*names):
    """Endpoints' breakers, latency and in-flight counts as if new, so no test inherits another's."""
    table = aws.table(get_settings().endpoint_state_table)
    for name in names:
        table.delete_item(Key={"name": name})
