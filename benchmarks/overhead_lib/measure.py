"""One measured run: start the embedded stack, warm it up, run the jobs with the meter on, read back
the jobs' details and Step Functions histories (after the window, not counted), report."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from . import log
from .hot_items import HotItems, hot_items_section
from .load import COUNCIL3, ECHO, Receiver, count_transitions, long_prompt, run_jobs
from .metering import CountingStdout, DynamoMeter, Meter, install
from .quota_probe import quota_probes
from .report import function_sizes, report


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import requests
    from floor import measure_floor  # benchmarks/floor.py: this directory is on sys.path (a script's)

    meter = Meter()
    uninstall = install(meter)
    real_stdout_fd = os.dup(1)
    os.dup2(2, 1)  # anything written to fd 1 (worker processes, stray prints) goes to stderr
    sys.stdout = CountingStdout(meter, echo=args.verbose)  # type: ignore[assignment]
    try:
        return _run(args, meter, requests, measure_floor)
    finally:
        sys.stdout = sys.__stdout__
        os.dup2(real_stdout_fd, 1)
        os.close(real_stdout_fd)
        uninstall()


def _run(args: argparse.Namespace, meter: Meter, requests: Any, measure_floor: Any) -> dict[str, Any]:
    from stillhouse_local.stack import EmbeddedStack, StackOptions

    from stillhouse import aws

    load_start = os.getloadavg()
    path = getattr(args, "path", "fast")
    parameters = {"WorkflowMode": args.workflow_mode}
    environment: dict[str, str] = {"STILLHOUSE_WEBHOOK_RESOLVER": "loopback-only"}  # webhook names: no DNS lookups
    if path == "retry":
        parameters |= RETRY_PARAMETERS
        environment |= RETRY_ENVIRONMENT
    input_kb = getattr(args, "input_kb", 0.0)
    if input_kb > 0:  # the prompt's bound (InputLimits.prompt_chars) must let the long prompt through
        environment["STILLHOUSE_INPUT_LIMITS__PROMPT_CHARS"] = str(max(32_000, int(input_kb * 1024) + 1))
    t_start = time.monotonic()
    log(f"starting the embedded stack (WorkflowMode={args.workflow_mode}, path={path}) ...")
    from stillhouse_local.runpod_standin import Scaling

    scaling = Scaling(workers_min=args.standin_workers_min, workers_max=args.standin_workers_max,
                      scaler_value=args.standin_scaler_s, idle_timeout_s=args.standin_idle_s)
    stack = EmbeddedStack(StackOptions(port=0, parameters=parameters, environment=environment, scaling=scaling,
                                       mapping_concurrency=getattr(args, "mapping_concurrency", 1),
                                       log_dir=Path(tempfile.mkdtemp(prefix="stillhouse-bench-")))).start()
    receiver = Receiver()
    try:
        startup_s = time.monotonic() - t_start
        log(f"stack up in {startup_s:.1f} s at {stack.url}")
        # Instrument the event source mapping's SQS client (the pollers share one moto client).
        for poller in stack.pollers:
            meter.instrument_client(poller.sqs, "sqs", esm=True)
        ddb = stack.moto.client("dynamodb")  # harness client: not the factory, never counted
        indexes = {}
        for name in ddb.list_tables()["TableNames"]:
            desc = ddb.describe_table(TableName=name)["Table"]
            indexes[name] = [(g["IndexName"], {k["AttributeName"] for k in g["KeySchema"]},
                              g["Projection"]["ProjectionType"], set(g["Projection"].get("NonKeyAttributes", [])))
                             for g in desc.get("GlobalSecondaryIndexes", [])]
        meter.dynamo = DynamoMeter(indexes)
        meter.hot = HotItems.from_client(ddb)
        memory, arch = function_sizes(stack.options.template)

        job, hooks = _path(path, stack, ddb)
        if input_kb > 0:
            job = long_prompt(input_kb)
        submitted = job
        log(f"warm-up: {args.warmup} jobs")
        warm = run_jobs(stack.url, stack.dev_api_key, args.warmup, 1, args.observe, args.poll_ms, receiver, 120,
                        job_timeout_s=30.0 if path == "fast" else 120.0, job=job, **hooks)
        if any("error" in r for r in warm or []):
            raise RuntimeError(f"warm-up failed: {[r.get('error') for r in warm]}")
        _quiesce(meter)
        floor = {}
        if args.floor_jobs > 0:  # the floor, on this stack's moto server, minutes before the jobs
            log(f"floor: {args.floor_jobs} jobs of the six fast-path calls, one thread")
            floor = measure_floor(stack.moto.url, jobs=args.floor_jobs, warmup=min(10, args.floor_jobs))

        calls_before = Counter(aws.api_calls)
        meter.reset()
        meter.enabled = True
        log(f"measuring: {args.jobs} jobs at concurrency {args.concurrency} (observe={args.observe})")
        t0 = time.perf_counter()
        # A council or a retry takes several steps of a workflow: give each job longer before calling it lost.
        records = run_jobs(stack.url, stack.dev_api_key, args.jobs, args.concurrency, args.observe, args.poll_ms,
                           receiver, args.max_run_s, job_timeout_s=30.0 if path == "fast" else 120.0, job=job, **hooks)
        t1 = time.perf_counter()
        _quiesce(meter)
        meter.enabled = False
        factory_calls = Counter(aws.api_calls)
        factory_calls.subtract(calls_before)
        factory_calls = +factory_calls
        log(f"measured window {t1 - t0:.1f} s; reading job details (not counted)")

        # --- per job details (after the window: these GETs are not counted) ----------------------
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {stack.dev_api_key}"
        ok = [r for r in records if "error" not in r]
        for rec in ok:
            job = session.get(f"{stack.url}/v1/jobs/{rec['id']}", timeout=10).json()
            rec["job"] = job
        standin = {"scaling": vars(scaling), "workers": stack.standin.workers("local")}  # RunPod's side
        pollers = list(stack.pollers)
        job_ids = {r["id"] for r in records if "id" in r}
        sfn = count_transitions(stack.moto.client("stepfunctions"), job_ids)
        probe = quota_probes(stack.moto.url, meter.hot, getattr(args, "quota_probe", []))
        load_end = os.getloadavg()
    finally:
        receiver.stop()
        log("stopping the stack")
        stack.stop()

    result = report(args, meter, records, t1 - t0, factory_calls, sfn, memory, arch, load_start, load_end,
                    startup_s, floor)
    result["standin_vs_router_ms"]["standin_workers"] = standin
    result["input_bytes"] = len(json.dumps(submitted["input"], separators=(",", ":")))
    # The router's side: batches at once per queue's event source mapping (StackOptions.mapping_concurrency)
    result["standin_vs_router_ms"]["mapping_concurrency"] = {p.function + ":" + p.queue_url.rsplit("/", 1)[-1]:
                                                             p.concurrency for p in pollers}
    return {**result, **hot_items_section(meter.hot, result["completed"], probe)}


def _quiesce(meter: Meter, timeout: float = 10.0) -> None:
    """Wait until no handler runs (the webhook function finishes after the caller saw the result)."""
    deadline = time.monotonic() + timeout
    time.sleep(0.2)
    while meter.active and time.monotonic() < deadline:
        time.sleep(0.05)


# The retry path: waits of seconds, not minutes (as the fault soak), and a breaker that cools down fast.
RETRY_PARAMETERS = {"RetryIntervalSeconds": "1", "CapacityIntervalSeconds": "1", "RetryBackoffRate": "2",
                    "RetryMaxAttempts": "3", "RetryMaxDelaySeconds": "4", "WaitForEndpointIntervalSeconds": "1"}
RETRY_ENVIRONMENT = {"STILLHOUSE_BREAKER__COOLDOWN_S": "1", "STILLHOUSE_BREAKER__MAX_COOLDOWN_S": "2"}


def _path(path: str, stack: Any, ddb: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job each caller submits and the harness's steps around it, for one path of a job."""
    if path == "council3":
        return COUNCIL3, {}
    if path != "retry":
        return ECHO, {}
    # One retry: RunPod's /run answers 500 until the job is RETRYING (the recovery workflow has it), then
    # works, so the workflow's next attempt completes it. The harness reads the job with its own client.
    table = next(t for t in ddb.list_tables()["TableNames"] if "JobsTable" in t)

    def refuse() -> None:
        stack.standin.set_faults("local", error_rate=1.0)

    def heal_once_retrying(job_id: str) -> None:
        give_up = time.monotonic() + 20
        while time.monotonic() < give_up:
            item = ddb.get_item(TableName=table, Key={"id": {"S": job_id}}).get("Item") or {}
            if item.get("status", {}).get("S") not in (None, "IN_QUEUE", "IN_PROGRESS"):
                break
            time.sleep(0.05)
        stack.standin.set_faults("local", error_rate=0.0)

    return ECHO, {"before_submit": refuse, "after_accept": heal_once_retrying}
