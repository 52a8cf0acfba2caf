"""Streaming front: the API's routes behind a Lambda Function URL in RESPONSE_STREAM mode (AWS Lambda Web
Adapter runs `run.sh`, which serves `application` on $PORT). Event streams (`stream: true`) are sent as they
are made; everything else is answered as the API function answers it (stillhouse/http/streaming.py)."""
import os

from stillhouse.http.streaming import StreamedAnswer, respond, wsgi_app


def stream_handler(event: dict, context: object) -> StreamedAnswer:
    from stillhouse.http.public_api import serve  # loaded by `main` before the port opens; here if imported

    return respond(serve, event, context)


application = wsgi_app(stream_handler)


def main() -> None:
    """The Web Adapter's process: load and check everything (the routes, the core, every setting, the live
    configuration) before the port opens, as the adapter's readiness check is this function's init; then
    serve one request at a time (the adapter sends no more to an instance)."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from stillhouse import snapstart

    snapstart.warm(("stillhouse.http.public_api",))

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args: object) -> None:  # the API logs in JSON; no access lines on stderr
            return None

    port = int(os.environ.get("PORT", "8000"))
    make_server("127.0.0.1", port, application, handler_class=QuietHandler).serve_forever()


if __name__ == "__main__":
    main()
