"""A local API Gateway HTTP API: HTTP requests -> real payload-format-2.0 events -> the functions."""
from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from stillhouse_local.lambdas import FunctionRegistry
from stillhouse_local.template import HttpRoute

MAX_BODY = 10 * 1024 * 1024  # API Gateway's own payload limit


def http_api_event(route: HttpRoute, method: str, raw_path: str, query: str, headers: dict[str, str],
                   body: bytes, path_parameters: dict[str, str], source_ip: str) -> dict[str, Any]:
    text_body: str | None
    try:
        text_body, is_b64 = (body.decode("utf-8"), False) if body else (None, False)
    except UnicodeDecodeError:
        text_body, is_b64 = base64.b64encode(body).decode(), True
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params[key] = f"{params[key]},{value}" if key in params else value  # API Gateway joins repeats
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": route.route_key,
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
            "routeKey": route.route_key,
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": text_body,
        "isBase64Encoded": is_b64,
        "stageVariables": None,
    }


#: A route the gateway answers itself, not a function of the template: () -> (status, headers, body).
LocalRoute = Callable[[], tuple[int, dict[str, str], bytes]]


class HttpGateway:
    def __init__(self, routes: list[HttpRoute], functions: FunctionRegistry, host: str = "127.0.0.1", port: int = 3000,
                 local_routes: dict[tuple[str, str], LocalRoute] | None = None):
        self.routes = routes
        self.functions = functions
        self.local_routes = local_routes or {}  # (method, path): the embedded stack's own (GET /metrics)
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-gateway", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes, source_ip: str) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(target)
        local = self.local_routes.get((method, parts.path))
        if local is not None:
            return local()
        for route in self.routes:
            params = route.match(method, parts.path)
            if params is not None:
                event = http_api_event(route, method, parts.path, parts.query, headers, body, params, source_ip)
                return _response(self.functions.get(route.function).invoke(event))
        return 404, {"content-type": "application/json"}, json.dumps({"message": "Not Found"}).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet: the functions log in JSON
                return None

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length > MAX_BODY:
                    self._send(413, {"content-type": "application/json"}, b'{"message":"Request Entity Too Large"}')
                    self.close_connection = True
                    return
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    status, out_headers, out = gateway.dispatch(self.command, self.path, headers, body, self.client_address[0])
                except Exception:  # noqa: BLE001 - API Gateway answers 500 when the integration fails
                    status, out_headers, out = 500, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}'
                self._send(status, out_headers, out)

            def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        return Handler


def _response(result: Any) -> tuple[int, dict[str, str], bytes]:
    """Payload format 2.0 response rules, including the 'plain object means 200 JSON' shortcut."""
    if not isinstance(result, dict) or "statusCode" not in result:
        return 200, {"content-type": "application/json"}, json.dumps(result).encode()
    headers = {k.lower(): str(v) for k, v in (result.get("headers") or {}).items()}
    for key, values in (result.get("multiValueHeaders") or {}).items():
        headers[key.lower()] = ",".join(map(str, values))
    body = result.get("body") or ""
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    return int(result["statusCode"]), headers, raw
