"""Streaming front: the API's routes behind a Lambda Function URL in RESPONSE_STREAM mode (AWS Lambda Web
Adapter runs `run.sh`, which serves `application` on $PORT). Event streams (`stream: true`) are sent as they
are made; everything else is answered as the API function answers it (stillhouse/http/streaming.py)."""
import os
from wsgiref.simple_server import WSGIRequestHandler, make_server

from stillhouse.container import startup_check
from stillhouse.http.public_api import serve
from stillhouse.http.streaming import StreamedAnswer, respond, wsgi_app

startup_check()  # every setting validated now (Lambda init), not at first use


def stream_handler(event: dict, context: object) -> StreamedAnswer:
    return respond(serve, event, context)


application = wsgi_app(stream_handler)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:  # the API logs in JSON; no access lines on stderr
        return None


if __name__ == "__main__":  # the Lambda Web Adapter sends one request at a time to each instance
    make_server("127.0.0.1", int(os.environ.get("PORT", "8000")), application, handler_class=_QuietHandler).serve_forever()
