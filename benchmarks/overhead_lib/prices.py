"""The one price table. docs/cost.md is rendered from it (`overhead.py --write-doc`); the benchmark prices with it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
COST_DOC = REPO_ROOT / "docs" / "cost.md"

PRICE_SOURCE = "list price us-east-1 as of 2026-11, verify"
PRICES: dict[str, dict[str, Any]] = {
    "dynamodb_wru": {"service": "DynamoDB on-demand", "unit": "1M write request units", "per": 1e6,
                     "usd": 0.625, "note": "1 WRU per 1 KB written (the larger of before/after image); "
                                           "a failed conditional write still consumes it; each GSI write too"},
    "dynamodb_rru": {"service": "DynamoDB on-demand", "unit": "1M read request units", "per": 1e6,
                     "usd": 0.125, "note": "1 RRU per 4 KB strongly consistent read, 0.5 eventually "
                                           "consistent (GSI queries always); a Query sums the items read"},
    "sqs_request": {"service": "SQS standard", "unit": "1M requests", "per": 1e6, "usd": 0.40,
                    "note": "every 64 KB chunk of a payload is one request; a batch call is one request"},
    "s3_put_request": {"service": "S3 Standard", "unit": "1k PUT, COPY, POST, LIST requests", "per": 1e3,
                       "usd": 0.005, "note": "the Batch API's files and chunks (benchmarks/batch.py)"},
    "s3_get_request": {"service": "S3 Standard", "unit": "1k GET requests (and all other)", "per": 1e3,
                       "usd": 0.0004, "note": "DeleteObject is free"},
    "secretsmanager_call": {"service": "Secrets Manager", "unit": "10k API calls", "per": 1e4, "usd": 0.05,
                            "note": "+ $0.40 per secret-month (fixed, not per job); reads are cached 5 min"},
    "lambda_request": {"service": "Lambda", "unit": "1M requests", "per": 1e6, "usd": 0.20,
                       "note": "one per invocation (an SQS batch is one invocation)"},
    "lambda_gb_s_arm64": {"service": "Lambda (arm64)", "unit": "GB-second", "per": 1, "usd": 0.0000133334,
                          "note": "duration rounded up to 1 ms x MemorySize; first pricing tier"},
    "lambda_gb_s_x86_64": {"service": "Lambda (x86_64)", "unit": "GB-second", "per": 1, "usd": 0.0000166667,
                           "note": "used only if the template says x86_64"},
    "apigw_http_request": {"service": "API Gateway HTTP API", "unit": "1M requests", "per": 1e6, "usd": 1.00,
                           "note": "first 300M/month; metered in 512 KB increments"},
    "sfn_standard_transition": {"service": "Step Functions Standard", "unit": "1M state transitions",
                                "per": 1e6, "usd": 25.0,
                                "note": "every state entered, retries included; API calls themselves free"},
    "cloudwatch_logs_ingest_gb": {"service": "CloudWatch Logs (extra)", "unit": "GB ingested", "per": 1,
                                  "usd": 0.50, "note": "standard log class; in cost_extras only"},
    "xray_trace": {"service": "X-Ray (extra)", "unit": "1M traces recorded", "per": 1e6, "usd": 5.00,
                   "note": "Tracing: Active; sampled fraction is a parameter; in cost_extras only"},
    "gpu_24gb_flex_s": {"service": "RunPod serverless (comparison)", "unit": "GPU-second, 24 GB flex worker",
                        "per": 1, "usd": 0.00019,
                        "note": "the --gpu-usd-per-s default; for the comparison only",
                        "source": "RunPod serverless pricing (flex) as of 2026-11, verify"},
}
LAMBDA_PLATFORM_LOG_BYTES = 400  # START/END/REPORT lines Lambda writes per invocation (estimate)
FREE_OPERATIONS = {"DescribeTable", "ListTables", "DescribeTimeToLive", "GetQueueAttributes", "GetQueueUrl",
                   "ListQueues", "DescribeExecution", "ListExecutions", "GetExecutionHistory",
                   "DescribeStateMachine", "ListStateMachines"}


def price(key: str, quantity: float) -> float:
    row = PRICES[key]
    return quantity * row["usd"] / row["per"]


def render_cost_doc() -> str:
    lines = [
        "# Cost per job",
        "",
        "<!-- Rendered by `benchmarks/overhead.py --write-doc` from the PRICES table in",
        "     `benchmarks/overhead_lib/prices.py`: edit the table there, then re-render. The benchmark",
        "     prices with the same table, so there is one source. -->",
        "",
        "What one job costs in AWS is measured by `benchmarks/overhead.py`: it counts the",
        "AWS API calls the embedded stack really makes per job at the clients factory (`stillhouse/aws.py`),",
        "the Lambda invocations and their in-process durations, API Gateway requests and Step Functions",
        ("state transitions, and prices them with the table below. Latest figures: "
         "[benchmarks/README.md](../benchmarks/README.md)."),
        "",
        "## List prices",
        "",
        "| service | unit | price USD | how it is counted | source/date |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for row in PRICES.values():
        lines.append(f"| {row['service']} | {row['unit']} | {row['usd']:g} | {row['note']} "
                     f"| {row.get('source', PRICE_SOURCE)} |")
    lines += [
        "",
        "Prices are the first (smallest) tier, without free tiers, savings plans or reserved capacity.",
        "",
        "## How the units are estimated",
        "",
        "- **DynamoDB** (on-demand): for every call the benchmark sizes the item written or read with",
        "  DynamoDB's size rules (attribute names + values; lists/maps +3 B +1 B per element; numbers",
        "  ~1 B per 2 digits). Writes: `ceil(size / 1 KB)` WRU (UpdateItem uses the returned `ALL_NEW`",
        "  image, else the table's last seen item size), also for a failed conditional write. GSI writes",
        "  are added from the table's index definitions: an update touching an index key costs a delete",
        "  plus a put in that index, or only the delete when it removes the key (a sparse index); an",
        "  `ALL`-projection index is rewritten by any update of an item that has its keys, an `INCLUDE`",
        "  one by an update of a projected attribute (1 WRU: its entries are small); a `KEYS_ONLY` one only",
        "  when a key moves. Reads: GetItem `ceil(size / 4 KB)` RRU, halved if eventually consistent (min 0.5);",
        "  Query sums the sizes of the items read (filtered-out ones counted at the mean item size).",
        "  This is an estimate: DynamoDB rounds per item and per request in ways a client cannot see.",
        "- **SQS**: one request per call per 64 KB chunk (request or response body). Calls made by the",
        "  Lambda event source mapping (ReceiveMessage, DeleteMessageBatch) are billed as SQS requests",
        "  even though the mapping itself costs nothing in Lambda (AWS Knowledge Center, \"Why are my",
        "  Amazon SQS charges higher than expected?\": a queue that triggers a Lambda function is long-polled",
        "  and its empty receives are charged). The embedded pollers stand in for the mapping and are",
        "  counted apart (`esm_sqs_calls_per_job`); receives that returned messages and the deletes are",
        "  priced per job. Empty long polls are time-based, not per job: one idle poller long-polling 20 s",
        "  makes ~130k requests a month (~$0.05); the mapping runs several pollers per queue.",
        "- **Secrets Manager**: per API call; Powertools caches secrets for 5 minutes, so per job it is",
        "  ~0 (each warm Lambda instance reads each secret once per 5 minutes).",
        "- **Lambda**: one request per invocation (SQS batches are one invocation for many jobs) plus",
        "  GB-s = duration (rounded up to 1 ms) x the function's deployed MemorySize. Durations are",
        "  measured in-process against moto on the benchmark machine: DynamoDB/SQS calls to AWS and the",
        "  RunPod `/run` call over the internet take different times, so treat GB-s as an estimate.",
        "  Cold starts (init) are excluded (the benchmark warms up first).",
        "- **API Gateway HTTP API**: one request per HTTP call the stack serves (the caller's",
        "  `POST /v1/jobs`, RunPod's callback; plus the caller's GETs if it polls).",
        "- **Step Functions Standard**: state transitions of the executions the jobs started, counted",
        "  from `GetExecutionHistory` (`*StateEntered` events, plus task re-attempts by `Retry`).",
        "  The healthy fast path starts none; `WorkflowMode=always` starts one per job; a retried job",
        "  one recovery execution; a council one council execution (a Map over its members).",
        "- **Other paths** (`retry_path_usd_per_1m`, `council3_usd_per_1m`, `always_workflow_usd_per_1m`):",
        "  short child runs price one retry through the recovery workflow (RunPod's `/run` refuses the",
        "  first attempt), a council of three models, and every job in a workflow, with the same meter.",
        "- **Extras** (reported apart, not in `cost_per_1m_jobs_usd`): CloudWatch Logs ingestion of what",
        f"  the functions log (measured bytes + ~{LAMBDA_PLATFORM_LOG_BYTES} B of Lambda START/END/REPORT",
        "  lines per invocation) and X-Ray traces (one trace per Lambda invocation, times a sampled",
        "  fraction: at < 1 invocation/s the default rule's 1/s reservoir samples ~all of them; at high",
        "  volume ~5%).",
        "- **Not included**: data transfer out, storage (DynamoDB GB-month, point-in-time recovery, S3",
        "  for large results), CloudWatch alarms/dashboards/metrics, KMS, the fixed per-secret fee, and",
        "  the idle SQS long polls of the event source mapping.",
        "",
        "## Fixed costs: the sweeper's rounds",
        "",
        "The sweeper's schedule runs once a minute (EventBridge's finest rate); each run sweeps every",
        "`SweepEverySeconds` and idles in between, so a lost webhook costs 20-40 s instead of minutes",
        "(docs/design.md, \"The sweeper\"). That idle time is billed: at the default 20 s the function runs about",
        "41 s of each minute, 512 MB: 41 × 0.5 GB-s × 43,200 runs a month ≈ 885k GB-s ≈ **$14.8 a month**",
        "(x86, $0.0000166667 per GB-s; arm64 ≈ $11.8), whatever the traffic. `SweepEverySeconds=60` (one round a",
        "minute, ~1 s of work) brings it to ~$0.4 a month, and a lost webhook then costs up to a minute more.",
        "This is a per-stack cost, not a per-job one, so it is not in `cost_per_1m_jobs_usd`.",
        "",
        "## GPU comparison",
        "",
        "The first design estimated ~4 Step Functions Standard transitions per job: ~$100 per 1M jobs, about",
        "25% of a 2-second GPU job. The benchmark prints `gpu_cost_per_1m_jobs_usd` for `--gpu-seconds` (2) at",
        "`--gpu-usd-per-s` (default: the RunPod 24 GB flex row above) and `router_cost_share`",
        "(AWS cost / GPU cost), for the fast path and for `WorkflowMode=always`.",
        "",
    ]
    return "\n".join(lines)
