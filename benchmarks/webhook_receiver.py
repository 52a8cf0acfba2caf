"""A caller's webhook endpoint on 127.0.0.1 for the benchmarks: answers 200 at once and hands each JSON
body, with the times it arrived, to the benchmark's own bookkeeping."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: on_post(body, perf_counter at arrival, wall clock at arrival)
OnPost = Callable[[dict[str, Any], float, float], None]


class WebhookReceiver:
    def __init__(self, on_post: OnPost, name: str = "bench-receiver") -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                return None

            def do_POST(self) -> None:  # the stdlib's name
                t, wall = time.perf_counter(), time.time()  # on entry: what a caller would timestamp
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
                try:
                    data = json.loads(body)
                except ValueError:
                    return
                if isinstance(data, dict):
                    on_post(data, t, wall)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name=name).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()  # a late try is refused at once, not left waiting on a socket nobody reads
