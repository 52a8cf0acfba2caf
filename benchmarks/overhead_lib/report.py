"""The JSON report of one measured run: latencies, AWS calls and capacity units per job, Lambda use, cost
per 1M jobs; and the functions' sizes (MemorySize, architecture) that price their GB-s."""
from __future__ import annotations

import argparse
import math
import os
import re
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from .metering import Meter
from .prices import LAMBDA_PLATFORM_LOG_BYTES, PRICE_SOURCE, price
from .stats import quantile, summary

#: S3 request classes (PRICES' s3_put / s3_get rows, as benchmarks/batch.py); DeleteObject is free.
S3_PUT = {"s3.PutObject", "s3.CopyObject", "s3.ListObjectsV2"}
S3_GET = {"s3.GetObject", "s3.HeadObject"}
DETAIL = re.compile(r"delay=(\S+?)ms exec=(\S+?)ms")


def _parse_at(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def function_sizes(template: Path) -> tuple[dict[str, int], dict[str, str]]:
    """MemorySize and architecture of each function, from the translated template (Globals applied)."""
    from stillhouse_local.template import translate

    memory, arch = {}, {}
    for logical_id, res in translate(template).cloudformation.get("Resources", {}).items():
        if res.get("Type") == "AWS::Lambda::Function":
            props = res.get("Properties", {})
            memory[logical_id] = int(props.get("MemorySize", 128))
            arch[logical_id] = (props.get("Architectures") or ["x86_64"])[0]
    return memory, arch


def report(args: argparse.Namespace, meter: Meter, records: list[dict[str, Any]], wall_s: float,
           factory_calls: Counter, sfn: dict[str, Any], memory: dict[str, int], arch: dict[str, str],
           load_start: tuple[float, ...], load_end: tuple[float, ...], startup_s: float,
           floor: dict[str, Any] | None = None) -> dict[str, Any]:
    completed = [r for r in records if r.get("status") == "COMPLETED" and "job" in r]
    n = len(completed)
    errors = Counter(r.get("error") or r.get("status") for r in records if r.get("status") != "COMPLETED")

    e2e, submit, overhead, delay, execution, router = [], [], [], [], [], []
    stages: dict[str, list[float]] = defaultdict(list)
    callback: dict[str, list[float]] = defaultdict(list)
    attempts = Counter()
    for r in completed:
        job = r["job"]
        attempts[job.get("attempts")] += 1
        e2e_ms = (r["t_visible"] - r["t0"]) * 1000
        e2e.append(e2e_ms)
        submit.append((r["t_accepted"] - r["t0"]) * 1000)
        events = job.get("events", [])
        last = events[-1] if events else {}
        found = DETAIL.search(last.get("detail") or "")
        runpod_ms = None  # RunPod's delayTime + executionTime of this job
        if found and found.group(2) not in ("None", ""):
            ex = float(found.group(2))
            dl = float(found.group(1)) if found.group(1) not in ("None", "") else 0.0
            execution.append(ex)
            delay.append(dl)
            overhead.append(e2e_ms - ex)
            router.append(e2e_ms - ex - dl)
            runpod_ms = ex + dl
        at = {e["status"]: _parse_at(e["at"]) for e in events}
        began = meter.callback_started.get(job["id"])
        if runpod_ms is not None and began is not None and {"IN_PROGRESS", "COMPLETED"} <= set(at):
            # IN_PROGRESS -> COMPLETED, split: RunPod's part (queue delay + execution, its worker loop
            # included), then until our webhook handler began (the stand-in's POST, the HTTP shim, the wait
            # for the function's one instance), then the handler's work up to the terminal write.
            runpod_done = at["IN_PROGRESS"] + runpod_ms / 1000
            callback["runpod_delay_plus_exec"].append(runpod_ms)
            callback["until_handler_starts"].append((began - runpod_done) * 1000)
            callback["handler_until_terminal_write"].append((at["COMPLETED"] - began) * 1000)
        if {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"} <= set(at):
            stages["caller_to_in_queue"].append((at["IN_QUEUE"] - r["wall0"]) * 1000)
            stages["in_queue_to_in_progress"].append((at["IN_PROGRESS"] - at["IN_QUEUE"]) * 1000)
            stages["in_progress_to_completed"].append((at["COMPLETED"] - at["IN_PROGRESS"]) * 1000)
            stages["completed_to_visible"].append((r["wall_visible"] - at["COMPLETED"]) * 1000)

    excluded = {"SweeperFunction"}  # scheduled every minute: a fixed cost, not a per-job one
    # --- AWS calls per job, by (service, operation) and by function ------------------------------
    by_op: Counter[str] = Counter()
    by_fn: dict[str, Counter[str]] = defaultdict(Counter)
    fixed: Counter[str] = Counter()
    for (fn, service, op), count in meter.calls.items():
        if fn in excluded:
            fixed[f"{fn}:{service}.{op}"] += count
            continue
        by_op[f"{service}.{op}"] += count
        by_fn[fn][f"{service}.{op}"] += count
    attributed_total = sum(meter.calls.values())
    factory_total = sum(factory_calls.values())

    units: Counter[str] = Counter()
    for (fn, unit), q in meter.units.items():
        if fn not in excluded:
            units[unit] += q
    esm_per_job = {k: round(v / n, 4) for k, v in sorted(meter.esm.items())} if n else {}
    esm_billable = sum(v for k, v in meter.esm.items() if not k.endswith("(empty)"))
    units["sqs_request"] += esm_billable

    # --- Lambda --------------------------------------------------------------------------------
    lambda_info, invocations, gb_s = {}, 0, 0.0
    gb_s_price_key = {}
    for fn, durations in sorted(meter.durations.items()):
        if fn in excluded:
            continue
        billed_ms = sum(math.ceil(d) for d in durations)
        mem = memory.get(fn, 512)
        fn_gb_s = billed_ms / 1000 * mem / 1024
        invocations += len(durations)
        gb_s += fn_gb_s
        gb_s_price_key[fn] = f"lambda_gb_s_{arch.get(fn, 'arm64')}"
        lambda_info[fn] = {
            "invocations_per_job": round(len(durations) / n, 4) if n else None,
            "by_source": {s: c for (f, s), c in meter.sources.items() if f == fn},
            "duration_ms": summary(durations), "memory_mb": mem, "architecture": arch.get(fn),
            "gb_s_per_job": fn_gb_s / n if n else None, "init_ms": meter.init_ms.get(fn),
            "log_bytes_per_invocation": round(meter.log_bytes.get(fn, 0) / len(durations), 1) if durations else 0,
        }
    http_requests = sum(c for (fn, source), c in meter.sources.items() if source == "http" and fn not in excluded)

    # --- cost per 1M jobs ----------------------------------------------------------------------
    scale = 1e6 / n if n else 0.0
    lambda_gb_s_usd = sum(price(gb_s_price_key[fn], (info["gb_s_per_job"] or 0) * 1e6)
                          for fn, info in lambda_info.items())
    cost = {
        "dynamodb_writes": price("dynamodb_wru", units["dynamodb_wru"] * scale),
        "dynamodb_reads": price("dynamodb_rru", units["dynamodb_rru"] * scale),
        "sqs": price("sqs_request", units["sqs_request"] * scale),
        "secretsmanager": price("secretsmanager_call", units["secretsmanager_call"] * scale),
        "lambda_requests": price("lambda_request", invocations * scale),
        "lambda_duration": lambda_gb_s_usd,
        "apigw_http": price("apigw_http_request", http_requests * scale),
        "stepfunctions": price("sfn_standard_transition", sfn["transitions"] * scale),
        # inputs kept in S3 (outputs.spill): a PUT at submission, GETs where the job is read
        "s3": price("s3_put_request", sum(c for k, c in by_op.items() if k in S3_PUT) * scale)
        + price("s3_get_request", sum(c for k, c in by_op.items() if k in S3_GET) * scale),
    }
    total = sum(cost.values())
    log_bytes = sum(v for fn, v in meter.log_bytes.items() if fn not in excluded) + LAMBDA_PLATFORM_LOG_BYTES * invocations
    extras = {
        "cloudwatch_logs": price("cloudwatch_logs_ingest_gb", log_bytes * scale / 1e9),
        "xray": price("xray_trace", invocations * scale * args.xray_sampled_fraction),
    }
    gpu = args.gpu_usd_per_s * args.gpu_seconds * 1e6

    def r(v: float | None, d: int = 3) -> float | None:
        return None if v is None else round(v, d)

    jobs_per_s = n / wall_s if wall_s else None
    floor = floor or {}
    floor_ms = floor.get("floor_ms_per_job")

    def x_floor(ms: float | None) -> float | None:  # a latency as a multiple of one floor job
        return None if ms is None or not floor_ms else round(ms / floor_ms, 2)

    return {
        "benchmark": "overhead",
        **floor,
        # throughput as a fraction of the floor's (one thread, six calls per job, same moto, same minutes)
        "floor_ratio": r(jobs_per_s / floor["floor_jobs_per_s"], 3) if jobs_per_s and floor else None,
        "floor_multiples_p50": {
            "overhead_ms": x_floor(quantile(overhead, 0.5)),
            "router_overhead_ms": x_floor(quantile(router, 0.5)),
            **{f"stage_{k}": x_floor(quantile(v, 0.5)) for k, v in stages.items()},
        },
        "dynamodb_wru_per_job": r(units["dynamodb_wru"] / n, 3) if n else None,
        "mode": "embedded (moto in-process, in-process Lambdas, RunPod stand-in with the real gpu_handler)",
        "workflow_mode": args.workflow_mode, "path": getattr(args, "path", "fast"),
        "observe": args.observe if args.observe == "webhook" else f"poll every {args.poll_ms} ms",
        "jobs": len(records), "completed": n, "not_completed": dict(errors),
        "concurrency": args.concurrency,
        "wall_s": r(wall_s, 2), "jobs_per_s": r(jobs_per_s, 2),
        "e2e_ms": summary(e2e), "overhead_ms": summary(overhead), "queue_delay_ms": summary(delay),
        "exec_ms": summary(execution), "router_overhead_ms": summary(router), "submit_ms": summary(submit),
        "standin_vs_router_ms": standin_vs_router(args.concurrency, delay, execution, router),
        "stages_ms_p50": {k: r(quantile(v, 0.5), 1) for k, v in stages.items()},
        "stages_ms_p95": {k: r(quantile(v, 0.95), 1) for k, v in stages.items()},
        # IN_PROGRESS -> COMPLETED split (ms, p50); the IN_PROGRESS write comes after /run answered, so the
        # RunPod part can start before it: `until_handler_starts` is then an under-estimate.
        "callback_split_ms_p50": {k: r(quantile(v, 0.5), 1) for k, v in callback.items()},
        "attempts": {str(k): v for k, v in attempts.items()},
        "aws_calls_per_job": {k: r(v / n, 4) for k, v in sorted(by_op.items())} if n else {},
        "aws_calls_per_job_total": r(sum(by_op.values()) / n, 3) if n else None,
        "aws_calls_per_job_by_function": {fn: {k: r(v / n, 4) for k, v in sorted(c.items())}
                                          for fn, c in sorted(by_fn.items())} if n else {},
        "aws_calls_check": {"factory_counter_delta": factory_total, "attributed": attributed_total,
                            "outside_functions": sum(c for (fn, _, _), c in meter.calls.items() if fn == "outside")},
        "fixed_calls_in_window": dict(fixed),
        "meter_errors": dict(meter.hook_errors),
        "dynamodb_per_job_by_table": {
            table: {k: r(v / n, 3) for (t, k), v in sorted(meter.by_table.items()) if t == table}
            for table in sorted({t for t, _ in meter.by_table})} if n else {},
        "esm_sqs_calls_per_job": esm_per_job,
        "capacity_units_per_job": {"dynamodb_wru": r(units["dynamodb_wru"] / n, 3) if n else None,
                                   "dynamodb_rru": r(units["dynamodb_rru"] / n, 3) if n else None,
                                   "sqs_requests": r(units["sqs_request"] / n, 3) if n else None},
        "lambda": lambda_info,
        "lambda_invocations_per_job": r(invocations / n, 4) if n else None,
        "apigw_requests_per_job": r(http_requests / n, 4) if n else None,
        "stepfunctions": {**sfn, "transitions_per_job": r(sfn["transitions"] / n, 3) if n else None},
        "cost_per_1m_jobs_usd": r(total, 2),
        "cost_breakdown_per_1m_jobs_usd": {k: r(v, 3) for k, v in cost.items()},
        "cost_extras_per_1m_jobs_usd": {**{k: r(v, 3) for k, v in extras.items()},
                                        "log_bytes_per_job": r(log_bytes / n, 1) if n else None,
                                        "xray_sampled_fraction": args.xray_sampled_fraction},
        "cost_per_1m_jobs_usd_incl_extras": r(total + sum(extras.values()), 2),
        "gpu_assumption": {"usd_per_s": args.gpu_usd_per_s, "seconds_per_job": args.gpu_seconds,
                           "what": "RunPod serverless 24 GB flex worker (default); verify"},
        "gpu_cost_per_1m_jobs_usd": r(gpu, 2),
        "router_cost_share": r(total / gpu if gpu else None, 4),
        "startup_s": r(startup_s, 2),
        "loadavg_start": [round(x, 2) for x in load_start], "loadavg_end": [round(x, 2) for x in load_end],
        "cpus": os.cpu_count(),
        "price_source": PRICE_SOURCE,
    }


def standin_vs_router(callers: int, delay: list[float], execution: list[float], router: list[float]) -> dict[str, Any]:
    """Each side's cost at this caller count, p50 / p95 ms: the RunPod stand-in's queue delay (`delayTime`:
    /run accepted -> a worker took the job) and execution (`executionTime`), beside the router's overhead
    (e2e minus both). If the stand-in's part grows with the callers, the figures measure the stand-in."""
    def p(values: list[float]) -> dict[str, float | None]:
        return {"p50": quantile(values, 0.5), "p95": quantile(values, 0.95)}

    return {"callers": callers, "standin_queue_delay": p(delay), "standin_exec": p(execution),
            "router_overhead": p(router)}
