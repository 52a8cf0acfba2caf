"""Router overhead and AWS cost per job, measured on the embedded stack (prices and method: docs/cost.md).

    .venv/bin/python benchmarks/overhead.py [--jobs 200] [--concurrency 8] [--observe webhook|poll]
    .venv/bin/python benchmarks/overhead.py --write-doc      # re-render docs/cost.md from PRICES, exit
    .venv/bin/python benchmarks/overhead.py --input-kb 100   # a 100 KB prompt per job, beside a small one

Prints ONE JSON object on stdout; progress goes to stderr. Everything runs in this process on 127.0.0.1:
moto, the in-process Lambdas, the HTTP shim, the RunPod stand-in with the real gpu_handler worker.

What is measured (a closed loop of `--concurrency` callers, each submitting no-op `echo` jobs):
  e2e_ms          POST /v1/jobs sent -> result visible to the caller. "Visible" is, by default, the
                  arrival of the signed caller webhook on a receiver on 127.0.0.1 (`--observe webhook`):
                  the webhook is sent right after the terminal write, and no polling traffic competes
                  with the jobs for the (one-instance-per-function) API Lambda or inflates the per-job
                  call counts. `--observe poll` instead GETs /v1/jobs/{id} every `--poll-ms` (10 ms) and
                  takes the first COMPLETED answer (those GETs are then counted as the caller's cost).
  exec_ms         RunPod's executionTime (worker took the job -> result posted) from the job's terminal
                  event detail "runpod <id> delay=<delayTime>ms exec=<executionTime>ms".
  overhead_ms     e2e_ms - exec_ms = (submit -> handler start) + (handler end -> result visible): what the
                  router adds to the GPU work.
  queue_delay_ms  RunPod's delayTime (/run accepted -> a worker took it): part of overhead_ms that is
                  RunPod's queue, not ours; router_overhead_ms = overhead_ms - queue_delay_ms.
  stages_ms       the job's own timeline (event timestamps, ms resolution, same clock).
  standin_vs_router_ms  the stand-in's queue delay and execution beside the router's overhead (p50/p95)
                  at this caller count, and the stand-in's workers (its scaler settings, the peak count).

AWS calls are counted at the clients factory (`stillhouse.aws`, through its `add_client_hook`): every boto3
call made by the in-process Lambdas, attributed to the function running on that thread (known through
`stillhouse_local.lambdas.handler_wrappers`). Calls this harness makes itself (fetching job details after the
measured window, Step Functions histories, describe calls) are made after the window or through separate
moto clients, so they are not counted. The SQS event source mapping's own ReceiveMessage /
DeleteMessageBatch calls (made by the local pollers, not through the factory) are counted separately: on
AWS the mapping itself is free but its SQS requests are billed at SQS request prices.

Cost per 1M jobs prices those counts with PRICES (the one price table, in overhead_lib/prices.py;
docs/cost.md is rendered from it). DynamoDB capacity units are estimated per call from item sizes (see
`overhead_lib.metering.DynamoMeter`). Lambda GB-s come from the handlers' measured in-process durations x
the deployed MemorySize (they include moto's latency on a busy 2-core box, not AWS's). A second short run
with the template parameter WorkflowMode=always (in a child process) counts Step Functions state
transitions per job for the hypothetical "every job in a workflow" mode, to compare with the design
estimate (~4 transitions/job, ~$100 per 1M jobs, about 25% of a 2-s GPU job; `compare_design_s1`).

Shared items (`hot_items`, overhead_lib/hot_items.py; docs/scale.md): for each kind of DynamoDB item more
than one job writes (the tenant's quota item(s), the endpoint's state, config, the jobs table's index
partitions, ...) its writes and write units per job, priced on the item's real size, and the jobs/s at
which one partition key of that kind reaches DynamoDB's 1,000 WCU/s. `hot_items_probe`: the quota
item(s) of a tenant with `--quota-probe` (1,000) jobs in flight, which the echo jobs never reach.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# Run as a script, this directory is on sys.path: the parts live in the package beside it.
from overhead_lib import log
from overhead_lib.hot_items import render as render_hot_items
from overhead_lib.measure import measure
from overhead_lib.prices import COST_DOC, PRICES, REPO_ROOT, render_cost_doc

SCRIPT = Path(__file__).resolve()


_KEEP = ("jobs", "completed", "not_completed", "attempts", "e2e_ms", "overhead_ms", "aws_calls_per_job",
         "aws_calls_per_job_total", "dynamodb_wru_per_job", "lambda_invocations_per_job", "stepfunctions",
         "capacity_units_per_job", "cost_per_1m_jobs_usd", "cost_breakdown_per_1m_jobs_usd", "router_cost_share",
         "input_bytes")


def _children(args: argparse.Namespace, runs: dict[str, tuple[int, list[str]]], *, parallel: bool) -> dict[str, Any]:
    """Short runs of other paths of a job, at concurrency 1, each in a child process (a fresh stack).
    `parallel` (the --quick smoke run): all at once, since their figures are not compared then."""
    def command(jobs: int, extra: list[str]) -> list[str]:
        # The smoke run skips the warm-up: a council's warm-up job is as slow as the measured one.
        return [sys.executable, str(SCRIPT), "--jobs", str(jobs), "--concurrency", "1",
                "--warmup", "0" if parallel else "1",
                "--workflow-jobs", "0", "--path-jobs", "0", "--floor-jobs", "0",
                "--gpu-usd-per-s", str(args.gpu_usd_per_s), "--gpu-seconds", str(args.gpu_seconds),
                "--xray-sampled-fraction", str(args.xray_sampled_fraction), "--max-run-s", "90",
                "--quota-probe", "0", *extra]

    def finish(name: str, proc: subprocess.Popen) -> dict[str, Any]:
        try:
            out, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            return {"error": "child timed out"}
        if proc.returncode != 0:
            return {"error": f"child exited {proc.returncode}"}
        child = json.loads(out)
        return {k: child.get(k) for k in _KEEP}

    def start(name: str, jobs: int, extra: list[str]) -> subprocess.Popen:
        log(f"{name}: {jobs} jobs in a child process")
        return subprocess.Popen(command(jobs, extra), stdout=subprocess.PIPE, stderr=None, text=True, cwd=REPO_ROOT)

    if parallel:
        procs = {name: start(name, jobs, extra) for name, (jobs, extra) in runs.items()}
        return {name: finish(name, proc) for name, proc in procs.items()}
    return {name: finish(name, start(name, jobs, extra)) for name, (jobs, extra) in runs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured jobs first (imports, clients)")
    parser.add_argument("--observe", choices=["webhook", "poll"], default="webhook")
    parser.add_argument("--poll-ms", type=float, default=10.0)
    parser.add_argument("--max-run-s", type=float, default=90.0, help="stop submitting after this long")
    parser.add_argument("--workflow-mode", choices=["on_failure", "always"], default="on_failure")
    parser.add_argument("--workflow-jobs", type=int, default=5,
                        help="jobs of the extra WorkflowMode=always run (0: skip it)")
    parser.add_argument("--gpu-usd-per-s", type=float, default=PRICES["gpu_24gb_flex_s"]["usd"])
    parser.add_argument("--gpu-seconds", type=float, default=2.0)
    parser.add_argument("--xray-sampled-fraction", type=float, default=0.05)
    parser.add_argument("--path", choices=["fast", "retry", "council3"], default="fast",
                        help="what each job does: the fast path, one retry through the recovery workflow "
                             "(/run refused until the job is RETRYING), or a council of 3 echo models")
    parser.add_argument("--path-jobs", type=int, default=3,
                        help="jobs of each extra run pricing the retry and council3 paths (0: skip them)")
    parser.add_argument("--floor-jobs", type=int, default=200,
                        help="jobs of the moto floor measured in the same run (benchmarks/floor.py; 0: skip)")
    parser.add_argument("--quota-probe", type=lambda v: [int(x) for x in v.split(",") if x], default=[1000],
                        metavar="N[,N...]",
                        help="after the run, the tenant quota item(s) with N jobs in flight (hot_items_probe; "
                             "0: skip)")
    # The RunPod stand-in's workers for the endpoint (RunPod's endpoint settings; defaults: RunPod's, as
    # the deploy file's): up to --standin-workers-max, one more while a job waits over --standin-scaler-s.
    parser.add_argument("--standin-workers-min", type=int, default=0, help="workersMin (the stand-in keeps >= 1)")
    parser.add_argument("--standin-workers-max", type=int, default=3, help="workersMax")
    parser.add_argument("--standin-scaler-s", type=float, default=4.0, help="QUEUE_DELAY scalerValue, seconds")
    parser.add_argument("--standin-idle-s", type=float, default=5.0, help="idleTimeout, seconds")
    parser.add_argument("--input-kb", type=float, default=0.0,
                        help="each job a `generate` on echo-a with a prompt of this many KB and an 8-word answer "
                             "(0: the plain echo job); with --input-small-jobs, the same job with a 0.1 KB prompt "
                             "runs beside it, and `input_size` compares their DynamoDB write units per job")
    parser.add_argument("--input-small-jobs", type=int, default=10,
                        help="jobs of the small-prompt run compared with --input-kb (0: skip it)")
    # The router's side: batches each SQS event source mapping processes at once (stack option
    # mapping_concurrency; AWS runs up to the mapping's MaximumConcurrency, 20 for dispatch by default).
    parser.add_argument("--mapping-concurrency", type=int, default=1, metavar="N",
                        help="batches each queue's event source mapping processes at once, each on its own "
                             "instance of the function (capped by the mapping's MaximumConcurrency)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run for CI: 12 jobs, 2 callers, 20 floor jobs, 1 WorkflowMode=always job, "
                             "a quota probe of 100 jobs in flight")
    parser.add_argument("--verbose", action="store_true", help="pass the functions' logs to stderr")
    parser.add_argument("--write-doc", action="store_true", help="render docs/cost.md from PRICES and exit")
    args = parser.parse_args(argv)

    if args.write_doc:
        COST_DOC.write_text(render_cost_doc())
        log(f"wrote {COST_DOC}")
        return 0
    if not COST_DOC.exists() or COST_DOC.read_text() != render_cost_doc():
        log("note: docs/cost.md differs from PRICES; run with --write-doc")
    if args.quick:
        args.jobs, args.concurrency, args.warmup, args.floor_jobs = 12, 2, 2, 20
        args.workflow_jobs, args.path_jobs = min(args.workflow_jobs, 1), min(args.path_jobs, 1)
        args.quota_probe = [min(n, 100) for n in args.quota_probe]  # 1,000 take ~30 s here
    if args.jobs < 1 or args.concurrency < 1:
        parser.error("--jobs and --concurrency must be >= 1")

    started = time.monotonic()
    children: dict[str, tuple[int, list[str]]] = {}
    if args.workflow_jobs > 0 and args.workflow_mode == "on_failure" and args.path == "fast":
        children["workflow_always"] = (args.workflow_jobs, ["--workflow-mode", "always"])
    if args.path_jobs > 0 and args.path == "fast" and args.workflow_mode == "on_failure":
        for path in ("retry", "council3"):
            children[f"path_{path}"] = (args.path_jobs, ["--path", path])
    if args.input_kb > 0 and args.input_small_jobs > 0:
        children["input_small"] = (args.input_small_jobs, ["--input-kb", "0.1", "--input-small-jobs", "0"])
    if args.quick:  # a smoke run: nothing is compared, so everything runs at once
        with ThreadPoolExecutor(1) as pool:
            others = pool.submit(_children, args, children, parallel=True)
            result = measure(args)
            result.update(others.result())
    else:  # one after the other: each run has the machine to itself
        result = measure(args)
        result.update(_children(args, children, parallel=False))
    always = result.get("workflow_always")
    if always and "stepfunctions" in always:
        result["compare_design_s1"] = {
            "design_transitions_per_job": 4, "design_sfn_usd_per_1m_jobs": 100.0,
            "design_share_of_2s_gpu_job": 0.25,
            "measured_transitions_per_job_always": always["stepfunctions"].get("transitions_per_job"),
            "measured_sfn_usd_per_1m_jobs_always": (always.get("cost_breakdown_per_1m_jobs_usd") or {}).get("stepfunctions"),
            "measured_cost_per_1m_jobs_usd_always": always.get("cost_per_1m_jobs_usd"),
            "measured_router_cost_share_always": always.get("router_cost_share"),
            "measured_cost_per_1m_jobs_usd_fast_path": result["cost_per_1m_jobs_usd"],
            "measured_router_cost_share_fast_path": result["router_cost_share"],
        }
    # Each path's cost per 1M jobs, side by side (None where that run was skipped or failed).
    result["paths_usd_per_1m"] = {
        "fast_path_usd_per_1m": result.get("cost_per_1m_jobs_usd") if args.path == "fast" else None,
        "retry_path_usd_per_1m": (result.get("path_retry") or {}).get("cost_per_1m_jobs_usd"),
        "council3_usd_per_1m": (result.get("path_council3") or {}).get("cost_per_1m_jobs_usd"),
        "always_workflow_usd_per_1m": (result.get("workflow_always") or {}).get("cost_per_1m_jobs_usd"),
    }
    result.update(result["paths_usd_per_1m"])
    small = result.get("input_small")
    if small and "dynamodb_wru_per_job" in small:
        # Write units per job for a long and a short prompt, same task: what the input's size costs.
        result["input_size"] = {
            "input_bytes": result.get("input_bytes"), "wru_per_job": result.get("dynamodb_wru_per_job"),
            "usd_per_1m": result.get("cost_per_1m_jobs_usd"),
            "small_input_bytes": small.get("input_bytes"), "small_wru_per_job": small["dynamodb_wru_per_job"],
            "small_usd_per_1m": small.get("cost_per_1m_jobs_usd"),
        }
    result["total_runtime_s"] = round(time.monotonic() - started, 1)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    if "hot_items" in result:
        log(render_hot_items(result["hot_items"], result.get("hot_items_probe")))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
