"""Helpers for tests against the embedded stack: an API client, polling, a caller's webhook receiver."""
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from stillhouse import aws
from stillhouse.config import get_settings
from stillhouse.jobs.status import TERMINAL

TERMINAL_NAMES = frozenset(status.value for status in TERMINAL)


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

    def delete(self, path):
        return requests.delete(self.url + path, headers=self.headers, timeout=10)

    def submit(self, task="echo", input=None, **extra):
        response = self.post("/v1/jobs", {"task": task, "input": input if input is not None else {"text": "hi"}, **extra})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def wait(self, job_id, statuses=TERMINAL_NAMES, timeout=20.0):
        return settled(lambda: self.get(f"/v1/jobs/{job_id}").json(), lambda job: job["status"] in statuses, timeout)


def settled(read, done, timeout, interval=0.05):
    """What `read()` returns once `done` holds for it, or at the deadline (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class Receiver:
    """A caller's webhook endpoint on 127.0.0.1 that records what it is sent.

    Its URL's path is its own (`/hook/<token>`), and only posts to that path are recorded (others are
    answered 404): a notice of an earlier test still being retried can reach this port only if the port
    was reused, and then it is not counted as this test's. `close()` (the fixture's teardown) also closes
    the listening socket, so such a try is refused at once; a socket left listening would take the
    connection and never answer, holding the try for its whole deadline (5 s), and with it the local
    delivery poller's next batch (issue 23, item 8)."""

    def __init__(self):
        self.calls = []
        self.fail_next = 0  # answer the next this-many calls with 503 (a caller's endpoint that is down)
        self.redirect_to = None  # answer every call with 302 to this URL (which must never be followed)
        self.path = f"/hook/{uuid.uuid4().hex[:12]}"
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                return None

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path != receiver.path:  # not this receiver's notice (see the class's note)
                    self.send_response(404)
                elif receiver.redirect_to:
                    receiver.calls.append({"headers": dict(self.headers), "body": body, "json": json.loads(body)})
                    self.send_response(302)
                    self.send_header("location", receiver.redirect_to)
                else:
                    receiver.calls.append({"headers": dict(self.headers), "body": body, "json": json.loads(body)})
                    failing = receiver.fail_next > 0
                    receiver.fail_next -= failing
                    self.send_response(503 if failing else 200)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}{self.path}"

    def wait_for(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while len(self.calls) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.calls

    def close(self):
        """Stop serving and close the listening socket: later connections are refused, not left hanging."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def forget_statistics(*names):
    """Endpoints' breakers, latency and in-flight counts as if new, so no test inherits another's."""
    table = aws.table(get_settings().endpoint_state_table)
    for name in names:
        table.delete_item(Key={"name": name})
    from stillhouse.container import container

    container().router.breaker.store.forget(*names)  # what the in-process functions knew of them


def execution_arn(job_id):
    """The workflow execution running a job: kept on the job, never shown to callers, so read from the store."""
    from stillhouse.container import container

    return container().job_store.get(job_id).execution_arn
