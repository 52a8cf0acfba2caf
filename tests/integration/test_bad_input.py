"""Bad input gets a clear 4xx naming the field, and nothing is written."""
import uuid

import pytest
import requests

from tests.support.stack import Api


@pytest.fixture
def api(stack):
    """A tenant of its own, so "nothing was written" means exactly zero jobs."""
    return Api(stack.url, stack.create_api_key(f"bad-input-{uuid.uuid4().hex[:8]}"))


def job_count(api):
    return len(api.get("/v1/jobs", params={"limit": 100}).json()["items"])


@pytest.mark.parametrize(("body", "status", "field"), [
    ('{"task": "echo", "input": ', 400, "body"),
    ('["not", "an", "object"]', 400, "body"),
    ('{"task": "paint", "input": {}}', 422, "task"),
    ('{"input": {}}', 422, "task"),
    ('{"task": "echo"}', 422, "input"),
    ('{"task": "echo", "input": "text"}', 422, "input"),
    ('{"task": "echo", "input": {}, "priority": "urgent"}', 422, "priority"),
    ('{"task": "echo", "input": {}, "webhook": "not a url"}', 422, "webhook"),
    ('{"task": "echo", "input": {}, "surprise": 1}', 422, "surprise"),
    ('{"task": "generate", "input": {"prompt": "p", "temperature": "hot"}, "cache": true}', 422, "input.temperature"),
])
def test_malformed_requests_are_refused_with_the_field_named(api, body, status, field):
    response = requests.post(api.url + "/v1/jobs", data=body, headers=api.headers, timeout=10)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field and error["message"] and error["code"]
    assert job_count(api) == 0


def test_a_body_over_one_mebibyte_is_413(api):
    big = '{"task": "echo", "input": {"text": "' + "x" * (1024 * 1024) + '"}}'
    response = requests.post(api.url + "/v1/jobs", data=big, headers=api.headers, timeout=10)
    assert response.status_code == 413 and response.json()["error"]["field"] == "body"
    assert job_count(api) == 0


def test_an_input_too_large_to_keep_with_the_job_is_413_naming_input(api):
    response = api.post("/v1/jobs", {"task": "echo", "input": {"text": "x" * 400_000}})
    assert response.status_code == 413 and response.json()["error"]["field"] == "input"
    assert job_count(api) == 0


def test_a_bad_query_parameter_names_it(api):
    response = api.get("/v1/jobs", params={"limit": 0})
    assert response.status_code == 422 and response.json()["error"]["field"] == "limit"
    response = api.get("/v1/jobs", params={"status": "DONE"})
    assert response.status_code == 422 and response.json()["error"]["field"] == "status"


def test_no_key_or_a_bad_key_is_401(stack):
    url = stack.url + "/v1/jobs"
    assert requests.get(url, timeout=5).status_code == 401
    response = requests.get(url, headers={"Authorization": "Bearer sh_wrong"}, timeout=5)
    assert response.status_code == 401 and response.json()["error"]["field"] == "Authorization"
    assert requests.post(url, json={"task": "echo", "input": {}}, timeout=5).status_code == 401


@pytest.mark.parametrize(("method", "path", "body"), [
    ("post", "/v1/jobs", '{"task": "paint"}'),
    ("post", "/v1/jobs", '{"task": '),
    ("get", "/v1/jobs?limit=0", None),
    ("put", "/v1/endpoints/local", '{"weight": -1}'),
])
def test_without_a_key_the_answer_is_401_before_any_validation(stack, method, path, body):
    response = requests.request(method, stack.url + path, data=body, timeout=5)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["field"] == "Authorization"


def test_another_tenants_job_is_404(api, other_tenant):
    job_id = api.submit()
    assert other_tenant.get(f"/v1/jobs/{job_id}").status_code == 404
    assert other_tenant.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
    assert api.get(f"/v1/jobs/{job_id}").status_code == 200


def test_an_unknown_route_is_404_in_the_error_format(api):
    response = api.get("/v1/nothing-here")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_endpoint_edits_need_an_admin_key(other_tenant):
    response = other_tenant.put("/v1/endpoints/local", {"endpoint_id": "x", "base_url": "http://x", "models": ["*"]})
    assert response.status_code == 403
