"""The stand-in's command line: ``python -m stillhouse_local.runpod_standin --port 8100 --endpoints a,b``."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from stillhouse_local.runpod_standin.standin import RunPodStandIn
from stillhouse_local.runpod_standin.state import Scaling


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stillhouse_local.runpod_standin",
                                description="Local stand-in of RunPod serverless (hosted API + worker queue).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--endpoints", default="local", help="comma-separated endpoint ids")
    p.add_argument("--api-key", default=os.environ.get("STILLHOUSE_RUNPOD_API_KEY", "local-key"))
    p.add_argument("--handler", default=None, help="path of the worker handler (default gpu_handler/handler.py)")
    p.add_argument("--no-workers", action="store_true", help="start no worker processes")
    p.add_argument("--concurrency", type=int, default=1, help="exported to the worker as WORKER_CONCURRENCY")
    p.add_argument("--endpoint-env", action="append", default=[], metavar="EP:NAME=VALUE",
                   help="extra environment for one endpoint's worker, e.g. b:WORKER_STREAMING=true (repeatable)")
    p.add_argument("--log-dir", default=None, help="worker logs go here (default: discarded)")
    p.add_argument("--webhook-retry-delay", type=float, default=1.0)
    p.add_argument("--result-ttl", type=float, default=1800)
    p.add_argument("--seed", type=int, default=None)
    d = Scaling()  # RunPod's defaults
    p.add_argument("--workers-min", type=int, default=d.workers_min, help="workersMin (at least one runs)")
    p.add_argument("--workers-max", type=int, default=d.workers_max, help="workersMax per endpoint")
    p.add_argument("--scaler", choices=("QUEUE_DELAY", "REQUEST_COUNT"), default=d.scaler_type, help="scalerType")
    p.add_argument("--scaler-value", type=float, default=d.scaler_value,
                   help="scalerValue: seconds a job may wait (QUEUE_DELAY), or jobs per worker (REQUEST_COUNT)")
    p.add_argument("--idle-timeout", type=float, default=d.idle_timeout_s, help="idleTimeout, seconds")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s")
    endpoint_env: dict[str, dict[str, str]] = {}
    for item in args.endpoint_env:
        ep, sep, assignment = item.partition(":")
        name, eq, value = assignment.partition("=")
        if not (sep and eq and ep.strip() and name.strip()):
            p.error(f"--endpoint-env wants EP:NAME=VALUE, got {item!r}")
        endpoint_env.setdefault(ep.strip(), {})[name.strip()] = value
    standin = RunPodStandIn(
        host=args.host, port=args.port, api_key=args.api_key,
        endpoints=[e.strip() for e in args.endpoints.split(",") if e.strip()],
        handler_path=args.handler, start_workers=not args.no_workers, worker_concurrency=args.concurrency,
        endpoint_env=endpoint_env,
        webhook_retry_delay_s=args.webhook_retry_delay, result_ttl_s=args.result_ttl,
        log_dir=Path(args.log_dir) if args.log_dir else None, seed=args.seed,
        scaling=Scaling(workers_min=args.workers_min, workers_max=args.workers_max, scaler_type=args.scaler,
                        scaler_value=args.scaler_value, idle_timeout_s=args.idle_timeout),
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    standin.start()
    print(f"RunPod stand-in: {standin.api_base()}/{{{','.join(standin.endpoints)}}}/run  "
          f"(Authorization: Bearer {args.api_key}); Ctrl-C stops", flush=True)
    try:
        done.wait()
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
