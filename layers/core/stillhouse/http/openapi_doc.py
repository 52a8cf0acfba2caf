"""The OpenAPI document as the API really behaves: every /v1 route needs `Authorization: Bearer <api key>`,
and every error answer has the one body `{"error": {"code", "message", "field"}}` (http/resolver.py).

Powertools documents its own validation error (`HTTPValidationError`, 422) for each route; our resolver
never sends that shape, so it is replaced by ours, beside the other statuses a route may answer with."""
from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

from stillhouse.jobs.model import ErrorBody

BEARER = "bearer"
#: What any /v1 route may answer besides its success (why: resolver.py's mapping, the gates).
ERRORS = {
    "400": "malformed JSON, a body nested too deeply, or a bad cursor",
    "401": "no API key, or one that is unknown, revoked or expired",
    "403": "needs an admin key, or a limit of the tenant forbids it (e.g. priority high)",
    "404": "no such route or object (another tenant's objects are not found either)",
    "409": "conflicts with the object's state, or with a twin request (Retry-After)",
    "413": "the body, or a job's input, is too large",
    "422": "a field's value is not allowed; `field` names it",
    "429": "over one of the tenant's quotas; `field` names the limit (Retry-After)",
    "503": "a backend is unavailable; nothing was accepted",
}


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
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, operations in doc.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                del responses["422"]
            if path in public_paths:
                operation["security"] = []
                continue
            for status, description in ERRORS.items():
                responses[status] = {"description": description, "content": error}
    return doc
