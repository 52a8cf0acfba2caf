"""Answers that stream: the same resolver, routes and checks as the API function, with event streams sent
as they are made instead of buffered.

API Gateway's HTTP API buffers a Lambda's answer; a Lambda Function URL in RESPONSE_STREAM mode does not,
but a Python Lambda can stream only as a web app behind the AWS Lambda Web Adapter. So the streaming
front (functions/openai_stream) is a small WSGI app that turns each request into the API Gateway event
the API function would get and resolves it with the very same resolver. While it does, a route that
answers with an event stream *holds* the stream here (`hold`) instead of joining it into one body, and
the front sends it chunk by chunk. Locally the embedded gateway serves the routes the template marks as
streamed (`StreamedRoutes`) through `stream_handler` in the same way.
"""
from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

_local = threading.local()

Resolve = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass
class StreamedAnswer:
    """An HTTP answer whose body comes as `chunks` (bytes); what a streaming front sends."""

    status: int
    headers: dict[str, str]
    chunks: Iterable[bytes]


@contextmanager
def accepting() -> Iterator[None]:
    """While resolving a request of the streaming front: routes may hold their event streams."""
    _local.accepting, _local.held = True, None
    try:
        yield
    finally:
        _local.accepting = False


def accepts() -> bool:
    return getattr(_local, "accepting", False)


def hold(events: Iterator[str]) -> None:
    _local.held = events


def take() -> Iterator[str] | None:
    held, _local.held = getattr(_local, "held", None), None
    return held


def respond(resolve: Resolve, event: dict[str, Any], context: Any = None) -> StreamedAnswer:
    """The resolver's answer to `event`, with a held event stream as its chunks."""
    with accepting():
        result = resolve(event, context)
        held = take()
    headers = {k.lower(): str(v) for k, v in (result.get("headers") or {}).items()}
    for key, values in (result.get("multiValueHeaders") or {}).items():
        headers[key.lower()] = ",".join(map(str, values))
    if held is not None:
        headers.pop("content-length", None)
        return StreamedAnswer(int(result["statusCode"]), headers, (e.encode() for e in held))
    body = result.get("body") or ""
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    return StreamedAnswer(int(result["statusCode"]), headers, [raw])


def http_api_event(method: str, raw_path: str, query: str, headers: dict[str, str], body: bytes,
                   source_ip: str, *, route_key: str = "$default",
                   path_parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event, as API Gateway would make it."""
    text_body: str | None
    # As API Gateway does: a body that is not text (a file upload's multipart form, bytes that are not
    # UTF-8) comes base64-encoded, the rest as text.
    multipart = headers.get("content-type", "").lower().startswith("multipart/")
    try:
        text_body, is_b64 = (body.decode("utf-8"), False) if body and not multipart else (None, False)
    except UnicodeDecodeError:
        text_body, is_b64 = None, False
    if body and text_body is None:
        text_body, is_b64 = base64.b64encode(body).decode(), True
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params[key] = f"{params[key]},{value}" if key in params else value  # API Gateway joins repeats
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": query,
        "cookies": [c.strip() for c in headers.get("cookie", "").split(";") if c.strip()] or None,
        "headers": headers,
        "queryStringParameters": params or None,
        "pathParameters": path_parameters or None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": headers.get("host", "127.0.0.1"),
            "domainPrefix": "local",
            "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": headers.get("user-agent", "")},
            "requestId": uuid.uuid4().hex,
            "routeKey": route_key,
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": text_body,
        "isBase64Encoded": is_b64,
        "stageVariables": None,
    }


def wsgi_event(environ: dict[str, Any]) -> dict[str, Any]:
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    return http_api_event(environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/",
                          environ.get("QUERY_STRING", ""), headers, body, environ.get("REMOTE_ADDR", ""))


def wsgi_app(handler: Callable[[dict[str, Any], Any], StreamedAnswer]) -> Callable[..., Iterable[bytes]]:
    """A WSGI app of a stream handler (what the Lambda Web Adapter runs)."""

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        answer = handler(wsgi_event(environ), None)
        reason = HTTPStatus(answer.status).phrase if answer.status in HTTPStatus._value2member_map_ else ""
        start_response(f"{answer.status} {reason}", list(answer.headers.items()))
        return answer.chunks

    return application


__all__ = ["StreamedAnswer", "accepting", "accepts", "hold", "http_api_event", "respond", "wsgi_app"]
