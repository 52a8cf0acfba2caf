"""`stillhouse up`: the whole router on 127.0.0.1, no AWS account, no GPU."""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from stillhouse_local.stack import EmbeddedStack, StackOptions


def _up(args: argparse.Namespace) -> int:
    options = StackOptions(port=args.port, endpoints=[e for e in args.endpoints.split(",") if e], aws=args.aws)
    print(f"starting stillhouse (embedded: {args.aws} + in-process Lambdas + RunPod stand-in) ...", flush=True)
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


def _api(args: argparse.Namespace, method: str, path: str, body: dict | None = None) -> int:
    import json
    import os

    import requests

    key = args.key or os.environ.get("STILLHOUSE_API_KEY") or os.environ.get("STILLHOUSE_DEV_API_KEY")
    if not key:
        print("an API key is needed: --key or STILLHOUSE_API_KEY", file=sys.stderr)
        return 2
    response = requests.request(method, args.url.rstrip("/") + path, json=body, timeout=10,
                                headers={"Authorization": f"Bearer {key}"})
    print(json.dumps(response.json(), indent=2))
    return 0 if response.ok else 1


def _endpoints_list(args: argparse.Namespace) -> int:
    return _api(args, "GET", "/v1/endpoints")


def _endpoints_put(args: argparse.Namespace) -> int:
    changes = {field: value for field, value in (
        ("endpoint_id", args.endpoint_id), ("base_url", args.base_url), ("weight", args.weight),
        ("max_in_flight", args.max_in_flight), ("enabled", args.enabled), ("secret_ref", args.secret_ref),
        ("models", args.models.split(",") if args.models else None),
    ) if value is not None}
    return _api(args, "PUT", f"/v1/endpoints/{args.name}", changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stillhouse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the embedded stack in the foreground")
    up.add_argument("--port", type=int, default=3000, help="HTTP API port (default 3000)")
    up.add_argument("--endpoints", default="local", help="stand-in RunPod endpoints, comma-separated")
    up.add_argument("--aws", choices=["moto", "localstack"], default="moto",
                    help="AWS backend: moto in-process (default), or LocalStack at $LOCALSTACK_HOST (started when none answers)")
    up.set_defaults(func=_up)

    endpoints = sub.add_parser("endpoints", help="list or edit RunPod endpoints of a running router")
    endpoints.add_argument("--url", default="http://127.0.0.1:3000", help="the router's API URL")
    endpoints.add_argument("--key", help="API key (admin to edit); default $STILLHOUSE_API_KEY")
    verbs = endpoints.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="endpoints with breaker state and statistics").set_defaults(func=_endpoints_list)
    put = verbs.add_parser("put", help="add an endpoint, or change some of its fields")
    put.add_argument("name")
    put.add_argument("--endpoint-id")
    put.add_argument("--base-url")
    put.add_argument("--models", help="comma-separated; * = any")
    put.add_argument("--weight", type=float)
    put.add_argument("--max-in-flight", type=int)
    put.add_argument("--secret-ref")
    put.add_argument("--enable", dest="enabled", action="store_const", const=True)
    put.add_argument("--disable", dest="enabled", action="store_const", const=False)
    put.set_defaults(func=_endpoints_put)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
