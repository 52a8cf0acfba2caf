"""What the soak runs against: the embedded stack's parameters (short timers so recovery takes seconds)
and the fault mix of the RunPod stand-in, as steady knobs per endpoint plus a timeline of windows
(an endpoint hard-down, then back; latency spikes). Knobs: local/stillhouse_local/runpod_standin/faults.py."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import Ticker, log

ENDPOINTS = ["local", "east", "west"]

# Short timers, as tests/integration/conftest.py uses, but a longer visibility timeout: with a backlog on
# 2 cores one dispatch batch can take seconds, and a redelivery racing it only adds receives.
PARAMETERS = {
    "QueueVisibilityTimeout": "6", "MaxReceiveCount": "3",
    "RetryIntervalSeconds": "1", "CapacityIntervalSeconds": "1", "RetryBackoffRate": "2",
    "RetryMaxAttempts": "3", "RetryMaxDelaySeconds": "4",
    # A council member waits in RunPod's queue behind hundreds of jobs on 2 cores: a shorter callback timeout
    # times out members that are merely queued (and their retry queues them again at the back). Lost
    # webhooks of single jobs are settled by the sweeper in seconds whatever this is.
    "CallbackTimeoutSeconds": "120",
    "StatusPollSeconds": "2", "MaxAttempts": "6", "WaitForEndpointIntervalSeconds": "1",
    # A RunPod job lost inside a worker (crash_mode=hang) times out there, then is retried by us.
    "ExecutionTimeoutMs": "20000",
    # Live jobs not in flight on RunPod are looked at by the sweeper after this long without news; one
    # in flight, once it should have finished (at least SettleFloorSeconds after its start).
    "SweepAfterSeconds": "20", "SettleFloorSeconds": "10",
    # The soak invokes the sweeper itself every --sweep-every-s; the schedule's own runs sweep once.
    "SweepEverySeconds": "60",
    "LogLevel": "WARNING",
}
ENVIRONMENT = {"STILLHOUSE_BREAKER__COOLDOWN_S": "1.5", "STILLHOUSE_BREAKER__MAX_COOLDOWN_S": "3",
               # A deployed stack's default deadline, whatever the environment that started the soak says
               # (the integration tier gives its own jobs 120 s, and its environment reaches this process).
               "STILLHOUSE_TENANT_LIMITS__DEADLINE_S": "86400",
               "STILLHOUSE_WEBHOOK_RESOLVER": "loopback-only"}  # webhook names: no DNS lookups

# Steady knobs for the whole soak: every kind of fault the stand-in has, spread over the endpoints.
STEADY: dict[str, dict[str, Any]] = {
    "local": {"error_rate": 0.05, "rate_limit_rate": 0.05, "retry_after_s": 1, "drop_webhook_rate": 0.05,
              "duplicate_webhook_rate": 0.05, "crash_rate": 0.02, "crash_mode": "fail"},
    "east": {"error_rate": 0.03, "drop_webhook_rate": 0.05, "duplicate_webhook_rate": 0.10,
             "crash_rate": 0.03, "crash_mode": "requeue"},
    "west": {"rate_limit_rate": 0.05, "retry_after_s": 2, "drop_webhook_rate": 0.03,
             "duplicate_webhook_rate": 0.05, "crash_rate": 0.02, "crash_mode": "hang"},
}


# Our own functions dying mid-step (stillhouse.crash_points): every point at `--crash-rate` of its passes,
# at most once per job and point (so a crash re-runs a job at most once); seeded.
def crash_points(args: argparse.Namespace) -> dict[str, float]:
    return {"*": args.crash_rate} if args.crash_rate > 0 else {}


def start_crash_points(args: argparse.Namespace) -> None:
    from stillhouse import crash_points as points

    points.configure(crash_points(args), seed=args.seed)


def crash_point_report() -> dict[str, Any]:
    from stillhouse import crash_points as points

    return {"hits": dict(sorted(points.hits().items())), "passes": dict(sorted(points.passes().items())),
            "jobs_hit": len(points.fired())}


# AWS faults (stillhouse_local.aws_faults, on the clients factory's hook): issue 23's set (DynamoDB throttles
# on every call, SQS SendMessage/DeleteMessage failures, S3 PutObject 503s, StartExecution throttles), each
# at `--aws-fault-rate` of its calls, seeded. The stack's own pollers and the soak's moto clients see none.
_aws_faults: Any = None


def start_aws_faults(args: argparse.Namespace) -> None:
    global _aws_faults
    if args.aws_fault_rate > 0:
        from stillhouse_local.aws_faults import AwsFaults

        _aws_faults = AwsFaults.standard(args.aws_fault_rate, seed=args.seed).install()


def stop_aws_faults() -> None:
    if _aws_faults is not None:
        _aws_faults.clear()  # the soak reads its jobs back without faults; the counts are kept


def aws_fault_report() -> dict[str, Any]:
    if _aws_faults is None:
        return {"injected": {}, "total": 0}
    return {"injected": dict(sorted(_aws_faults.counts().items())), "total": _aws_faults.total()}


def environment(args: argparse.Namespace) -> dict[str, str]:
    """The functions' extra environment: ENVIRONMENT, and the batch's chunk size (small: many chunks)."""
    return {**ENVIRONMENT, "STILLHOUSE_BATCH__CHUNK_LINES": str(args.batch_chunk_lines)}


def stack_options(args: argparse.Namespace, log_dir: Path) -> Any:
    from stillhouse_local.stack import StackOptions

    parameters = {**PARAMETERS, "SweepAfterSeconds": str(args.sweep_after_s)}
    return StackOptions(port=0, endpoints=list(ENDPOINTS), parameters=parameters, environment=environment(args),
                        webhook_retry_delay_s=0.5, log_dir=log_dir)


def timeline(args: argparse.Namespace) -> list[tuple[float, str, dict[str, Any], str]]:
    """(at_s, endpoint, knobs, label), sorted: the windows of the soak, from its start."""
    events = [(args.down_at_s, args.down_endpoint, {"down": True}, "hard-down"),
              (args.down_at_s + args.down_for_s, args.down_endpoint, {"down": False}, "back up")]
    for at in (20.0, 60.0):
        events += [(at, "east", {"latency_ms": args.spike_ms}, f"latency spike {args.spike_ms} ms"),
                   (at + 10.0, "east", {"latency_ms": 0}, "latency back to 0")]
    return sorted(events, key=lambda e: e[0])


def fault_mix(args: argparse.Namespace) -> dict[str, Any]:
    return {"steady": STEADY, "seed": args.seed, "crash_points": crash_points(args), "aws_fault_rate": args.aws_fault_rate,
            "timeline": [{"at_s": at, "endpoint": ep, "knobs": knobs, "what": label}
                         for at, ep, knobs, label in timeline(args)]}


def prepare_endpoints() -> None:
    """Every endpoint takes jobs (the stack registered them with models ["*"]), with the steady knobs."""
    from stillhouse.container import container

    for name in ENDPOINTS:
        container().registry.update(name, enabled=True)


def apply_steady(stack: Any, seed: int) -> None:
    for i, (name, knobs) in enumerate(STEADY.items()):
        stack.standin.set_faults(name, **knobs, seed=seed + i)


def start_timeline(stack: Any, args: argparse.Namespace) -> tuple[Ticker, list[dict[str, Any]]]:
    """Apply the timeline's windows as they fall due; returns the ticker and the log of what was applied."""
    pending = list(timeline(args))
    applied: list[dict[str, Any]] = []

    def tick(elapsed: float) -> None:
        while pending and pending[0][0] <= elapsed:
            _at, endpoint, knobs, label = pending.pop(0)
            stack.standin.set_faults(endpoint, **knobs)
            applied.append({"at_s": round(elapsed, 1), "endpoint": endpoint, "what": label})
            log(f"t={elapsed:.0f}s {endpoint}: {label}")

    limit = max(at for at, *_ in timeline(args)) + 5
    return Ticker("timeline", 0.25, tick, limit).start(), applied
