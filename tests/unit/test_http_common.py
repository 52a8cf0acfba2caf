"""What both HTTP faces share. Here: a resolver reads its own request even when another resolver of the
same process handles one meanwhile (the embedded runtime runs the API and webhook functions side by
side; Powertools keeps the current event in a class attribute)."""
import json
from pathlib import Path as FilePath
from typing import Annotated

import pytest
from aws_lambda_powertools.event_handler.openapi.params import Body, Path

from stillhouse.errors import RetryLater, Unauthorized
from stillhouse.http.resolver import new_resolver

EVENTS = FilePath(__file__).resolve().parents[2] / "events"


def event(path, body):
    base = json.loads((EVENTS / "api_submit_job.json").read_text())
    base["rawPath"] = path
    base["requestContext"]["http"]["path"] = path
    base["routeKey"] = f"POST {path}"
    base["body"] = json.dumps(body)
    base["isBase64Encoded"] = False
    return base


def test_a_resolver_keeps_its_own_request_while_another_resolves_one():
    first, second = new_resolver(), new_resolver()
    seen = {}

    @second.post("/b")
    def b():
        return {"ok": True}

    @first.post("/a")
    def a():
        second.resolve(event("/b", {"who": "second"}), None)  # another function's request, meanwhile
        seen["path"] = first.current_event.path
        seen["body"] = first.current_event.json_body
        return {"ok": True}

    response = first.resolve(event("/a", {"who": "first"}), None)
    assert response["statusCode"] == 200, response
    assert seen == {"path": "/a", "body": {"who": "first"}}


def test_a_request_told_to_ask_again_gets_409_with_retry_after_and_the_field():
    app = new_resolver()

    @app.post("/a")
    def a():
        raise RetryLater("still being handled", field="Idempotency-Key", retry_after_s=2)

    response = app.resolve(event("/a", {}), None)
    assert response["statusCode"] == 409
    assert response["headers"]["Retry-After"] == "2"
    assert json.loads(response["body"])["error"] == {"code": "in_progress", "message": "still being handled",
                                                     "field": "Idempotency-Key"}


def typed(path, body, content_type):
    request = event(path, body)
    request["headers"] = {k: v for k, v in request["headers"].items() if k.lower() != "content-type"}
    if content_type is not None:
        request["headers"]["content-type"] = content_type
    return request


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain; charset=utf-8", "application/xml",
                                          "multipart/form-data; boundary=x", "application/octet-stream"])
def test_a_body_declared_as_anything_but_json_is_415_naming_the_header(content_type):
    app = new_resolver()

    @app.post("/a")
    def a(body: Annotated[dict, Body()]):
        return {"ok": True}

    response = app.resolve(typed("/a", {"x": 1}, content_type), None)
    assert response["statusCode"] == 415, response
    assert json.loads(response["body"])["error"]["code"] == "unsupported_media_type"
    assert json.loads(response["body"])["error"]["field"] == "Content-Type"


def test_an_openai_route_refuses_a_non_json_body_with_415_in_openais_shape():
    app = new_resolver()

    @app.post("/v1/embeddings")
    def embeddings(body: Annotated[dict, Body()]):
        return {"ok": True}

    response = app.resolve(typed("/v1/embeddings", {"input": "hi"}, "text/plain"), None)
    assert response["statusCode"] == 415, response
    assert json.loads(response["body"])["error"]["type"] == "invalid_request_error"
    assert json.loads(response["body"])["error"]["param"] == "Content-Type"


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "application/json",
                                          "Application/JSON; charset=utf-8", "application/merge-patch+json"])
def test_json_undeclared_labelled_a_form_as_curl_does_or_declared_json_is_read_as_json(content_type):
    app = new_resolver()

    @app.post("/a")
    def a(body: Annotated[dict, Body()]):
        return {"got": body}

    response = app.resolve(typed("/a", {"x": 1}, content_type), None)
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"]) == {"got": {"x": 1}}


def test_a_bodyless_request_is_not_judged_by_its_content_type():
    app = new_resolver()

    @app.post("/a")
    def a():
        return {"ok": True}

    request = typed("/a", {}, "text/plain")
    request["body"] = ""
    assert app.resolve(request, None)["statusCode"] == 200


def asked(path, method):
    request = event(path, {})
    request["requestContext"]["http"]["method"] = method
    request["routeKey"] = f"{method} {path}"
    request["body"] = ""
    return request


@pytest.mark.parametrize("method", ["TRACE", "OPTIONS", "HEAD", "PATCH", "DELETE"])
def test_a_route_asked_with_a_method_it_lacks_is_405_with_allow_in_the_error_format(method):
    app = new_resolver()

    @app.get("/things/<thing_id>")
    def get_thing(thing_id: str):
        return {"ok": True}

    @app.put("/things/<thing_id>")
    def put_thing(thing_id: str):
        return {"ok": True}

    response = app.resolve(asked("/things/t1", method), None)
    assert response["statusCode"] == 405, response
    assert response["headers"]["Allow"] == "GET, PUT"
    assert json.loads(response["body"])["error"]["code"] == "method_not_allowed"
    assert app.resolve(asked("/nothing", method), None)["statusCode"] == 404


def test_a_method_not_allowed_is_still_401_first_for_a_caller_without_a_key():
    def no_key(app):
        raise Unauthorized("missing API key")

    app = new_resolver(gates=[no_key])

    @app.get("/things")
    def things():
        return {"ok": True}

    assert app.resolve(asked("/things", "TRACE"), None)["statusCode"] == 401


def test_a_percent_encoded_path_parameter_reaches_the_handler_decoded():
    app = new_resolver()
    seen = {}

    @app.get("/things/<thing_id>")
    def get_thing(thing_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]):
        seen["thing_id"] = thing_id
        return {"ok": True}

    response = app.resolve(asked("/things/t%3A1", "GET"), None)
    assert response["statusCode"] == 200, response
    assert seen == {"thing_id": "t:1"}


def test_a_rule_across_fields_is_told_as_it_is_not_as_a_body_that_is_not_an_object():
    from pydantic import BaseModel, model_validator

    class Pair(BaseModel):
        a: int | None = None
        b: int | None = None

        @model_validator(mode="after")
        def _one(self):
            if self.a is not None and self.b is not None:
                raise ValueError("give a or b, not both")
            return self

    app = new_resolver()

    @app.post("/a")
    def a(body: Pair):
        return {"ok": True}

    error = json.loads(app.resolve(event("/a", {"a": 1, "b": 2}), None)["body"])["error"]
    assert "give a or b, not both" in error["message"] and error["code"] == "validation_error"
    assert json.loads(app.resolve(event("/a", [1]), None)["body"])["error"]["message"] == \
        "request body must be a JSON object"
