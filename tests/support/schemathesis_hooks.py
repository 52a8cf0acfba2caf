"""Hooks for the schemathesis CLI that tests/integration/test_api_schema.py runs (SCHEMATHESIS_HOOKS)."""
import re

import requests
import schemathesis


@schemathesis.hook
def after_call(context, case, response):
    """A job the fuzzer got accepted is stopped: its GPU work is not the point, and generated sleeps must
    not hold the stand-in's workers for other tests."""
    if case.method == "POST" and case.path == "/v1/jobs" and response.status_code == 202:
        base = response.request.url.split("/v1/jobs", 1)[0]
        requests.post(f"{base}/v1/jobs/{response.json()['id']}/cancel",
                      headers={"Authorization": response.request.headers.get("Authorization", "")}, timeout=10)


#: Schema-valid requests that a documented rule, one the document does not state, refuses: status, code and
#: the field named (a regular expression; None: no field). Anything else a positive (schema-valid) request
#: is refused with is a fault of the schema or of the code, as schemathesis' positive_data_acceptance says.
RULES = [
    (422, "unsafe_webhook", "webhook"),  # the host must resolve to public addresses: DNS, not syntax
    (400, "unsafe_webhook", "webhook"),  # the same, in OpenAI's dialect (a batch's webhook)
    (400, "invalid_request", "cursor"),  # a cursor must be one this API returned
    (400, "invalid_request", "after"),  # as OpenAI: `after` is the id of a file or batch of this listing
    (400, "invalid_request", "file"),  # a batch file holds 1 to 50,000 lines, 200 MB at most (docs/batches.md)
    (422, "validation_error", r"(input|params)\..+"),  # each task's input (README), documented as an object
    (400, "unsupported_parameter", ".*"),  # OpenAI parameters docs/openai.md lists as refused
    (400, "invalid_request", "stream_options"),  # as OpenAI: only with stream: true
    (400, "invalid_request", r"messages\[\d+\]\.content"),  # as OpenAI: content, unless an assistant's
    (400, "validation_error", None),  # a rule across fields: max_tokens or max_completion_tokens, not both
    (400, "job_failed", None),  # the worker refused the job (a model the stand-in's catch-all does not serve)
]


def _documented(status, code, field):
    return any(status == s and code == c and (field is None if f is None else bool(re.fullmatch(f, field or "")))
               for s, c, f in RULES)


@schemathesis.check
def positive_data_accepted_or_refused_by_a_documented_rule(ctx, response, case):
    """positive_data_acceptance (which the test excludes), less the refusals RULES names."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code not in (400, 422):
        return None
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        error = {}
    code, field = error.get("code"), error.get("field", error.get("param"))
    if _documented(response.status_code, code, field):
        return None
    raise AssertionError(f"Valid data should have been accepted, or refused by a documented rule; got "
                         f"{response.status_code} {code} (field {field})")
