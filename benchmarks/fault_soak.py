"""Fault soak: do all jobs end, exactly once, with the right output, while RunPod misbehaves?

    .venv/bin/python benchmarks/fault_soak.py            # 500 jobs (1 in 10 a council) from 8 callers + a 600-line batch
    .venv/bin/python benchmarks/fault_soak.py --quick    # 200 jobs + a 200-line batch
    .venv/bin/python benchmarks/fault_soak.py --jobs 50 --callers 2 --deadline-s 180

Prints ONE JSON object on stdout (progress on stderr; the functions' logs go to a file in the log dir).
Everything runs in this process on 127.0.0.1: the embedded stack (moto, in-process Lambdas, the HTTP shim)
and the RunPod stand-in with the real gpu_handler worker, one per endpoint (local, east, west).

How: the stack starts with short timers (soak_lib/chaos.py: PARAMETERS; SweepAfterSeconds=20 so jobs whose
RunPod webhook was lost are found quickly). Each stand-in endpoint gets steady fault knobs: 5xx and 429
(with Retry-After) on /run, lost and duplicate webhooks, worker crashes (crash_mode fail, requeue and hang);
on a timeline one endpoint is hard-down for a while and then back, and another gets latency spikes. A share
of the jobs gets a duplicate SQS message a few seconds after its submit. Our own functions die mid-step
too: every crash point (stillhouse.crash_points) crashes `--crash-rate` of its passes, at most once per job
and point; and AWS itself fails `--aws-fault-rate` of the calls of issue 23's set (stillhouse_local.aws_faults). A `--council-share` of the submissions are council jobs over the echo models (echo-a/b/c). `--callers` threads submit `--jobs`
echo jobs over HTTP, spread over `--spread-s` so the load spans the timeline, each with a unique text and an
Idempotency-Key; the sweeper is invoked every `--sweep-every-s`. The soak waits until every job is terminal
or `--deadline-s` has passed, then reads each job back (GET /v1/jobs/{id}) and reports:

  jobs, accepted, terminal, completed     counts of the jobs submitted
  lost                                    accepted jobs not terminal at the deadline (or unreadable)
  duplicate_terminal                      jobs whose timeline holds more than one terminal event
  wrong_output                            COMPLETED jobs whose output text is not the text they were given
  drain_s                                 first submit -> last job's terminal event
  p50_ms, p90_ms, p99_ms, max_ms          submit -> the job's first terminal event (same clock)
  by_status, by_attempts, by_endpoint     of the jobs read back; errors: the non-completed jobs' errors
  caller_webhooks                         terminal jobs the caller was never told of, told twice (two different
                                          notices), told otherwise; caller_webhooks_by_kind: per kind (single,
                                          council), with copies_redelivered (one notice posted again: at least
                                          once, same webhook-id, which the receiver drops)
  no_fault                                p50/p99/max submit -> terminal of the single jobs that saw no fault: one
                                          attempt, no RETRYING event, no crash point hit, no duplicate SQS
                                          message, one GPU run (soak_lib/report.py: saw_no_fault)
  gpu_runs                                accepted /run calls per job (stillhouse_local.gpu_runs): histogram,
                                          max, unrecorded_runs (runs a crash after /run left out of the
                                          timeline), over_two_by_crash (must be 0)
  crash_points                            hits and passes per crash point, jobs hit
  aws_faults                              AWS faults injected, per service.operation/error code (`--aws-fault-rate`)
  councils, by_kind                       the council jobs' statuses; submissions per kind
  problems                                each job that went wrong, with its timeline (`events`)
  failed_examples, retried_examples       up to 5 jobs that ended not COMPLETED / took more than one attempt
  stages_ms_p50                           submit -> IN_QUEUE -> first IN_PROGRESS -> first terminal event
  fault_mix, timeline_applied, standin    the faults, when the windows were applied, the stand-in's counters
  batch                                   the batch run beside the jobs (soak_lib/batch.py), below

Beside the jobs, one batch of `--batch-lines` echo-model chat lines (600; --quick 200) is submitted with the
`openai` SDK `--batch-at-s` after the start, the stack chunking it `--batch-chunk-lines` (4) to a chunk, so
its many chunk jobs meet the same faults (a share of them also gets a duplicate batch-lane message). Its
output and error files are read back; `batch` holds: status, ended (terminal before the deadline),
lines_total, lines_output, lines_error, lines_lost (custom_ids in neither file), lines_duplicated
(custom_ids more than once across both), lines_wrong (an output line not "<model> says: <its prompt>"),
errors_by_code/errors_by_message (the error file's lines), and the chunk jobs' statuses and attempts.

The exit status is 1 when a job was lost, ended twice or answered wrong, a job ran on a GPU more than twice
because of a crash point, a terminal council was not told exactly once, or the batch did not end or lost,
duplicated or wrongly answered a line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# Run as a script, this directory is on sys.path: the parts live in the package beside it.
from soak_lib import chaos, log
from soak_lib.batch import BatchRun
from soak_lib.callers import DuplicateMessages, Receiver, submit_all
from soak_lib.drain import SweeperRuns, read_back, wait_all
from soak_lib.report import build

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="200 jobs")
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--spread-s", type=float, default=75.0,
                        help="spread the submits over this long (the fault timeline runs 10-70 s)")
    parser.add_argument("--deadline-s", type=float, default=600.0, help="hard limit from the first submit")
    parser.add_argument("--sweep-after-s", type=int, default=20, help="template SweepAfterSeconds")
    parser.add_argument("--sweep-every-s", type=float, default=10.0, help="invoke the sweeper this often")
    parser.add_argument("--dup-sqs-rate", type=float, default=0.1, help="share of jobs sent a second SQS message")
    parser.add_argument("--down-endpoint", default="west", choices=chaos.ENDPOINTS)
    parser.add_argument("--down-at-s", type=float, default=10.0)
    parser.add_argument("--down-for-s", type=float, default=30.0)
    parser.add_argument("--spike-ms", type=int, default=2500, help="east's latency_ms during its spikes")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--crash-rate", type=float, default=0.02,
                        help="share of passes of every crash point that crash (once per job and point; 0: off)")
    parser.add_argument("--aws-fault-rate", type=float, default=0.01,
                        help="share of the AWS calls of issue 23's set that fail (stillhouse_local.aws_faults; 0: off)")
    parser.add_argument("--council-share", type=float, default=0.1, help="share of submissions that are councils")
    parser.add_argument("--batch-lines", type=int, default=None,
                        help="lines of the batch run beside the jobs (default 600, --quick 200; 0: no batch)")
    parser.add_argument("--batch-chunk-lines", type=int, default=4, help="STILLHOUSE_BATCH__CHUNK_LINES")
    parser.add_argument("--batch-at-s", type=float, default=12.0,
                        help="submit the batch this long after the start (12: while west is down)")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs = 200
    if args.batch_lines is None:
        args.batch_lines = 200 if args.quick else 600
    if args.jobs < 1 or args.callers < 1 or args.deadline_s <= 0:
        parser.error("--jobs, --callers and --deadline-s must be positive")
    return args


def soak(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    import requests
    from stillhouse_local.gpu_runs import GpuRuns
    from stillhouse_local.stack import EmbeddedStack

    log(f"starting the embedded stack (logs: {log_dir}) ...")
    stack = EmbeddedStack(chaos.stack_options(args, log_dir)).start()
    receiver = Receiver()
    try:
        chaos.prepare_endpoints()
        chaos.apply_steady(stack, args.seed)
        chaos.start_crash_points(args)
        chaos.start_aws_faults(args)
        gpu_runs = GpuRuns().__enter__()
        log(f"stack up at {stack.url}; {args.jobs} jobs from {args.callers} callers, deadline {args.deadline_s:g} s")
        limit = args.deadline_s + 30
        sweeper = SweeperRuns(stack, args.sweep_every_s, limit).start()
        duplicates = DuplicateMessages(args.dup_sqs_rate, 5.0, args.seed, limit).start()
        timeline, applied = chaos.start_timeline(stack, args)
        deadline = time.monotonic() + args.deadline_s
        batch = (BatchRun(stack.url, stack.dev_api_key, args.batch_lines, args.batch_at_s, args.dup_sqs_rate,
                          args.seed, deadline).start() if args.batch_lines else None)
        records = submit_all(stack.url, stack.dev_api_key, args.jobs, args.callers, receiver.url,
                             duplicates.maybe, args.spread_s, args.deadline_s, args.council_share)
        log(f"submitted {sum('id' in r for r in records)}/{args.jobs}; waiting for them to end")
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {stack.dev_api_key}"
        waited_s = wait_all(session, stack.url, records, receiver, deadline)
        if batch is not None:
            log("waiting for the batch to end")
            batch.join()
        for ticker in (timeline, duplicates.ticker, sweeper.ticker):
            ticker.stop()
        chaos.stop_aws_faults()
        log("reading every job back")
        read_back(session, stack.url, records)
        from stillhouse import crash_points

        gpu_runs.__exit__()
        ids = [r["id"] for r in records if "id" in r]
        result = build(records, receiver.arrivals, dict(gpu_runs.counts), crash_points.fired(),
                       {job_id: gpu_runs.most_per_step(job_id) for job_id in ids})
        result["crash_points"] = chaos.crash_point_report()
        result["aws_faults"] = chaos.aws_fault_report()
        if batch is not None:
            log("reading the batch's files back")
            result["batch"] = batch.report(session, stack.url)
        result.update({
            "wait_s": round(waited_s, 1), "duplicate_sqs_sent": len(duplicates.sent),
            "sweeper": sweeper.summary(), "timeline_applied": applied,
            "standin": {ep: stack.standin.stats(ep) for ep in chaos.ENDPOINTS},
        })
        return result
    finally:
        receiver.stop()
        log("stopping the stack")
        stack.stop()


def _revision() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO_ROOT, capture_output=True, text=True, check=False).stdout.strip()
    dirty = git("status", "--porcelain", "--", "layers", "functions", "local", "gpu_handler", "template.yaml")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # Whatever happens, the process ends: the deadline plus time to start, read back and stop.
    watchdog = threading.Timer(args.deadline_s + 300, lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()
    log_dir = Path(tempfile.mkdtemp(prefix="stillhouse-soak-"))
    real_stdout = os.dup(1)
    functions_log = open(log_dir / "functions.log", "w")  # noqa: SIM115 - fd 1 points at it until the end
    os.dup2(functions_log.fileno(), 1)  # the functions' log lines (and stray prints) go there
    sys.stdout = functions_log
    load_start, started = os.getloadavg(), time.monotonic()
    try:
        result = soak(args, log_dir)
    finally:
        sys.stdout = sys.__stdout__
        os.dup2(real_stdout, 1)
    result.update({
        "fault_mix": chaos.fault_mix(args), "stack_parameters": chaos.PARAMETERS | {"SweepAfterSeconds": str(args.sweep_after_s)},
        "stack_environment": chaos.environment(args), "parameters": {k: v for k, v in vars(args).items()},
        "revision": _revision(), "cpus": os.cpu_count(), "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()], "total_runtime_s": round(time.monotonic() - started, 1),
        "log_dir": str(log_dir),
    })
    print(json.dumps(result, indent=2), flush=True)
    sys.stderr.flush()
    os._exit(0 if passed(result) else 1)


def passed(result: dict[str, Any]) -> bool:
    """The verdict: no job lost, ended twice or wrong, none run on a GPU more than twice by a crash point,
    every council told exactly once (one notice); the batch (if any) ended in time, each of its lines in
    exactly one of its files, once, with its own answer."""
    jobs_ok = result["lost"] == result["duplicate_terminal"] == result["wrong_output"] == 0
    jobs_ok = jobs_ok and result["gpu_runs"]["over_two_by_crash"] == 0
    council = result["caller_webhooks_by_kind"].get("council")
    jobs_ok = jobs_ok and (council is None or council["terminal_without_webhook"] == council["more_than_one"]
                           == council["status_differs"] == 0)
    batch = result.get("batch")
    batch_ok = batch is None or (batch["ended"] and batch["lines_lost"] == batch["lines_duplicated"]
                                 == batch["lines_wrong"] == 0)
    return jobs_ok and batch_ok


if __name__ == "__main__":
    raise SystemExit(main())
