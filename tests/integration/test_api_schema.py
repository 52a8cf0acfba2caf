"""The API against its own OpenAPI document (schemathesis, run as its CLI runs by default): for requests
generated from /openapi.json, by a tenant's key, no answer is a server error and every answer is
documented: status, content type, headers and body match the schema (the error body included); undeclared
methods and content types are refused as HTTP says (405 with Allow, 415). The document declares the bearer
scheme. And the refusals those checks found, each pinned by a test of its own.

Bounded: EXAMPLES per operation, so the module takes about two minutes."""
import ipaddress
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support.stack import Api

EXAMPLES = 20


@pytest.fixture(scope="module")
def fuzz_tenant(stack):
    """A tenant of its own with room to submit: its jobs must not crowd out other tests' limits."""
    admin = Api(stack.url, stack.dev_api_key)
    made = admin.post("/v1/tenants", {"name": "schemathesis", "limits": {"requests_per_minute": 100_000,
                                                                          "max_in_flight": 5_000}})
    assert made.status_code == 201, made.text
    return made.json()["api_key"]


def test_the_document_declares_the_bearer_scheme_and_the_error_body(stack):
    doc = requests.get(stack.url + "/openapi.json", timeout=10).json()
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer",
                                                              "description": doc["components"]["securitySchemes"]
                                                              ["bearer"]["description"]}
    assert doc["security"] == [{"bearer": []}]
    error = doc["components"]["schemas"]["ErrorDetail"]
    assert set(error["properties"]) == {"code", "message", "field"}
    submit = doc["paths"]["/v1/jobs"]["post"]["responses"]
    for status in ("400", "401", "413", "422", "429"):
        assert submit[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


#: Every route that reads a body (the OpenAI ones answer in OpenAI's error shape).
ROUTES_WITH_A_BODY = [("POST", "/v1/jobs"), ("POST", "/v1/tenants"), ("POST", "/v1/tenants/t-415/keys"),
                      ("PUT", "/v1/config"), ("PUT", "/v1/endpoints/e-415"), ("PUT", "/v1/tenants/t-415/limits"),
                      ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings")]


@pytest.mark.parametrize("method, path", ROUTES_WITH_A_BODY)
@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x"])
def test_a_body_declared_as_anything_but_json_is_415_in_the_routes_error_format(stack, method, path, content_type):
    response = requests.request(method, stack.url + path, data='{"task": "echo"}', timeout=10,
                                headers={"Authorization": f"Bearer {stack.dev_api_key}", "Content-Type": content_type})
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    if path.startswith(("/v1/chat", "/v1/completions", "/v1/embeddings")):
        assert (error["type"], error["param"]) == ("invalid_request_error", "Content-Type")
    else:
        assert (error["code"], error["field"]) == ("unsupported_media_type", "Content-Type")


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "application/json; charset=utf-8"])
def test_json_without_a_content_type_or_labelled_a_form_as_curl_sends_it_is_still_read(api, stack, content_type):
    headers = {"Authorization": f"Bearer {stack.dev_api_key}"} | ({"Content-Type": content_type} if content_type else {})
    response = requests.post(stack.url + "/v1/jobs", data=b'{"task": "echo", "input": {"text": "hi"}}',
                             headers=headers, timeout=10)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("method", ["TRACE", "OPTIONS", "HEAD", "PATCH", "CONNECT", "BREW"])
def test_a_method_a_route_lacks_is_405_naming_the_methods_it_takes_never_a_501_page(stack, method):
    key = {"Authorization": f"Bearer {stack.dev_api_key}"}
    jobs = requests.request(method, stack.url + "/v1/jobs", headers=key, timeout=10)
    assert (jobs.status_code, jobs.headers.get("Allow")) == (405, "GET, POST"), jobs.text
    health = requests.request(method, stack.url + "/health", timeout=10)
    assert (health.status_code, health.headers.get("Allow")) == (405, "GET"), health.text
    if method != "HEAD":
        assert jobs.json()["error"]["code"] == "method_not_allowed"
    assert requests.request(method, stack.url + "/v1/jobs", timeout=10).status_code == 401  # the key first


@pytest.mark.parametrize("method", ["TRACE", "POST", "BREW"])
def test_a_method_no_route_of_the_template_takes_is_api_gateways_404(stack, method):
    response = requests.request(method, stack.url + "/openapi.json", timeout=10)
    assert response.status_code == 404 and response.json() == {"message": "Not Found"}


#: Each boolean a request carries, sent as 0, 1 or "false": (method, path, body, the field named, the status:
#: 422 as for any value, 400 for an endpoint, whose whole configuration is refused as one, as always).
NOT_BOOLEANS = [
    ("POST", "/v1/jobs", {"task": "echo", "input": {"text": "hi"}, "cache": 0}, "cache", 422),
    ("POST", "/v1/jobs", {"task": "council", "input": {"prompt": "hi", "models": ["echo-a", "echo-b"], "rank": 1}},
     "input.rank", 422),
    ("POST", "/v1/tenants", {"name": "bools", "limits": {"allow_high_priority": 1}}, "limits.allow_high_priority",
     422),
    ("PUT", "/v1/tenants/{tenant}/limits", {"allow_high_priority": 0}, "allow_high_priority", 422),
    ("PUT", "/v1/endpoints/bools", {"endpoint_id": "bools", "enabled": 0}, "enabled", 400),
    ("PUT", "/v1/endpoints/bools", {"endpoint_id": "bools", "streaming": "false"}, "streaming", 400),
]


@pytest.mark.parametrize("method, path, body, field, status", NOT_BOOLEANS)
def test_a_boolean_sent_as_a_number_or_a_string_is_refused_naming_the_field(stack, method, path, body, field, status):
    admin = Api(stack.url, stack.dev_api_key)
    tenant = admin.post("/v1/tenants", {"name": "bools"}).json()["tenant"]["tenant_id"] if "{tenant}" in path else None
    response = requests.request(method, stack.url + path.format(tenant=tenant), json=body, headers=admin.headers,
                                timeout=10)
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field
    assert "bools" not in {row["name"] for row in admin.get("/v1/endpoints").json()}  # nothing was written


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                                        ("/v1/completions", {"prompt": "hi"}), ("/v1/embeddings", {"input": "hi"})])
def test_an_openai_model_name_longer_than_a_job_carries_is_not_found_not_a_500(stack, path, body):
    response = requests.post(stack.url + path, json={"model": "m" * 201, **body}, timeout=10,
                             headers={"Authorization": f"Bearer {stack.dev_api_key}"})
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "model_not_found"


def _loopback_names_only(real):
    """The stack's webhook guard resolves webhook hosts; generated ones (`https://0.com`) must never become
    DNS queries that leave the machine. Loopback names resolve; any other name fails as if it did not
    exist (the guard then refuses it, 422), without a lookup."""
    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is None or name == "localhost" or _is_ip(name):
            return real(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, f"tests resolve no generated name ({name})")
    return getaddrinfo


def _is_ip(name):
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    return True


def test_generated_requests_get_documented_answers_and_no_server_error(stack, fuzz_tenant, monkeypatch, tmp_path):
    """`schemathesis run` as its CLI runs by default: every phase (examples, coverage, fuzzing, stateful),
    every check (undeclared methods and content types, missing headers, positive data accepted, negative
    data refused, auth enforced, ...), bounded by EXAMPLES per operation."""
    monkeypatch.setattr(socket, "getaddrinfo", _loopback_names_only(socket.getaddrinfo))
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "schemathesis.cli", "run", stack.url + "/openapi.json",
               "--url", stack.url, "-H", f"Authorization: Bearer {fuzz_tenant}",
               "--max-examples", str(EXAMPLES), "--generation-deterministic", "--request-timeout", "10",
               # One worker: Python 3.11's AST parser, which Hypothesis uses to describe strategies, keeps a
               # recursion count that two threads corrupt ("AST constructor recursion depth mismatch").
               "--workers", "1", "--no-color", "--suppress-health-check", "all",
               # Instead: tests/support/schemathesis_hooks.py's check, which knows the documented rules.
               "--exclude-checks", "positive_data_acceptance"]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks",
                              "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])})
    assert run.returncode == 0, run.stdout + run.stderr
