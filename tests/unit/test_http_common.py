"""What both HTTP faces share. Here: a resolver reads its own request even when another resolver of the
same process handles one meanwhile (the embedded runtime runs the API and webhook functions side by
side; Powertools keeps the current event in a class attribute)."""
import json
from pathlib import Path

from stillhouse.errors import RetryLater
from stillhouse.http.resolver import new_resolver

EVENTS = Path(__file__).resolve().parents[2] / "events"


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
