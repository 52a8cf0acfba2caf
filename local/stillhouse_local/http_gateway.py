"""A local API Gateway HTTP API: HTTP requests -> real payload-format-2.0 events -> the functions."""
from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from stillhouse.http import streaming
from stillhouse_local.lambdas import FunctionRegistry
from stillhouse_local.template import HttpRoute, StreamedRoute

MAX_BODY = 10 * 1024 * 1024  # API Gateway's own payload limit


def http_api_event(route: HttpRoute, method: str, raw_path: str, query: str, headers: dict[str, str],
                   body: bytes, path_parameters: dict[str, str], source_ip: str) -> dict[str, Any]:
    return streaming.http_api_event(method, raw_path, query, headers, body, source_ip, route_key=route.route_key,
                                    path_parameters=path_parameters)


#: A route the gateway answers itself, not a function of the template: () -> (status, headers, body).
LocalRoute = Callable[[], tuple[int, dict[str, str], bytes]]


class HttpGateway:
    def __init__(self, routes: list[HttpRoute], functions: FunctionRegistry, host: str = "127.0.0.1", port: int = 3000,
                 local_routes: dict[tuple[str, str], LocalRoute] | None = None,
                 streamed_routes: list[StreamedRoute] | None = None):
        self.routes = routes
        # (method, path) -> the streaming function that answers it (template Metadata StreamedRoutes): on
        # AWS a Function URL of its own, here the same port, so that `stream: true` really streams.
        self.streamed = {(r.method, r.path): r.function for r in streamed_routes or []}
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

    def dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes,
                 source_ip: str) -> tuple[int, dict[str, str], bytes] | streaming.StreamedAnswer:
        parts = urlsplit(target)
        local = self.local_routes.get((method, parts.path))
        if local is not None:
            return local()
        streamed = self.streamed.get((method, parts.path))
        if streamed is not None:
            event = streaming.http_api_event(method, parts.path, parts.query, headers, body, source_ip)
            return self.functions.get(streamed).invoke(event)
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
                    answer = gateway.dispatch(self.command, self.path, headers, body, self.client_address[0])
                except Exception:  # noqa: BLE001 - API Gateway answers 500 when the integration fails
                    answer = 500, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}'
                if isinstance(answer, streaming.StreamedAnswer):
                    self._stream(answer)
                else:
                    self._send(*answer)

            def __getattr__(self, name: str) -> Any:
                """Every method reaches the routes, as at API Gateway: BaseHTTPRequestHandler would answer a
                method without a `do_` of its own (TRACE, OPTIONS, HEAD, CONNECT, any token) with 501 HTML.
                An ANY route hands it to its function; anything else is API Gateway's 404 JSON."""
                if name.startswith("do_"):
                    return self._serve
                raise AttributeError(name)

            def _stream(self, answer: streaming.StreamedAnswer) -> None:
                """Chunked transfer encoding, each chunk written and flushed as the function yields it."""
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                try:
                    for chunk in answer.chunks:
                        if chunk:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client left; closing the generator stops its polling
                finally:
                    close = getattr(answer.chunks, "close", None)
                    if close is not None:
                        close()

            def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":  # HEAD's answer has the headers of a body, never the body
                    self.wfile.write(body)

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
