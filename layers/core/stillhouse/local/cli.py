"""`stillhouse up`: the whole router on 127.0.0.1, no AWS account, no GPU."""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from stillhouse.local.stack import EmbeddedStack, StackOptions


def _up(args: argparse.Namespace) -> int:
    options = StackOptions(port=args.port, endpoints=[e for e in args.endpoints.split(",") if e])
    print("starting stillhouse (embedded: moto + in-process Lambdas + RunPod stand-in) ...", flush=True)
    stack = EmbeddedStack(options).start()
    key = stack.dev_api_key
    print(f"""
stillhouse is up
  API        {stack.url}
  API key    {key}
  RunPod     {stack.standin.base_url} (stand-in; endpoints: {', '.join(options.endpoints)})
  OpenAPI    {stack.url}/openapi.json

try:
  curl -s -H "Authorization: Bearer {key}" -d '{{"task":"echo","input":{{"text":"hi"}}}}' {stack.url}/v1/jobs
  curl -s -H "Authorization: Bearer {key}" {stack.url}/v1/jobs/<id>

Ctrl-C stops everything.""", flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    print("\nstopping ...", flush=True)
    stack.stop()
    print("stopped.", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stillhouse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the embedded stack in the foreground")
    up.add_argument("--port", type=int, default=3000, help="HTTP API port (default 3000)")
    up.add_argument("--endpoints", default="local", help="stand-in RunPod endpoints, comma-separated")
    up.set_defaults(func=_up)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
