"""HTTP servers on 127.0.0.1 that misbehave: callers' webhook endpoints on raw sockets, each sending exactly
what it says, as slowly or as much as it says; and `Recorder`, which answers every request alike (e.g. a
redirect) and records what reached it."""
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RawReceiver:
    """Accepts connections on 127.0.0.1 and answers each with `answer(conn)`, in a thread of its own.
    Counts the connections open at once (`most_at_once`) and the bytes it sent (`sent`)."""

    def __init__(self):
        self.stopped = threading.Event()
        self.sent = 0
        self.open = 0
        self.most_at_once = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def answer(self, conn):
        raise NotImplementedError

    def send(self, conn, data):
        conn.sendall(data)
        with self._lock:
            self.sent += len(data)

    def _accept(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # stopped: the listening socket is closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with self._lock:
            self.connections += 1
            self.open += 1
            self.most_at_once = max(self.most_at_once, self.open)
        try:
            conn.settimeout(30)
            _read_request(conn)
            self.answer(conn)
        except OSError:
            pass  # the client hung up: what these receivers are for
        finally:
            with self._lock:
                self.open -= 1
            conn.close()

    def stop(self):
        self.stopped.set()
        self._server.close()


class Dripping(RawReceiver):
    """Answers one byte every `every_s` and never finishes its status line and headers; stops after
    `for_s` (so that code that waits for it, as the delivery used to, fails its test in bounded time)."""

    def __init__(self, every_s=0.3, for_s=30.0):
        self.every_s, self.for_s = every_s, for_s
        super().__init__()

    def answer(self, conn):
        head = b"HTTP/1.1 200 OK\r\nX-Drip: " + b"a" * 10_000
        end = time.monotonic() + self.for_s
        for byte in head:
            if time.monotonic() > end or self.stopped.is_set():
                return
            self.send(conn, bytes([byte]))
            time.sleep(self.every_s)


class Flooding(RawReceiver):
    """Answers 200 with a body of a gigabyte, sent as fast as the client takes it, up to `up_to` bytes."""

    def __init__(self, up_to=256 * 2**20):
        self.up_to = up_to
        super().__init__()

    def answer(self, conn):
        self.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % 2**30)
        chunk = b"x" * 65536
        while self.sent < self.up_to and not self.stopped.is_set():
            self.send(conn, chunk)


class HugeHead(RawReceiver):
    """Answers 200 with headers of about 3 MB (each under http.client's own limits on a line and a count)."""

    def answer(self, conn):
        self.send(conn, b"HTTP/1.1 200 OK\r\n")
        for n in range(50):
            self.send(conn, b"X-Big-%d: %s\r\n" % (n, b"b" * 60_000))
        self.send(conn, b"Content-Length: 0\r\n\r\n")


def _read_request(conn):
    """The request's head and its body (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


class Recorder:
    """An HTTP server on 127.0.0.1 that records each request's method, path and Authorization header, and
    answers with `status` (and `location`, if set)."""

    def __init__(self, status=200, location=None):
        self.received = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                recorder.received.append((self.command, self.path, self.headers.get("Authorization")))
                body = b'{"id": "rp-target", "status": "IN_QUEUE"}'
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
