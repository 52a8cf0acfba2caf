"""The OpenAPI document as the API really behaves: every /v1 route needs `Authorization: Bearer <api key>`,
and every error answer has the one body `{"error": {"code", "message", "field"}}` (http/resolver.py).

Powertools documents its own validation error (`HTTPValidationError`, 422) for each route; our resolver
never sends that shape, so it is replaced by ours, beside the other statuses a route may answer with."""
from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

from stillhouse.http.resolver import speaks_openai
from stillhouse.jobs.model import ErrorBody
from stillhouse.openai_compat.schemas import OpenAIError

BEARER = "bearer"
#: What any /v1 route may answer besides its success (why: resolver.py's mapping, the gates).
ERRORS = {
    "400": "malformed JSON, a body nested too deeply, or a bad cursor",
    "401": "no API key, or one that is unknown, revoked or expired",
    "403": "needs an admin key (or, for a tenant's keys, one with keys:manage), or a limit of the tenant "
           "forbids it (e.g. priority high)",
    "404": "no such route or object (another tenant's objects are not found either)",
    "409": "conflicts with the object's state, or with a twin request (Retry-After)",
    "413": "the body, or a job's input, is too large",
    "415": "a body declared as something other than JSON (`Content-Type`)",
    "422": "a field's value is not allowed; `field` names it",
    "429": "over one of the tenant's quotas; `field` names the limit (Retry-After)",
    "503": "a backend is unavailable; nothing was accepted",
}

#: The OpenAI-compatible routes answer in OpenAI's error shape, with OpenAI's statuses (400 for a bad value).
OPENAI_ERRORS = {
    "400": "a parameter is invalid or not supported (`param` names it), or the worker refused the job",
    "401": "no API key, or one that is unknown, revoked or expired",
    "403": "a limit of the tenant forbids it",
    "404": "no endpoint serves the model (`model_not_found`), or no such route",
    "409": "the Idempotency-Key was used with another request, or the job was cancelled",
    "413": "the body is too large",
    "415": "a body declared as something other than JSON (`Content-Type`)",
    "429": "over one of the tenant's quotas (Retry-After)",
    "500": "the job failed after its retries",
    "503": "a backend is unavailable; nothing was accepted",
    "504": "the job did not end within the wait; it goes on (x-stillhouse-job-id names it)",
}
#: Routes that answer `stream: true` with server-sent events.
STREAMED = {"/v1/chat/completions", "/v1/completions"}


def document(app: APIGatewayHttpResolver, *, public_paths: frozenset[str]) -> dict[str, Any]:
    doc = json.loads(app.get_openapi_json_schema(
        title="stillhouse", version="1.0.0", description="Serverless GPU job router",
        security_schemes={BEARER: HTTPBearer(description="an API key: `Authorization: Bearer sh_...`")},
        security=[{BEARER: []}]))
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorBody"] = error_schema
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    openai_schema = OpenAIError.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(openai_schema.pop("$defs", {}))
    schemas["OpenAIError"] = openai_schema
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    openai_error = {"application/json": {"schema": {"$ref": "#/components/schemas/OpenAIError"}}}
    for path, operations in doc.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                del responses["422"]
            if path in public_paths:
                operation["security"] = []
                continue
            if speaks_openai(path):
                if path in STREAMED:
                    responses["200"].setdefault("content", {})["text/event-stream"] = {"schema": {"type": "string"}}
                for status, description in OPENAI_ERRORS.items():
                    responses[status] = {"description": description, "content": openai_error}
                continue
            for status, description in ERRORS.items():
                responses[status] = {"description": description, "content": error}
    return doc
