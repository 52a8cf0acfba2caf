"""What both HTTP faces share: one error format, one domain-error mapping, the body guard."""
from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import ResponseBuilder, Route
from aws_lambda_powertools.event_handler.exceptions import ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestValidationError,
)

from stillhouse import aws, errors
from stillhouse.config import get_settings
from stillhouse.jobs.model import ErrorBody, ErrorDetail
from stillhouse.openai_compat import errors as openai_errors

logger = Logger(service="stillhouse", child=True)

# Domain error type -> HTTP status. The one place this mapping lives; matched by type, never text.
_STATUS: list[tuple[type[errors.StillhouseError], HTTPStatus]] = [
    (errors.PayloadTooLarge, HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
    (errors.UnsupportedMediaType, HTTPStatus.UNSUPPORTED_MEDIA_TYPE),
    (errors.Unprocessable, HTTPStatus.UNPROCESSABLE_ENTITY),
    (errors.InvalidRequest, HTTPStatus.BAD_REQUEST),
    (errors.Unauthorized, HTTPStatus.UNAUTHORIZED),
    (errors.Forbidden, HTTPStatus.FORBIDDEN),
    (errors.NotFound, HTTPStatus.NOT_FOUND),
    (errors.MethodNotAllowed, HTTPStatus.METHOD_NOT_ALLOWED),
    (errors.Conflict, HTTPStatus.CONFLICT),
    (errors.QuotaExceeded, HTTPStatus.TOO_MANY_REQUESTS),
    (errors.ServiceUnavailable, HTTPStatus.SERVICE_UNAVAILABLE),
    (errors.GatewayTimeout, HTTPStatus.GATEWAY_TIMEOUT),
]

#: Routes that speak OpenAI's API answer errors in its shape (`openai_compat.errors`); the rest in ours.
OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/files", "/v1/batches")
#: The one route whose body is a file (multipart/form-data, up to the Batch API's file limit), not JSON.
UPLOAD = ("POST", "/v1/files")


def speaks_openai(path: str | None) -> bool:
    return bool(path) and any(path == p or path.startswith(p + "/") for p in OPENAI_PATHS)


def http_status_of(exc: errors.StillhouseError) -> HTTPStatus:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return HTTPStatus.INTERNAL_SERVER_ERROR


def error_response(status: HTTPStatus, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None, *, openai: bool = False) -> Response:
    if openai:
        status = HTTPStatus(openai_errors.openai_status(status))
        body = openai_errors.error_body(status, code, message, field)
    else:
        body = ErrorBody(error=ErrorDetail(code=code, message=message, field=field)).model_dump_json()
    return Response(status_code=status, content_type="application/json", body=body, headers=headers)


def error_headers(exc: errors.StillhouseError) -> dict[str, str] | None:
    """Retry-After for what may be asked again later; the job a call that gave up waiting left running."""
    headers = {}
    if (retry_after := getattr(exc, "retry_after_s", None)) is not None:
        headers["Retry-After"] = str(retry_after)
    if (job_id := getattr(exc, "job_id", None)) is not None:
        headers[JOB_ID_HEADER] = job_id
    if (allow := getattr(exc, "allow", None)) is not None:
        headers["Allow"] = ", ".join(allow)
    return headers or None


#: The job behind an OpenAI-compatible call (its answer, or the error of a call that stopped waiting).
JOB_ID_HEADER = "x-stillhouse-job-id"


def _domain_error(exc: errors.StillhouseError, openai: bool = False) -> Response:
    return error_response(http_status_of(exc), exc.code, exc.message, exc.field, error_headers(exc), openai=openai)


#: A body-level validation error of these types means the body is not an object; any other (a rule across
#: fields, such as "max_tokens or max_completion_tokens, not both") is told as it is.
_NOT_AN_OBJECT = frozenset({"model_type", "model_attributes_type", "dict_type", "missing", "json_type"})


def _validation_error(exc: RequestValidationError, openai: bool = False) -> Response:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "header", "path")]
    field = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return error_response(HTTPStatus.BAD_REQUEST, "malformed_json", "request body is not valid JSON", "body",
                              openai=openai)
    if field is None and "body" in first.get("loc", ()) and first.get("type") in _NOT_AN_OBJECT:
        return error_response(HTTPStatus.BAD_REQUEST, "invalid_request", "request body must be a JSON object", "body",
                              openai=openai)
    if openai and first.get("type") == "extra_forbidden":
        return error_response(HTTPStatus.BAD_REQUEST, "unknown_parameter",
                              f"Unrecognized request argument supplied: {field}", field, openai=True)
    message = f"{field or 'request'}: {first.get('msg', 'invalid value')}"
    return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, "validation_error", message, field, openai=openai)


def raw_body(event: Any) -> bytes:
    raw = event.body or ""
    return base64.b64decode(raw) if event.is_base64_encoded else raw.encode()


def is_upload(event: Any) -> bool:
    return (event.http_method, event.path) == UPLOAD


def guard_body(app: APIGatewayHttpResolver) -> None:
    """Refuse an oversized or too deeply nested body before it is parsed, so nothing is written (and a
    parser's recursion never becomes a 500)."""
    if app.context.get("not_allowed"):
        return  # 405 whatever the body: no route reads it
    event = app.current_event
    raw = event.body or ""
    data = raw_body(event)
    size = len(data)
    settings = get_settings()
    limit = settings.batch.file_max_bytes + 65_536 if is_upload(event) else settings.max_body_bytes
    if size > limit:
        raise errors.PayloadTooLarge(f"body is {size} bytes; the limit is {limit}", field="body")
    if is_upload(event):
        return  # a file, read by its route; its lines are JSON checked one by one
    if event.is_base64_encoded:  # API Gateway's form of a body that is not UTF-8 text
        try:
            raw = data.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.InvalidRequest("request body is not valid JSON (not UTF-8 text)", field="body") from None
    limit = settings.input_limits.json_depth
    if nests_deeper(raw, limit):
        raise errors.InvalidRequest(f"body: JSON nested more than {limit} levels deep", field="body")


#: Bodies read as JSON: declared so (`application/json`, a `+json` type), undeclared, or labelled a form,
#: which is what `curl -d` sends for a JSON body.
_READ_AS_JSON = ("", "application/json", "application/x-www-form-urlencoded")


def media_type(headers: dict[str, str] | None) -> str:
    """The declared content type without its parameters, lower-cased (`Application/JSON; charset=x` ->
    `application/json`); "" when none is declared."""
    return ((headers or {}).get("content-type") or "").split(";", 1)[0].strip().lower()


def read_as_json(declared: str) -> bool:
    return declared in _READ_AS_JSON or declared.endswith("+json")


def guard_content_type(app: APIGatewayHttpResolver) -> None:
    """A body declared as anything else (text/plain, multipart, XML, ...) is 415, not a guess: Powertools'
    validator would raise an error of its own for it, which no handler maps (a 500)."""
    event = app.current_event
    declared = media_type(event.headers)
    if app.context.get("not_allowed"):
        return
    if is_upload(event) and declared == "multipart/form-data":
        if "boundary=" not in (event.headers or {}).get("content-type", ""):
            raise errors.UnsupportedMediaType("Content-Type multipart/form-data needs its boundary", field="Content-Type")
        return
    if event.body and not read_as_json(declared):
        raise errors.UnsupportedMediaType(f"Content-Type {declared!r} is not supported; send application/json",
                                          field="Content-Type")


def nests_deeper(text: str, limit: int) -> bool:
    """Whether `text`'s JSON arrays and objects nest more than `limit` levels (brackets inside strings do
    not count). Most bodies hold fewer brackets than the bound and are answered by counting alone."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _unexpected(exc: Exception, openai: bool = False) -> Response:
    """Anything else is our fault: log it with its traceback, answer 500 in the one error format. An AWS
    error that means "not now" (throttled, unavailable: stillhouse.aws.unavailable, by its code) is not:
    503 with Retry-After."""
    if (busy := aws.unavailable(exc)) is not None:
        logger.warning("AWS throttled or unavailable", extra={"error_type": type(exc).__name__})
        return _domain_error(busy, openai)
    if isinstance(exc, ServiceError):  # Powertools' own HTTP errors, e.g. no such route
        code = "not_found" if exc.status_code == HTTPStatus.NOT_FOUND else "error"
        return error_response(HTTPStatus(exc.status_code), code, exc.msg, openai=openai)
    logger.exception("unhandled error", extra={"error_type": type(exc).__name__})
    return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error",
                          "internal error; the request may not have completed, it is safe to retry with the "
                          "same Idempotency-Key", openai=openai)


class JsonResolver(APIGatewayHttpResolver):
    """This API speaks JSON only. `curl -d` labels a JSON body as a form; read it as what it is, so the
    validator parses JSON instead of reporting every field missing.

    The request being handled (event, Lambda context, the context dict gates fill) is kept per thread.
    Powertools keeps it in class attributes shared by every resolver of the process; on Lambda, one event
    per process at a time, that is enough. The embedded runtime serves requests concurrently, as API
    Gateway does, so one process handles several at once and each must read only its own."""

    def _request_state(self) -> threading.local:
        return self.__dict__.setdefault("_request_local", threading.local())

    @property  # type: ignore[override]
    def current_event(self) -> Any:
        return getattr(self._request_state(), "event", None)

    @current_event.setter
    def current_event(self, value: Any) -> None:
        self._request_state().event = value

    @property  # type: ignore[override]
    def lambda_context(self) -> Any:
        return getattr(self._request_state(), "lambda_context", None)

    @lambda_context.setter
    def lambda_context(self, value: Any) -> None:
        self._request_state().lambda_context = value

    @property  # type: ignore[override]
    def context(self) -> dict[str, Any]:
        state = self._request_state()
        if not hasattr(state, "context"):
            state.context = {}
        return state.context

    @context.setter
    def context(self, value: dict[str, Any]) -> None:
        self._request_state().context = value

    def _convert_matches_into_route_keys(self, match: Any) -> dict[str, str]:
        """Path parameters as the caller meant them: API Gateway's rawPath keeps the percent-encoding
        (`/v1/tenants/t%3A1`), and Powertools hands the matched text over as it is, so an id with a `:`
        that a client encoded failed its own pattern (422)."""
        return {name: unquote(value) for name, value in match.groupdict().items()}

    def methods_of(self, path: str) -> list[str]:
        """The methods routed for `path`, matched as Powertools matches a request's path."""
        routes = self._static_routes + self._dynamic_routes
        return sorted({route.method for route in routes if route.rule.match(path)})

    def _handle_not_found(self, method: str, path: str) -> ResponseBuilder:
        """A route that exists for other methods answers 405 with `Allow` (RFC 9110), not 404: the API owns
        every method of /v1 (the template routes them all here), and a caller should learn which exist.
        It runs the whole chain, as Powertools' own 404 does, so a caller without a key still gets 401."""
        allowed = self.methods_of(path)
        if not allowed:
            return super()._handle_not_found(method, path)

        def not_allowed() -> None:
            raise errors.MethodNotAllowed(f"{method} is not allowed on {path}; it takes {', '.join(allowed)}",
                                          allow=allowed)

        route = Route(rule=self._compile_regex(r".*"), method=method, path=path, func=not_allowed,
                      cors=self._cors_enabled, compress=False)
        self.append_context(_route=route, _path=path, not_allowed=True)
        return self._call_route(route=route, route_arguments={})

    def resolve(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        headers = event.get("headers") or {}
        declared = media_type(headers)
        # Powertools' validator parses by the raw header's prefix; hand it JSON's own name for what we read
        # as JSON. Anything else keeps its name and is refused with 415 (guard_content_type).
        if event.get("body") and read_as_json(declared) and headers.get("content-type") != "application/json":
            event = {**event, "headers": {**headers, "content-type": "application/json"}}
        self.current_event = self._to_proxy_event(event)
        self.lambda_context = context
        return super().resolve(event, context)


Gate = Callable[[APIGatewayHttpResolver], None]


def _before_validation(resolver: APIGatewayHttpResolver, gates: list[Gate]) -> None:
    """Run `gates` ahead of request validation. Powertools runs its validation before every `use()`
    middleware, so a caller without an API key would learn about field errors (422) before being told
    to authenticate (401). The validation middleware is a private attribute: if a Powertools release
    renames it, building any resolver fails at import, and tests/integration/test_bad_input.py checks
    that 401 still comes first."""
    validation = resolver._request_validation_middleware

    def gated(app: APIGatewayHttpResolver, next_middleware: Any) -> Response:
        for gate in gates:
            gate(app)  # raises a domain error, mapped by the resolver's exception handlers
        return validation(app, next_middleware)

    resolver._request_validation_middleware = gated


def new_resolver(*, gates: list[Gate] | None = None) -> APIGatewayHttpResolver:
    """A resolver in our error format; `gates` (e.g. authentication) run before validation, after the
    body-size guard and before the content-type guard (a caller without a key learns nothing else)."""
    resolver = JsonResolver(enable_validation=True)
    _before_validation(resolver, [guard_body, *(gates or []), guard_content_type])
    def in_dialect(answer: Callable[[Any, bool], Response]) -> Callable[[Any], Response]:
        def handler(exc: Any) -> Response:
            event = resolver.current_event
            return answer(exc, speaks_openai(event.path if event is not None else None))
        return handler

    resolver.exception_handler(errors.StillhouseError)(in_dialect(_domain_error))
    resolver.exception_handler(RequestValidationError)(in_dialect(_validation_error))
    resolver.exception_handler(Exception)(in_dialect(_unexpected))
    return resolver
