"""Request plumbing shared by the stand-in's routes: the early-answer exception (`Reply`), body
limits and reading, JSON answers, Bearer auth and the endpoint lookup."""
from __future__ import annotations

import hmac
import json
import logging
import select
import socket
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from stillhouse_local.runpod_standin.engine import JobEngine
from stillhouse_local.runpod_standin.state import Endpoint

if TYPE_CHECKING:
    from stillhouse_local.runpod_standin.server import Server

log = logging.getLogger("stillhouse_local.runpod_standin")

MAX_RUN_BODY, MAX_RUNSYNC_BODY = 10 * 2**20, 20 * 2**20


class Reply(Exception):
    """Raised inside a route to answer at once."""

    def __init__(self, code: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(code)
        self.code, self.body, self.headers = code, body, headers or {}


def err(code: int, message: str, **extra: Any) -> Reply:
    """A Reply whose body is `{"error": message, **extra}`."""
    return Reply(code, {"error": message, **extra})


class BaseHandler(BaseHTTPRequestHandler):
    """What every route uses; the routes themselves live in api_routes and worker_routes."""

    protocol_version = "HTTP/1.1"
    server: Server
    timeout = 300  # idle keep-alive connections are closed after this
    disable_nagle_algorithm = True  # else small keep-alive answers stall ~40 ms on delayed ACKs
    query: dict[str, str]
    raw_body: bytes

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def _read_body(self, limit: int) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            self.close_connection = True
            raise err(413, f"payload too large ({length} bytes; limit {limit})")
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> Any:
        if not self.raw_body.strip():
            return None
        try:
            # The SDK posts JSON with Content-Type application/x-www-form-urlencoded: parse regardless.
            return json.loads(self.raw_body)
        except (ValueError, UnicodeDecodeError) as error:
            raise err(400, f"body is not valid JSON: {error}") from error

    def _send(self, code: int, body: Any = None, headers: dict[str, str] | None = None) -> bool:
        data = b"" if body is None or code == 204 else json.dumps(body).encode()
        try:
            self.send_response(code)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self._headers_buffer.append(b"\r\n" + data)  # headers and body in one write
            self.flush_headers()
            return True
        except OSError:
            self.close_connection = True
            return False

    def _peer_gone(self) -> bool:
        """True when the client closed its end (a held long-poll whose worker went away)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _bearer_ok(self, engine: JobEngine) -> bool:
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), engine.settings.api_key.encode())

    @staticmethod
    def _endpoint(engine: JobEngine, parts: list[str]) -> Endpoint:
        if not parts or not parts[0]:
            raise err(404, "endpoint id missing")
        ep = engine.find_endpoint(parts[0])
        if ep is None:
            raise err(404, f"endpoint {parts[0]!r} not found")
        return ep
