"""The benchmarks' `--quick` modes, so none of them rots: each runs in a process of its own (an embedded
stack is process-global) and prints one JSON object whose figures must make sense. Outcomes and call
counts are asserted; the one timing asserted is the cold start's target (issue 24), with a wide margin. About two minutes on 2 cores, most of it the overhead
benchmark's four stack start-ups (fast path, retry, council of 3, WorkflowMode=always) and the batch
benchmark's 400-line batches."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(name: str, *args: str, timeout: int = 300) -> dict:
    env = dict(os.environ)
    # This checkout's code, also where the virtual environment's editable install points elsewhere.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "layers" / "core"), str(ROOT / "local"), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout, check=False)
    assert run.returncode == 0 and run.stdout.strip(), run.stderr[-3000:]
    out = json.loads(run.stdout)
    out["_stderr_tail"] = run.stderr[-3000:]  # what the runs said, for the assertions' messages
    return out


def test_the_floor_times_six_calls_per_job():
    out = run_benchmark("floor.py", "--quick")
    assert out["floor_calls_per_job"] == 6 and out["floor_jobs"] == 20
    assert out["floor_ms_per_job"] > 0 and out["floor_jobs_per_s"] > 0


def test_coldstart_imports_every_function_within_250_ms():
    # The benchmark exits 1 naming any function over the target (run_benchmark asserts exit 0).
    out = run_benchmark("coldstart.py", "--quick")
    functions = {p.parent.name for p in (ROOT / "functions").glob("*/app.py")}
    assert set(out["import_ms"]) == functions
    assert all(ms > 0 for ms in out["import_ms"].values())
    assert out["max_import_ms"] == max(out["import_ms"].values())
    # Each a median of 3 fresh processes, within the target: on this 2-core machine today about 50-150 ms
    # of CPU each, where boto3 or pydantic back at import would add 100-200 ms.
    assert out["repeat"] == 3 and out["target_ms"] == 250
    assert out["over_target"] == {} and out["max_import_ms"] <= 250, out["import_ms"]


def test_overhead_prices_every_path_and_every_job_completes():
    out = run_benchmark("overhead.py", "--quick")
    assert out["completed"] == out["jobs"] == 12 and out["not_completed"] == {}
    for key in ("floor_ms_per_job", "jobs_per_s", "floor_ratio", "aws_calls_per_job_total", "dynamodb_wru_per_job",
                "cost_per_1m_jobs_usd"):
        assert out[key] > 0, key
    assert out["aws_calls_check"]["attributed"] == out["aws_calls_check"]["factory_counter_delta"]
    assert out["meter_errors"] == {}
    # Each side's cost at the run's caller count: the stand-in's queue delay beside the router's overhead.
    sides = out["standin_vs_router_ms"]
    assert sides["callers"] == 2 and sides["standin_workers"]["workers"]["peak"] >= 1
    assert sides["standin_queue_delay"]["p50"] >= 0 and sides["router_overhead"]["p50"] > 0
    # The fast path as designed: dispatch claims from the queue message (no read of the job); the RunPod
    # callback reads nothing and makes three writes (the job, the endpoint's outcome with its slot
    # released, and the tenant's in-flight places given back on its quota shard); the delivery posts what
    # its notice carries and records the try.
    by_function = out["aws_calls_per_job_by_function"]
    for function in ("DispatchFunction", "WebhookFunction", "DeliveryFunction"):
        # cached configuration now and then; no read of the job, the endpoint's state or the tenant's secret
        assert by_function[function].get("dynamodb.GetItem", 0) < 0.5, (function, by_function[function])
    # Concurrent callbacks of one endpoint may meet on its state item's version: the loser writes again.
    assert 3 <= by_function["WebhookFunction"]["dynamodb.UpdateItem"] < 4
    # The other paths, side by side; each dearer than the fast path.
    # The council's one job once missed its caller webhook here: a member's result that beat the task's
    # record of the member was dropped, and the council waited out its callback timeout (issue 23, item 6;
    # tests/unit/test_council.py). Each child's job is given 120 s, well past what a council takes here.
    for key, run in (("retry_path_usd_per_1m", "path_retry"), ("council3_usd_per_1m", "path_council3"),
                     ("always_workflow_usd_per_1m", "workflow_always")):
        assert out[run].get("completed") == out[run].get("jobs") == 1, (run, out[run], out["_stderr_tail"])
        assert out[key] > out["cost_per_1m_jobs_usd"], key
        assert out[run]["stepfunctions"]["transitions"] > 0, run
    assert out["path_retry"]["attempts"] == {"2": 1}  # one retry, through the recovery workflow
    # The shared items every job writes, each kind priced per job on its item's size, with the jobs/s at
    # which one of its items reaches DynamoDB's 1,000 WCU/s (docs/scale.md).
    hot = out["hot_items"]
    assert {"tenant_quota", "endpoint_state", "config"} <= set(hot), sorted(hot)
    for kind in ("tenant_quota", "endpoint_state"):  # written by every job
        assert hot[kind]["writes_per_job"] > 0 and hot[kind]["wcu_per_job"] >= hot[kind]["writes_per_job"], (kind, hot[kind])
    for kind, figures in hot.items():
        for key in ("writes_per_job", "wcu_per_job", "ceiling_jobs_per_s"):
            assert key in figures, (kind, key)
        if figures["writes_per_job"] > 0:
            assert figures["ceiling_jobs_per_s"] > 0 and figures["item_bytes_max"] != 0, (kind, figures)
    assert out["per_job_items"]["job"]["writes_per_job"] >= 2  # the job's own item is not shared: apart
    # The jobs table's indexes are write-sharded: one tenant's entries, and one status's, land on several
    # partitions of their key (16 by design; a dozen jobs touch several of them).
    for kind in ("JobsTable.ByTenantPart", "JobsTable.ByStatusDuePart"):
        assert hot[kind]["busiest_key_shards"] > 1, (kind, hot[kind])
    probe = out["hot_items_probe"]["tenant_quota_at_100_in_flight"]
    # No hot item caps a tenant: with 100 jobs in flight a job still costs its quota a small write to take
    # its places and one to give them back, spread over 16 shards: >= 5,000 jobs/s for one tenant.
    assert probe["in_flight"] == 100 and probe["shards"] == 16 and probe["item_bytes_max"] < 200, probe
    assert probe["wcu_per_job"] == 2.0 and probe["ceiling_sharded_jobs_per_s"] >= 5_000, probe
    assert out["hot_items_basis"]["meter_errors"] == {}


def test_batch_returns_every_line_once_and_prices_it():
    out = run_benchmark("batch.py", "--quick", "--chunk-lines", "64")  # not the tier stack's setting, which leaks here
    assert out["lines"] == 400 and out["batch"]["status"] == "completed", out["_stderr_tail"]
    assert out["lines_lost"] == 0 and out["lines_duplicated"] == 0
    assert out["batch"]["lines_out"] == 400 and out["batch"]["wrong_answers"] == 0
    # 400 lines of one model, 64 to a chunk.
    assert out["batch"]["chunks"] == 7
    assert out["interactive"]["during_batch_run"]["lines_lost"] == 0
    assert out["interactive"]["during_batch_run"]["lines_duplicated"] == 0
    for key in ("floor_jobs_per_s", "lines_per_s", "lines_per_s_x_floor", "aws_calls_per_line",
                "dynamodb_wru_per_line", "usd_per_1m_lines", "interactive_p50_idle_ms"):
        assert out[key] > 0, key
    assert out["interactive"]["idle_ms"]["n"] == 5 and out["interactive"]["idle_errors"] == {}
    # Only the interactive jobs that ended while the second batch ran count: a quick batch may leave few.
    assert out["interactive"]["during_batch_errors"] == {}
    assert "interactive_p50_during_batch_ms" in out and "interactive_p50_ratio" in out
    assert out["metered"]["meter_errors"] == {}
    assert out["metered"]["aws_calls_by_function"]["BatchesFunction"]  # the start and finish steps were metered
    assert set(out["targets_met"]) == {"lines_per_s_ge_10x_floor", "aws_calls_per_line_le_0_5",
                                       "usd_per_1m_lines_le_1", "interactive_p50_ratio_le_1_5"}
