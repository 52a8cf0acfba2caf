"""The Batch API on the embedded stack: lines per second, AWS calls and cost per line, and what a running batch
does to interactive latency (docs/batches.md; prices: docs/cost.md).

    .venv/bin/python benchmarks/batch.py [--lines 10000] [--interactive 40]
    .venv/bin/python benchmarks/batch.py --quick        # CI's smoke run: 400 lines, a few interactive jobs

Prints ONE JSON object on stdout; progress goes to stderr. One embedded stack in this process (moto, the
in-process Lambdas, the HTTP shim, the RunPod stand-in whose `local` endpoint serves "*" with the real
gpu_handler worker), 127.0.0.1 only. Every line is an `echo-a` chat completion (no model weights).

1. **floor**: the moto floor of benchmarks/floor.py against this stack's moto server, after the warm-up.
2. **batch** (metered): POST /v1/files (the N-line JSONL), POST /v1/batches, then GET /v1/batches/{id} every
   `--poll-s` until it ends; `wall_s` = upload sent -> `completed` seen. Every AWS call the functions make in
   that window is counted (upload, start step, chunk writes and queueing, dispatch with its S3 reads and
   RunPod /run, the callbacks, the chunk counts, the finish step writing the output file), as overhead.py
   counts them, and priced with the same table (PRICES) into `usd_per_1m_lines`. The output file is then
   read (not counted) and each custom_id must come back once: `lines_lost`, `lines_duplicated`.
3. **interactive**: one caller, sequential, native `POST /v1/jobs` {"task":"echo"} with a webhook (as
   overhead.py measures latency: submit -> the signed webhook's arrival), `--interactive` jobs with no batch
   running, then, unmetered, as many as end while a second batch of `--loaded-lines` lines runs (from its
   `in_progress` to its end; a job the end overtakes is dropped), bounded by `--max-loaded-s`.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

# Run as a script, this directory is on sys.path: the parts shared with overhead.py live beside it.
from overhead_lib.load import ECHO, Receiver
from overhead_lib.metering import CountingStdout, DynamoMeter, Meter, install
from overhead_lib.prices import PRICE_SOURCE, price
from overhead_lib.report import function_sizes
from overhead_lib.stats import quantile, summary

CHAT = "/v1/chat/completions"
MODEL = "echo-a"
EXCLUDED = {"SweeperFunction"}  # scheduled every minute: a fixed cost, not a per-line one
#: S3 request classes (PRICES' s3_put / s3_get rows); DeleteObject is free.
S3_PUT = {"PutObject", "CopyObject", "ListObjects", "ListObjectsV2", "CreateMultipartUpload", "UploadPart",
          "CompleteMultipartUpload"}
S3_GET = {"GetObject", "HeadObject", "SelectObjectContent"}
TARGETS = {"lines_per_s_x_floor": 10.0, "aws_calls_per_line": 0.5, "usd_per_1m_lines": 1.0, "interactive_p50_ratio": 1.5}


def log(message: str) -> None:
    print(f"[batch] {message}", file=sys.stderr, flush=True)


def jsonl(n: int, prefix: str) -> bytes:
    return "".join(json.dumps({"custom_id": f"{prefix}-{i}", "method": "POST", "url": CHAT, "body": {
        "model": MODEL, "messages": [{"role": "user", "content": f"q{i}"}]}}) + "\n" for i in range(n)).encode()


# --------------------------------------------------------------------------------------------------------- #
#  The caller's side                                                                                         #
# --------------------------------------------------------------------------------------------------------- #
class BatchRun:
    """One batch through the openai SDK: upload, create, poll until it ends."""

    def __init__(self, client: Any, lines: int, prefix: str, poll_s: float, timeout_s: float) -> None:
        self.client, self.lines, self.prefix, self.poll_s, self.timeout_s = client, lines, prefix, poll_s, timeout_s
        self.polls = 0
        self.batch: Any = None
        self.t: dict[str, float] = {}

    def start(self) -> None:
        content = jsonl(self.lines, self.prefix)
        self.t["upload"] = time.perf_counter()
        file = self.client.files.create(file=(f"{self.prefix}.jsonl", io.BytesIO(content)), purpose="batch")
        self.t["uploaded"] = time.perf_counter()
        self.batch = self.client.batches.create(input_file_id=file.id, endpoint=CHAT, completion_window="24h")
        self.t["created"] = time.perf_counter()

    def status(self) -> Any:
        self.polls += 1
        self.batch = self.client.batches.retrieve(self.batch.id)
        if self.batch.status == "in_progress" and "in_progress" not in self.t:
            self.t["in_progress"] = time.perf_counter()
        return self.batch

    def wait(self) -> Any:
        deadline = time.monotonic() + self.timeout_s
        last = None
        while self.status().status not in ("completed", "failed", "expired", "cancelled"):
            counts = self.batch.request_counts
            if counts and counts.completed != last and counts.completed:
                last = counts.completed
                log(f"  {self.batch.id[:18]}: {counts.completed}/{counts.total} lines")
            if time.monotonic() > deadline:
                raise RuntimeError(f"batch still {self.batch.status} after {self.timeout_s} s: {self.batch.request_counts}")
            time.sleep(self.poll_s)
        self.t["ended"] = time.perf_counter()
        return self.batch

    def check(self) -> dict[str, Any]:
        """Every custom_id of the input back exactly once, with its own answer (reads are not counted)."""
        b = self.batch
        out = [json.loads(x) for x in self.client.files.content(b.output_file_id).text.splitlines() if x.strip()] \
            if b.output_file_id else []
        errors = [json.loads(x) for x in self.client.files.content(b.error_file_id).text.splitlines() if x.strip()] \
            if b.error_file_id else []
        seen = Counter(line["custom_id"] for line in out + errors)
        expected = {f"{self.prefix}-{i}" for i in range(self.lines)}
        wrong = 0
        for line in out:
            i = line["custom_id"].rsplit("-", 1)[1]
            try:
                content = line["response"]["body"]["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                content = None
            wrong += content != f"{MODEL} says: q{i}"
        return {"status": b.status, "lines_out": len(out), "lines_error_file": len(errors),
                "lines_lost": len(expected - set(seen)), "lines_duplicated": sum(c - 1 for c in seen.values() if c > 1),
                "lines_unexpected": len(set(seen) - expected), "wrong_answers": wrong,
                "chunks": (b.model_extra or {}).get("stillhouse", {}).get("chunks")}


def interactive(url: str, key: str, receiver: Receiver, n: int, until: threading.Event | None = None,
                max_s: float = 120.0, jobs: list[tuple[str, float, float]] | None = None) -> tuple[list[float], Counter]:
    """Sequential native echo jobs, submit -> webhook arrival (ms): `n` of them; with `until`, as many as end
    before it is set (a job the batch's end overtook is not counted: it did not run wholly under load).
    `jobs` gets (job id, wall time sent, wall time visible) of each one counted."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    body = {**ECHO, "webhook": receiver.url}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    stop_at = time.monotonic() + max_s
    while time.monotonic() < stop_at:
        if (until is None and len(latencies) >= n) or (until is not None and until.is_set()):
            break
        t0, wall0 = time.perf_counter(), time.time()
        response = session.post(url + "/v1/jobs", json=body, timeout=30)
        if response.status_code != 202:
            errors[f"submit {response.status_code}"] += 1
            continue
        arrival = receiver.wait(response.json()["id"], 60)
        if until is not None and until.is_set():
            break  # the batch ended while this job ran: it was not wholly under load
        if arrival is None or arrival[2].get("status") != "COMPLETED":
            errors["no webhook" if arrival is None else str(arrival[2].get("status"))] += 1
            continue
        latencies.append((arrival[0] - t0) * 1000)
        if jobs is not None:
            jobs.append((response.json()["id"], wall0, arrival[1]))
    return latencies, errors


# --------------------------------------------------------------------------------------------------------- #
#  The report of the metered batch                                                                           #
# --------------------------------------------------------------------------------------------------------- #
def costs(meter: Meter, lines: int, memory: dict[str, int], arch: dict[str, str]) -> dict[str, Any]:
    by_op: Counter[str] = Counter()
    by_fn: dict[str, Counter[str]] = defaultdict(Counter)
    by_service: Counter[str] = Counter()
    fixed: Counter[str] = Counter()
    for (fn, service, op), count in meter.calls.items():
        if fn in EXCLUDED:
            fixed[f"{fn}:{service}.{op}"] += count
            continue
        by_op[f"{service}.{op}"] += count
        by_fn[fn][f"{service}.{op}"] += count
        by_service[service] += count
    units: Counter[str] = Counter()
    for (fn, unit), q in meter.units.items():
        if fn not in EXCLUDED:
            units[unit] += q
    esm_billable = sum(v for k, v in meter.esm.items() if not k.endswith("(empty)"))
    units["sqs_request"] += esm_billable
    s3_put = sum(c for k, c in by_op.items() if k.startswith("s3.") and k[3:] in S3_PUT)
    s3_get = sum(c for k, c in by_op.items() if k.startswith("s3.") and k[3:] in S3_GET)

    invocations, gb_s_usd = 0, 0.0
    lambda_info: dict[str, Any] = {}
    for fn, durations in sorted(meter.durations.items()):
        if fn in EXCLUDED:
            continue
        billed = sum(math.ceil(d) for d in durations) / 1000 * memory.get(fn, 512) / 1024
        invocations += len(durations)
        gb_s_usd += price(f"lambda_gb_s_{arch.get(fn, 'arm64')}", billed)
        lambda_info[fn] = {"invocations": len(durations), "by_source": {s: c for (f, s), c in meter.sources.items() if f == fn},
                           "duration_ms": summary(durations), "gb_s": round(billed, 3)}
    http = sum(c for (fn, source), c in meter.sources.items() if source == "http" and fn not in EXCLUDED)
    scale = 1e6 / lines
    cost = {
        "dynamodb_writes": price("dynamodb_wru", units["dynamodb_wru"] * scale),
        "dynamodb_reads": price("dynamodb_rru", units["dynamodb_rru"] * scale),
        "sqs": price("sqs_request", units["sqs_request"] * scale),
        "s3_put": price("s3_put_request", s3_put * scale),
        "s3_get": price("s3_get_request", s3_get * scale),
        "secretsmanager": price("secretsmanager_call", units["secretsmanager_call"] * scale),
        "lambda_requests": price("lambda_request", invocations * scale),
        "lambda_duration": gb_s_usd * scale,
        "apigw_http": price("apigw_http_request", http * scale),
    }
    total_calls = sum(by_op.values())
    return {
        "aws_calls": total_calls,
        "aws_calls_per_line": round(total_calls / lines, 4),
        "aws_calls_by_service": dict(by_service.most_common()),
        "aws_calls_by_operation": dict(by_op.most_common()),
        "aws_calls_by_function": {fn: dict(c.most_common()) for fn, c in sorted(by_fn.items())},
        "esm_sqs_calls": dict(sorted(meter.esm.items())),
        "fixed_calls_in_window": dict(fixed),
        "dynamodb_wru": round(units["dynamodb_wru"], 1), "dynamodb_rru": round(units["dynamodb_rru"], 1),
        "dynamodb_wru_per_line": round(units["dynamodb_wru"] / lines, 4),
        "sqs_requests_billed": units["sqs_request"], "s3_put_requests": s3_put, "s3_get_requests": s3_get,
        "lambda_invocations": invocations, "apigw_requests": http, "lambda": lambda_info,
        "usd_per_1m_lines": round(sum(cost.values()), 3),
        "usd_per_1m_lines_breakdown": {k: round(v, 4) for k, v in cost.items()},
    }


# --------------------------------------------------------------------------------------------------------- #
#  The run                                                                                                   #
# --------------------------------------------------------------------------------------------------------- #
def run(args: argparse.Namespace) -> dict[str, Any]:
    import openai
    from floor import measure_floor  # benchmarks/floor.py: this directory is on sys.path (a script's)
    from stillhouse_local.stack import EmbeddedStack, StackOptions

    from stillhouse import aws

    meter = Meter()
    uninstall = install(meter)
    real_stdout_fd = os.dup(1)
    os.dup2(2, 1)  # anything written to fd 1 (worker processes, stray prints) goes to stderr
    sys.stdout = CountingStdout(meter, echo=args.verbose)  # type: ignore[assignment]
    environment = {"STILLHOUSE_WEBHOOK_RESOLVER": "loopback-only"}  # webhook names: no DNS lookups
    for name, value in (("CHUNK_LINES", args.chunk_lines), ("LANE_SHARE", args.lane_share),
                        ("LANE_SLOTS", args.lane_slots), ("DEFER_S", args.defer_s), ("LANE_DEFERS", args.lane_defers)):
        if value is not None:
            environment[f"STILLHOUSE_BATCH__{name}"] = str(value)
    parameters = {"DispatchBatchSize": str(args.dispatch_batch_size)} if args.dispatch_batch_size else {}
    if args.dispatch_batch_size and args.dispatch_batch_size > 10:
        parameters["DispatchBatchingWindowSeconds"] = "1"
    load_start = os.getloadavg()
    result: dict[str, Any] = {"benchmark": "batch", "lines": args.lines, "settings": {
        **{k.removeprefix("STILLHOUSE_BATCH__").lower(): v for k, v in environment.items() if "BATCH" in k},
        **parameters}}
    stack = receiver = None
    try:
        t_start = time.monotonic()
        log("starting the embedded stack ...")
        concurrency = {"DispatchFunction": args.dispatch_instances} if args.dispatch_instances else {}
        stack = EmbeddedStack(StackOptions(port=0, parameters=parameters, environment=environment,
                                           function_concurrency=concurrency, log_dir=Path(tempfile.mkdtemp(prefix="stillhouse-bench-")))).start()
        receiver = Receiver()
        result["startup_s"] = round(time.monotonic() - t_start, 2)
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
        memory, arch = function_sizes(stack.options.template)
        from stillhouse.container import container

        batch_settings = container().settings.batch
        result["settings"] |= {"chunk_lines": batch_settings.chunk_lines, "lane_share": batch_settings.lane_share,
                               "defer_s": batch_settings.defer_s, "lane_defers": batch_settings.lane_defers,
                               "lane_slots": batch_settings.lane_slots,
                               "endpoint_max_in_flight": container().registry.get("local").max_in_flight
                               if hasattr(container().registry, "get") else None,
                               "worker_concurrency": stack.options.worker_concurrency,
                               "dispatch_instances": args.dispatch_instances or "one per queue mapping"}
        client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.dev_api_key, max_retries=0, timeout=120)

        log("warm-up: a small batch and a few interactive jobs (imports, clients)")
        warm = BatchRun(client, 8, "warm", 0.2, 120)
        warm.start()
        if warm.wait().status != "completed":
            raise RuntimeError(f"warm-up batch ended {warm.batch.status}")
        interactive(stack.url, stack.dev_api_key, receiver, 3)
        time.sleep(0.5)

        if args.floor_jobs:
            log(f"floor: {args.floor_jobs} jobs of the six fast-path calls, one thread")
            result |= measure_floor(stack.moto.url, jobs=args.floor_jobs, warmup=min(10, args.floor_jobs))

        log(f"interactive, no batch running: {args.interactive} sequential echo jobs")
        idle_jobs: list[tuple[str, float, float]] = []
        idle, idle_errors = interactive(stack.url, stack.dev_api_key, receiver, args.interactive, jobs=idle_jobs)

        # --- the metered batch ---------------------------------------------------------------------
        _quiesce(meter)  # the last interactive job's delivery: its calls are not the batch's
        calls_before = Counter(aws.api_calls)
        meter.reset()
        meter.enabled = True
        log(f"batch: {args.lines} lines")
        measured = BatchRun(client, args.lines, "line", args.poll_s, args.max_batch_s)
        measured.start()
        measured.wait()
        _quiesce(meter)
        meter.enabled = False
        factory = Counter(aws.api_calls)
        factory.subtract(calls_before)
        wall = measured.t["ended"] - measured.t["upload"]
        log(f"batch {measured.batch.status} in {wall:.1f} s; checking its output (not counted)")
        check = measured.check()
        metered = costs(meter, args.lines, memory, arch)
        # The harness's own polls of GET /v1/batches/{id} are in the window (they are API calls a caller makes):
        # said apart so that they can be taken out.
        metered["harness_polls"] = measured.polls
        metered["aws_calls_check"] = {"factory_counter_delta": sum((+factory).values()),
                                      "attributed": sum(meter.calls.values()),
                                      "outside_functions": sum(c for (fn, _, _), c in meter.calls.items() if fn == "outside")}
        metered["meter_errors"] = dict(meter.hook_errors)

        # --- interactive latency while a batch runs (not metered) ------------------------------------
        loaded: list[float] = []
        loaded_errors: Counter = Counter()
        loaded_check: dict[str, Any] = {}
        loaded_jobs: list[tuple[str, float, float]] = []
        if args.loaded_lines:
            log(f"interactive while a batch of {args.loaded_lines} lines runs")
            second = BatchRun(client, args.loaded_lines, "load", args.poll_s, args.max_batch_s)
            second.start()
            while second.status().status == "validating":
                time.sleep(0.05)
            ended = threading.Event()
            box: dict[str, Any] = {}

            def caller() -> None:
                box["lat"], box["err"] = interactive(stack.url, stack.dev_api_key, receiver, args.interactive,
                                                     until=ended, max_s=args.max_loaded_s, jobs=loaded_jobs)

            thread = threading.Thread(target=caller, name="bench-interactive", daemon=True)
            t_loaded = time.perf_counter()
            thread.start()
            second.wait()
            ended.set()
            batch_done = time.perf_counter() - t_loaded
            thread.join(args.max_loaded_s + 60)
            loaded, loaded_errors = box.get("lat", []), box.get("err", Counter())
            loaded_check = second.check() | {"wall_s": round(second.t["ended"] - second.t["upload"], 2),
                                             "interactive_window_s": round(batch_done, 2)}
        stages = {"idle": job_stages(stack, idle_jobs), "during_batch": job_stages(stack, loaded_jobs)}
        load_end = os.getloadavg()
    finally:
        # The stack first: its threads log while they stop, and none of it may reach the JSON on stdout.
        if receiver is not None:
            receiver.stop()
        if stack is not None:
            log("stopping the stack")
            stack.stop()
        sys.stdout = sys.__stdout__
        os.dup2(real_stdout_fd, 1)
        os.close(real_stdout_fd)
        uninstall()

    lines_per_s = args.lines / wall if wall else None
    floor_jps = result.get("floor_jobs_per_s")
    p50_idle, p50_loaded = quantile(idle, 0.5), quantile(loaded, 0.5)
    ratio = round(p50_loaded / p50_idle, 3) if p50_idle and p50_loaded else None
    t = measured.t
    result |= {
        "batch": {"status": measured.batch.status, "wall_s": round(wall, 2),
                  "upload_s": round(t["uploaded"] - t["upload"], 2), "create_s": round(t["created"] - t["uploaded"], 2),
                  "created_to_in_progress_s": round(t["in_progress"] - t["created"], 2) if "in_progress" in t else None,
                  "in_progress_to_completed_s": round(t["ended"] - t["in_progress"], 2) if "in_progress" in t else None,
                  "poll_s": args.poll_s, **check},
        "lines_per_s": round(lines_per_s, 2) if lines_per_s else None,
        "lines_per_s_x_floor": round(lines_per_s / floor_jps, 3) if lines_per_s and floor_jps else None,
        "lines_lost": check["lines_lost"], "lines_duplicated": check["lines_duplicated"],
        "aws_calls_per_line": metered["aws_calls_per_line"],
        "dynamodb_wru_per_line": metered["dynamodb_wru_per_line"],
        "usd_per_1m_lines": metered["usd_per_1m_lines"],
        "metered": metered,
        "interactive": {
            "what": "sequential native POST /v1/jobs {task: echo} -> caller webhook arrival, ms",
            "idle_ms": summary(idle), "idle_errors": dict(idle_errors),
            "during_batch_ms": summary(loaded), "during_batch_errors": dict(loaded_errors),
            "during_batch_run": loaded_check,
            "p90_idle_ms": _r(quantile(idle, 0.9)), "p90_during_batch_ms": _r(quantile(loaded, 0.9)),
            # Where an interactive job's time goes (p50, ms, from its own timeline): the API's write, the wait for
            # dispatch (queue, poller, the dispatch function), RunPod (its queue `delay`, then `exec`, then the
            # callback's handling), the caller webhook.
            "stages_ms_p50": stages,
        },
        "interactive_p50_idle_ms": _r(p50_idle), "interactive_p50_during_batch_ms": _r(p50_loaded),
        "interactive_p50_ratio": ratio,
        "interactive_p90_ratio": round(quantile(loaded, 0.9) / quantile(idle, 0.9), 3) if idle and loaded else None,
    }
    result["targets"] = TARGETS
    result["targets_met"] = {
        "lines_per_s_ge_10x_floor": _ge(result["lines_per_s_x_floor"], TARGETS["lines_per_s_x_floor"]),
        "aws_calls_per_line_le_0_5": _le(result["aws_calls_per_line"], TARGETS["aws_calls_per_line"]),
        "usd_per_1m_lines_le_1": _le(result["usd_per_1m_lines"], TARGETS["usd_per_1m_lines"]),
        "interactive_p50_ratio_le_1_5": _le(ratio, TARGETS["interactive_p50_ratio"]),
    }
    result |= {"mode": "embedded (moto in-process, in-process Lambdas, RunPod stand-in with the real gpu_handler)",
               "loadavg_start": [round(x, 2) for x in load_start], "loadavg_end": [round(x, 2) for x in load_end],
               "cpus": os.cpu_count(), "price_source": PRICE_SOURCE}
    return result


def job_stages(stack: Any, jobs: list[tuple[str, float, float]]) -> dict[str, float | None]:
    """p50 of each stage of these jobs (their details are read after the window: not counted)."""
    import requests
    from overhead_lib.report import DETAIL, _parse_at

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {stack.dev_api_key}"
    stages: dict[str, list[float]] = defaultdict(list)
    for job_id, wall0, visible in jobs:
        job = session.get(f"{stack.url}/v1/jobs/{job_id}", timeout=10).json()
        at = {e["status"]: _parse_at(e["at"]) for e in job.get("events", [])}
        if not {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"} <= set(at):
            continue
        stages["caller_to_in_queue"].append((at["IN_QUEUE"] - wall0) * 1000)
        stages["in_queue_to_in_progress"].append((at["IN_PROGRESS"] - at["IN_QUEUE"]) * 1000)
        stages["in_progress_to_completed"].append((at["COMPLETED"] - at["IN_PROGRESS"]) * 1000)
        stages["completed_to_visible"].append((visible - at["COMPLETED"]) * 1000)
        found = DETAIL.search((job.get("events") or [{}])[-1].get("detail") or "")
        if found and found.group(1) not in ("None", ""):
            stages["runpod_queue_delay"].append(float(found.group(1)))
        if found and found.group(2) not in ("None", ""):
            stages["runpod_exec"].append(float(found.group(2)))
    return {k: _r(quantile(v, 0.5)) for k, v in stages.items()}


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def _ge(v: float | None, target: float) -> bool | None:
    return None if v is None else v >= target


def _le(v: float | None, target: float) -> bool | None:
    return None if v is None else v <= target


def _quiesce(meter: Meter, timeout: float = 10.0) -> None:
    """Wait until no handler runs (the finish step's last writes, a late callback)."""
    deadline = time.monotonic() + timeout
    time.sleep(0.3)
    while meter.active and time.monotonic() < deadline:
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=10_000, help="lines of the metered batch")
    parser.add_argument("--loaded-lines", type=int, default=None,
                        help="lines of the batch the interactive caller runs beside (default: --lines; 0: skip)")
    parser.add_argument("--interactive", type=int, default=40, help="interactive jobs with no batch running")
    parser.add_argument("--max-loaded-s", type=float, default=300.0, help="bound on the interactive set under load")
    parser.add_argument("--max-batch-s", type=float, default=600.0, help="a batch not ended by then is an error")
    parser.add_argument("--poll-s", type=float, default=0.5, help="GET /v1/batches/{id} every this long")
    parser.add_argument("--floor-jobs", type=int, default=200)
    parser.add_argument("--chunk-lines", type=int, default=None, help="STILLHOUSE_BATCH__CHUNK_LINES (default 64)")
    parser.add_argument("--lane-share", type=float, default=None, help="STILLHOUSE_BATCH__LANE_SHARE (default 0.5)")
    parser.add_argument("--lane-slots", type=int, default=None, help="STILLHOUSE_BATCH__LANE_SLOTS (default 8)")
    parser.add_argument("--defer-s", type=int, default=None, help="STILLHOUSE_BATCH__DEFER_S (default 2)")
    parser.add_argument("--lane-defers", type=int, default=None, help="STILLHOUSE_BATCH__LANE_DEFERS (default 5)")
    parser.add_argument("--dispatch-batch-size", type=int, default=None, help="template DispatchBatchSize (10)")
    parser.add_argument("--dispatch-instances", type=int, default=None,
                        help="DispatchFunction instances at once in the embedded stack (default: one per queue "
                             "mapping, as on AWS, where each mapping invokes it concurrently)")
    parser.add_argument("--quick", action="store_true", help="a smoke run for CI: 400 lines, 5 interactive jobs")
    parser.add_argument("--verbose", action="store_true", help="pass the functions' logs to stderr")
    args = parser.parse_args(argv)
    if args.quick:
        args.lines, args.interactive, args.floor_jobs, args.max_loaded_s = 400, 5, 20, 60
    if args.loaded_lines is None:
        args.loaded_lines = args.lines
    if args.lines < 1:
        parser.error("--lines must be >= 1")
    started = time.monotonic()
    result = run(args)
    result["total_runtime_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
