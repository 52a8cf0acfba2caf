"""The stand-in's HTTP server: a ThreadingHTTPServer that can cut every open connection at stop, and
the request handler that sends each path to the hosted-API, worker or fault routes."""
from __future__ import annotations

import logging
import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from stillhouse_local.runpod_standin.api_routes import HostedRoutes
from stillhouse_local.runpod_standin.engine import JobEngine
from stillhouse_local.runpod_standin.http_base import MAX_RUNSYNC_BODY, Reply, err
from stillhouse_local.runpod_standin.management import Management
from stillhouse_local.runpod_standin.management_routes import ManagementRoutes
from stillhouse_local.runpod_standin.worker_face import WorkerFace
from stillhouse_local.runpod_standin.worker_routes import WorkerRoutes

log = logging.getLogger("stillhouse_local.runpod_standin")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], engine: JobEngine, worker_face: WorkerFace,
                 management: Management | None = None) -> None:
        self.engine = engine
        self.worker_face = worker_face
        self.management = management
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conns_lock:
                self._conns.discard(request)

    def close_all_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Handler(HostedRoutes, WorkerRoutes, ManagementRoutes):
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        engine = self.server.engine
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        parts = [unquote(p) for p in split.path.strip("/").split("/")] if split.path.strip("/") else []
        try:
            self.raw_body = self._read_body(MAX_RUNSYNC_BODY)
            if parts[:1] == ["v2"]:
                self._hosted(engine, method, parts[1:])
            elif parts[:1] == ["_worker"]:
                self._worker(engine, method, parts[1:])
            elif parts[:1] == ["v1"] and self.server.management is not None:
                self._management(engine, self.server.management, method, parts[1:])
            elif parts[:1] == ["_faults"]:
                self._faults(engine, method, parts[1:])
            elif parts in ([], ["ping"]):
                raise Reply(200, {"ok": True, "service": "runpod-standin"})
            else:
                raise err(404, f"no route for {method} {split.path}")
        except Reply as reply:
            self._send(reply.code, reply.body, reply.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as error:  # noqa: BLE001
            log.exception("stand-in: %s %s failed", method, self.path)
            self._send(500, {"error": f"internal stand-in error: {type(error).__name__}: {error}"})
