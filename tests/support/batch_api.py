"""A fake of OpenAI's Files and Batch routes (the contract the router's /v1/files and /v1/batches follow) on
127.0.0.1, for the CLI's tests: real HTTP, real multipart, OpenAI's shapes and error shape.

A batch does not run: each `GET /v1/batches/{id}` applies the next step of its plan (`plan` when it was made,
a list of partial batch objects) and answers the batch as it then is; a plan's step may name files with
`FakeBatchApi.add_file`. Every request is recorded as (method, path, query, Authorization)."""
from __future__ import annotations

import itertools
import json
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
TERMINAL = ("completed", "failed", "expired", "cancelled")
CREATED_AT = 1_790_000_000


def error(status: int, message: str, param: str | None = None, code: str | None = None) -> tuple[int, Any]:
    kind = {401: "authentication_error", 404: "invalid_request_error", 409: "conflict_error"}.get(
        status, "invalid_request_error")
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


def multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body's fields: name → (filename, content)."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not message.is_multipart():
        return {}
    return {part.get_param("name", header="content-disposition"): (part.get_filename(),
                                                                   part.get_payload(decode=True))
            for part in message.iter_parts()}


class FakeBatchApi:
    def __init__(self, key: str = "sk-batch-test") -> None:
        self.key = key
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.plans: dict[str, list[dict[str, Any]]] = {}
        self.plan: list[dict[str, Any]] = []  # the next batch made follows this plan
        self.created: list[dict[str, Any]] = []  # the bodies of POST /v1/batches
        self.uploads: list[dict[str, Any]] = []  # the fields of POST /v1/files
        self.requests: list[tuple[str, str, dict[str, list[str]], str | None]] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                query = parse_qs(parts.query)
                fake.requests.append((self.command, parts.path, query, self.headers.get("Authorization")))
                with fake._lock:
                    status, answer = fake.route(self.command, parts.path, query, self.headers, body)
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if isinstance(answer, bytes)
                                 else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- state -----------------------------------------------------------------------------------------
    def add_file(self, content: bytes, *, purpose: str = "batch_output", filename: str = "out.jsonl") -> str:
        file_id = f"file-{next(self._ids):04d}"
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content), "created_at": CREATED_AT,
                               "filename": filename, "purpose": purpose, "status": "processed"}
        self.contents[file_id] = content
        return file_id

    def add_batch(self, **fields: Any) -> dict[str, Any]:
        """A batch as the API would show it, `fields` over the defaults of one just made."""
        n = next(self._ids)
        batch = {"id": f"batch_{n:04d}", "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
                 "input_file_id": "file-input", "completion_window": "24h", "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": CREATED_AT + n,
                 "in_progress_at": None, "expires_at": CREATED_AT + n + 86400, "finalizing_at": None,
                 "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
                 "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "metadata": None, **fields}
        self.batches[batch["id"]] = batch
        return batch

    # --- routes ----------------------------------------------------------------------------------------
    def route(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
              body: bytes) -> tuple[int, Any]:
        if headers.get("Authorization") != f"Bearer {self.key}":
            return error(401, "Incorrect API key provided", code="invalid_api_key")
        segments = path.strip("/").split("/")
        match method, segments:
            case "POST", ["v1", "files"]:
                return self.upload(headers.get("Content-Type", ""), body)
            case "GET", ["v1", "files", file_id] if file_id in self.files:
                return 200, self.files[file_id]
            case "GET", ["v1", "files", file_id, "content"] if file_id in self.contents:
                return 200, self.contents[file_id]
            case "POST", ["v1", "batches"]:
                return self.create(json.loads(body or b"{}"))
            case "GET", ["v1", "batches"]:
                return self.list(query)
            case "GET", ["v1", "batches", batch_id] if batch_id in self.batches:
                steps = self.plans.get(batch_id)
                if steps:
                    self.batches[batch_id].update(steps.pop(0))
                return 200, self.batches[batch_id]
            case "POST", ["v1", "batches", batch_id, "cancel"] if batch_id in self.batches:
                batch = self.batches[batch_id]
                if batch["status"] in TERMINAL:
                    return error(409, f"Cannot cancel a batch with status '{batch['status']}'.")
                batch.update(status="cancelling", cancelling_at=CREATED_AT + 60)
                return 200, batch
        return error(404, f"No such route or object: {method} {path}")

    def upload(self, content_type: str, body: bytes) -> tuple[int, Any]:
        fields = multipart(content_type, body)
        purpose = (fields.get("purpose") or (None, b""))[1].decode()
        filename, content = fields.get("file") or (None, None)
        self.uploads.append({"purpose": purpose, "filename": filename, "content": content,
                             "content_type": content_type})
        if content is None or filename is None:
            return error(400, "'file' is a required property", param="file")
        if purpose != "batch":
            return error(400, f"'{purpose}' is not one of ['batch', ...]", param="purpose")
        return 200, self.files[self.add_file(content, purpose="batch", filename=filename)]

    def create(self, body: dict[str, Any]) -> tuple[int, Any]:
        self.created.append(body)
        if body.get("input_file_id") not in self.files:
            return error(400, f"No such file: {body.get('input_file_id')}", param="input_file_id")
        if body.get("endpoint") not in ENDPOINTS:
            return error(400, f"Invalid endpoint: {body.get('endpoint')}", param="endpoint")
        if body.get("completion_window") != "24h":
            return error(400, "Invalid completion_window: only '24h' is supported", param="completion_window")
        batch = self.add_batch(endpoint=body["endpoint"], input_file_id=body["input_file_id"],
                               metadata=body.get("metadata"))
        self.plans[batch["id"]], self.plan = list(self.plan), []
        return 200, batch

    def list(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        newest_first = sorted(self.batches.values(), key=lambda b: b["created_at"], reverse=True)
        after = (query.get("after") or [None])[0]
        if after:
            ids = [b["id"] for b in newest_first]
            newest_first = newest_first[ids.index(after) + 1:] if after in ids else []
        limit = int((query.get("limit") or ["20"])[0])
        page = newest_first[:limit]
        return 200, {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                     "last_id": page[-1]["id"] if page else None, "has_more": len(newest_first) > limit}
