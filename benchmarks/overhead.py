"""Router overhead and AWS cost per job, measured on the embedded stack (DESIGN.md §1 and §6).

    .venv/bin/python benchmarks/overhead.py [--jobs 200] [--concurrency 8] [--observe webhook|poll]
    .venv/bin/python benchmarks/overhead.py --write-doc      # re-render docs/cost.md from PRICES, exit

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
  overhead_ms     e2e_ms - exec_ms = (submit -> handler start) + (handler end -> result visible), DESIGN §6.
  queue_delay_ms  RunPod's delayTime (/run accepted -> a worker took it): part of overhead_ms that is
                  RunPod's queue, not ours; router_overhead_ms = overhead_ms - queue_delay_ms.
  stages_ms       the job's own timeline (event timestamps, ms resolution, same clock).

AWS calls are counted at the clients factory (`stillhouse.aws`): every boto3 call made by the in-process
Lambdas, attributed to the function running on that thread. Calls this harness makes itself (fetching
job details after the measured window, Step Functions histories, describe calls) are made after the
window or through separate moto clients, so they are not counted. The SQS event source mapping's own
ReceiveMessage / DeleteMessageBatch calls (made by the local pollers, not through the factory) are counted
separately: on AWS the mapping itself is free but its SQS requests are billed at SQS request prices.

Cost per 1M jobs prices those counts with PRICES (the one price table; docs/cost.md is rendered from it).
DynamoDB capacity units are estimated per call from item sizes (see `DynamoMeter`). Lambda GB-s come from
the handlers' measured in-process durations x the deployed MemorySize (they include moto's latency on a
busy 2-core box, not AWS's). A second short run with the template parameter WorkflowMode=always (in a
child process) counts Step Functions state transitions per job for the hypothetical "every job in a
workflow" mode, to compare with DESIGN §1's estimate (~4 transitions/job, ~$100 per 1M jobs).
"""
from __future__ import annotations

import argparse
import base64
import contextvars
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
COST_DOC = REPO_ROOT / "docs" / "cost.md"
MEASURED_ON = "2026-11-23"

# ------------------------------------------------------------------------------------------------ #
#  The one price table. docs/cost.md is rendered from it (`--write-doc`); the benchmark prices with it. #
# ------------------------------------------------------------------------------------------------ #
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
        "<!-- Rendered by `benchmarks/overhead.py --write-doc` from its PRICES table: edit the table there,",
        "     then re-render. The benchmark prices with the same table, so there is one source. -->",
        "",
        "What one job costs in AWS (DESIGN.md §1, §6) is measured by `benchmarks/overhead.py`: it counts the",
        "AWS API calls the embedded stack really makes per job at the clients factory (`stillhouse/aws.py`),",
        "the Lambda invocations and their in-process durations, API Gateway requests and Step Functions",
        "state transitions, and prices them with the table below. Latest figures: [benchmarks/README.md]"
        "(../benchmarks/README.md).",
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
        "  plus a put in that index; an `ALL`-projection index is rewritten by any update of an item that",
        "  has its keys. Reads: GetItem `ceil(size / 4 KB)` RRU, halved if eventually consistent (min 0.5);",
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
        "  The healthy fast path starts none; `WorkflowMode=always` starts one per job.",
        "- **Extras** (reported apart, not in `cost_per_1m_jobs_usd`): CloudWatch Logs ingestion of what",
        f"  the functions log (measured bytes + ~{LAMBDA_PLATFORM_LOG_BYTES} B of Lambda START/END/REPORT",
        "  lines per invocation) and X-Ray traces (one trace per Lambda invocation, times a sampled",
        "  fraction: at < 1 invocation/s the default rule's 1/s reservoir samples ~all of them; at high",
        "  volume ~5%).",
        "- **Not included**: data transfer out, storage (DynamoDB GB-month, point-in-time recovery, S3",
        "  for large results), CloudWatch alarms/dashboards/metrics, KMS, the fixed per-secret fee, and",
        "  the idle SQS long polls of the event source mapping.",
        "",
        "## GPU comparison",
        "",
        "DESIGN §1: ~4 Step Functions Standard transitions per job is ~$100 per 1M jobs, about 25% of a",
        "2-second GPU job. The benchmark prints `gpu_cost_per_1m_jobs_usd` for `--gpu-seconds` (2) at",
        "`--gpu-usd-per-s` (default: the RunPod 24 GB flex row above) and `router_cost_share`",
        "(AWS cost / GPU cost), for the fast path and for `WorkflowMode=always`.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ #
#  Small statistics helpers                                                                          #
# ------------------------------------------------------------------------------------------------ #
def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, float | None]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return {"p50": r(quantile(values, 0.5)), "p95": r(quantile(values, 0.95)), "p99": r(quantile(values, 0.99)),
            "mean": r(sum(values) / len(values)) if values else None, "min": r(min(values, default=None)),
            "max": r(max(values, default=None)), "n": len(values)}


def log(message: str) -> None:
    print(f"[overhead] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ #
#  DynamoDB capacity-unit estimate                                                                   #
# ------------------------------------------------------------------------------------------------ #
def _value_size(value: dict[str, Any]) -> int:
    (kind, v), = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        digits = len(v.lstrip("-").replace(".", "").lstrip("0")) or 1
        return (digits + 1) // 2 + 1
    if kind == "B":
        return len(base64.b64decode(v)) if isinstance(v, str) else len(v)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + _value_size(e) for e in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(e) for k, e in v.items())
    if kind in ("SS", "NS", "BS"):
        return sum(_value_size({kind[0]: e}) for e in v)
    return 1


def _plain_size(v: Any) -> int:
    """Size of a value as boto3's resource layer hands it back (already deserialized)."""
    if isinstance(v, str):
        return len(v.encode())
    if isinstance(v, bool) or v is None:
        return 1
    if isinstance(v, (int, float, Decimal)):
        digits = len(str(v).lstrip("-").replace(".", "").lstrip("0")) or 1
        return (digits + 1) // 2 + 1
    if isinstance(v, (bytes, bytearray)):
        return len(v)
    if hasattr(v, "value") and isinstance(getattr(v, "value"), (bytes, bytearray)):  # boto3 Binary
        return len(v.value)
    if isinstance(v, (list, tuple)):
        return 3 + sum(1 + _plain_size(e) for e in v)
    if isinstance(v, dict):
        return 3 + sum(1 + len(str(k).encode()) + _plain_size(e) for k, e in v.items())
    if isinstance(v, (set, frozenset)):
        return sum(_plain_size(e) for e in v)
    return 1


_TYPES = {"S", "N", "B", "BOOL", "NULL", "L", "M", "SS", "NS", "BS"}


def item_size(item: dict[str, Any] | None) -> int:
    """DynamoDB's item size: attribute names + values, typed (wire) or deserialized (resource) form."""
    total = 0
    for k, v in (item or {}).items():
        typed = isinstance(v, dict) and len(v) == 1 and next(iter(v)) in _TYPES
        total += len(k.encode()) + (_value_size(v) if typed else _plain_size(v))
    return total


_NAME_TOKEN = re.compile(r"#?[A-Za-z_][A-Za-z0-9_]*")


class DynamoMeter:
    """Estimates WRU/RRU of each DynamoDB call from the request and the parsed response."""

    def __init__(self, indexes: dict[str, list[tuple[str, set[str], str]]]) -> None:
        self.indexes = indexes  # table -> [(index name, key attributes, projection type)]
        self.last_size: dict[str, int] = {}

    def estimate(self, op: str, req: dict[str, Any], parsed: dict[str, Any], ok: bool) -> tuple[float, float]:
        """-> (WRU, RRU) for one call."""
        table = req.get("TableName", "")
        kb = lambda size: max(1, math.ceil(size / 1024))  # noqa: E731
        if op == "PutItem":
            size = item_size(req.get("Item"))
            self.last_size[table] = size
            wru = kb(size)
            if ok:
                keys = set(req.get("Item", {}))
                for _, index_keys, projection in self.indexes.get(table, []):
                    if index_keys <= keys:
                        wru += kb(size) if projection == "ALL" else 1
            return wru, 0.0
        if op == "UpdateItem":
            after = parsed.get("Attributes") if isinstance(parsed, dict) else None
            size = item_size(after) if after and req.get("ReturnValues") == "ALL_NEW" else None
            if size is not None:
                self.last_size[table] = size
            else:
                size = self.last_size.get(table, 1024)
            wru = kb(size)
            if ok:
                names = req.get("ExpressionAttributeNames", {})
                touched = {names.get(t, t) for t in _NAME_TOKEN.findall(req.get("UpdateExpression", ""))}
                present = set(after) if after else None
                for _, index_keys, projection in self.indexes.get(table, []):
                    has_keys = present is None or index_keys <= present
                    if touched & index_keys:
                        wru += 1 + (kb(size) if projection == "ALL" else 1)  # delete old entry + put new
                    elif projection == "ALL" and has_keys:
                        wru += kb(size)
            return wru, 0.0
        if op == "DeleteItem":
            return 1 + len(self.indexes.get(table, [])), 0.0
        if op == "GetItem":
            factor = 1.0 if req.get("ConsistentRead") else 0.5
            size = item_size(parsed.get("Item")) if isinstance(parsed, dict) else 0
            return 0.0, factor * max(1, math.ceil(size / 4096))
        if op in ("Query", "Scan"):
            factor = 1.0 if req.get("ConsistentRead") and not req.get("IndexName") else 0.5
            items = parsed.get("Items", []) if isinstance(parsed, dict) else []
            sizes = [item_size(i) for i in items]
            mean = (sum(sizes) / len(sizes)) if sizes else self.last_size.get(table, 0)
            filtered = max(0, int(parsed.get("ScannedCount", len(items))) - len(items)) if isinstance(parsed, dict) else 0
            return 0.0, factor * max(1, math.ceil((sum(sizes) + filtered * mean) / 4096))
        if op == "BatchGetItem":
            rru = 0.0
            for t, items in (parsed.get("Responses", {}) if isinstance(parsed, dict) else {}).items():
                factor = 1.0 if req.get("RequestItems", {}).get(t, {}).get("ConsistentRead") else 0.5
                rru += sum(factor * max(1, math.ceil(item_size(i) / 4096)) for i in items)
            return 0.0, rru
        if op == "BatchWriteItem":
            wru = 0.0
            for t, writes in req.get("RequestItems", {}).items():
                for w in writes:
                    wru += max(1, math.ceil(item_size(w.get("PutRequest", {}).get("Item")) / 1024))
            return wru, 0.0
        if op.startswith("Transact"):
            n = len(req.get("TransactItems", []))
            return (2.0 * n, 0.0) if op == "TransactWriteItems" else (0.0, 2.0 * n)
        return 0.0, 0.0


# ------------------------------------------------------------------------------------------------ #
#  Instrumentation of this process (the benchmark process only)                                      #
# ------------------------------------------------------------------------------------------------ #
class Meter:
    """Per-function AWS calls, capacity units, SQS chunks, Lambda durations and log bytes."""

    def __init__(self) -> None:
        # A context variable, not a thread-local: the dispatch function runs each record of a batch in a
        # thread of its own (asyncio.to_thread), which copies the context but not thread-locals.
        self.current: contextvars.ContextVar[str | None] = contextvars.ContextVar("bench_function", default=None)
        self.lock = threading.Lock()
        self.enabled = False  # True only inside the measured window
        self.calls: Counter[tuple[str, str, str]] = Counter()  # (function, service, operation)
        self.units: Counter[tuple[str, str]] = Counter()  # (function, unit) -> quantity
        self.durations: dict[str, list[float]] = defaultdict(list)  # function -> ms per invocation
        self.sources: Counter[tuple[str, str]] = Counter()  # (function, event source)
        self.log_bytes: Counter[str] = Counter()
        self.esm: Counter[str] = Counter()  # event source mapping SQS calls
        self.init_ms: dict[str, float] = {}
        self.hook_errors: Counter[str] = Counter()
        self.by_table: Counter[tuple[str, str]] = Counter()  # (table label, op | "wru" | "rru")
        self.active = 0
        self.dynamo: DynamoMeter | None = None

    def reset(self) -> None:
        with self.lock:
            for c in (self.calls, self.units, self.sources, self.log_bytes, self.esm, self.by_table):
                c.clear()
            self.durations.clear()

    def function(self) -> str:
        return self.current.get() or "outside"

    # --- Lambda handlers -----------------------------------------------------------------------
    def wrap_handler(self, name: str, handler: Any) -> Any:
        meter = self

        def timed(event: Any, context: Any) -> Any:
            source = _event_source(event)
            token = meter.current.set(name)
            with meter.lock:
                meter.active += 1
            start = time.perf_counter()
            try:
                return handler(event, context)
            finally:
                elapsed = (time.perf_counter() - start) * 1000
                meter.current.reset(token)
                with meter.lock:
                    meter.active -= 1
                    if meter.enabled:
                        meter.durations[name].append(elapsed)
                        meter.sources[(name, source)] += 1

        return timed

    # --- boto3 clients -------------------------------------------------------------------------
    def instrument_client(self, client: Any, service: str, *, esm: bool = False) -> None:
        if getattr(client, "_bench_instrumented", False):
            return
        client._bench_instrumented = True
        client.meta.events.register("before-call", lambda **kw: self._before(service, esm, **kw))
        client.meta.events.register("after-call", lambda **kw: self._after(service, esm, **kw))

    def _before(self, service: str, esm: bool, **kw: Any) -> None:
        try:
            self._note_request(service, esm, **kw)
        except Exception as err:  # noqa: BLE001 - the meter must never break the code it measures
            self.hook_errors[f"before: {type(err).__name__}: {err}"] += 1

    def _after(self, service: str, esm: bool, **kw: Any) -> None:
        try:
            self._note_response(service, esm, **kw)
        except Exception as err:  # noqa: BLE001 - the meter must never break the code it measures
            self.hook_errors[f"after: {type(err).__name__}: {err}"] += 1

    def _note_request(self, service: str, esm: bool, params: Any = None, context: Any = None, **_: Any) -> None:
        if context is None:
            return
        body = params.get("body") if isinstance(params, dict) else None
        context["bench_body_len"] = len(body) if isinstance(body, (bytes, str)) else 0
        context["bench_function"] = "esm" if esm else self.function()
        if service == "dynamodb" and body:
            try:
                context["bench_req"] = json.loads(body)
            except ValueError:
                context["bench_req"] = {}

    def _note_response(self, service: str, esm: bool, http_response: Any = None, parsed: Any = None,
                       model: Any = None, context: Any = None, **_: Any) -> None:
        if not self.enabled or context is None or model is None:
            return
        op = model.name
        fn = context.get("bench_function", "outside")
        ok = http_response is not None and http_response.status_code < 300
        with self.lock:
            if esm:
                empty = op == "ReceiveMessage" and not (parsed or {}).get("Messages")
                self.esm[f"{op}{'(empty)' if empty else ''}"] += 1
                return
            self.calls[(fn, service, op)] += 1
            if op in FREE_OPERATIONS:
                return
            if service == "dynamodb" and self.dynamo is not None:
                req = context.get("bench_req", {})
                wru, rru = self.dynamo.estimate(op, req, parsed or {}, ok)
                self.units[(fn, "dynamodb_wru")] += wru
                self.units[(fn, "dynamodb_rru")] += rru
                tables = [req["TableName"]] if "TableName" in req else list(req.get("RequestItems", {}))
                label = _table_label(",".join(tables))
                if fn != "SweeperFunction":
                    self.by_table[(label, f"{op}")] += 1
                    self.by_table[(label, "wru")] += wru
                    self.by_table[(label, "rru")] += rru
            elif service == "sqs":
                size = max(context.get("bench_body_len", 0), len(getattr(http_response, "content", b"") or b""))
                self.units[(fn, "sqs_request")] += max(1, math.ceil(size / 65536))
            elif service == "secretsmanager":
                self.units[(fn, "secretsmanager_call")] += 1

    # --- function logs (stdout) ----------------------------------------------------------------
    def count_log(self, n: int) -> None:
        fn = self.current.get()
        if fn and self.enabled:
            with self.lock:
                self.log_bytes[fn] += n


def _table_label(physical: str) -> str:
    """stillhouse-JobsTable-1A2B3C -> JobsTable (moto names tables <stack>-<logical id>-<suffix>)."""
    parts = physical.split("-")
    return parts[1] if len(parts) >= 3 else physical


def _event_source(event: Any) -> str:
    if isinstance(event, dict):
        if event.get("routeKey") or "requestContext" in event:
            return "http"
        records = event.get("Records")
        if records and isinstance(records, list) and records[0].get("eventSource") == "aws:sqs":
            return "sqs"
        if event.get("detail-type") == "Scheduled Event":
            return "schedule"
    return "stepfunctions"


class CountingStdout:
    """sys.stdout while the stack runs: counts what the functions log (CloudWatch Logs would ingest it)
    and passes it to stderr only with --verbose, so stdout carries the one JSON object."""

    def __init__(self, meter: Meter, echo: bool) -> None:
        self.meter = meter
        self.echo = echo

    def write(self, text: str) -> int:
        self.meter.count_log(len(text.encode(errors="replace")))
        if self.echo:
            sys.stderr.write(text)
        return len(text)

    def flush(self) -> None:
        if self.echo:
            sys.stderr.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"


def install(meter: Meter) -> None:
    """Patch, in this process only: time every handler, attribute every factory client's calls."""
    from stillhouse import aws
    from stillhouse_local.lambdas import InProcessFunction

    original_load = InProcessFunction._load

    def _load(self: Any) -> Any:
        start = time.perf_counter()
        handler = original_load(self)
        meter.init_ms[self.spec.logical_id] = round((time.perf_counter() - start) * 1000, 1)
        return meter.wrap_handler(self.spec.logical_id, handler)

    InProcessFunction._load = _load

    original_client, original_table = aws.client, aws.table

    def client(service: str, settings: Any = None) -> Any:
        found = original_client(service, settings)
        meter.instrument_client(found, service)
        return found

    def table(name: str, settings: Any = None) -> Any:
        found = original_table(name, settings)
        meter.instrument_client(found.meta.client, "dynamodb")
        return found

    aws.client, aws.table = client, table


# ------------------------------------------------------------------------------------------------ #
#  The caller: a webhook receiver and a closed loop of submitters                                    #
# ------------------------------------------------------------------------------------------------ #
class Receiver:
    """The caller's webhook endpoint on 127.0.0.1: timestamps each arrival on entry."""

    def __init__(self) -> None:
        self.arrivals: dict[str, tuple[float, float, dict[str, Any]]] = {}
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                t, wall = time.perf_counter(), time.time()
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
                try:
                    data = json.loads(body)
                except ValueError:
                    return
                with receiver.cond:
                    receiver.arrivals.setdefault(data.get("id", ""), (t, wall, data))
                    receiver.cond.notify_all()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name="bench-receiver").start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait(self, job_id: str, timeout: float) -> tuple[float, float, dict[str, Any]] | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while job_id not in self.arrivals:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.arrivals[job_id]

    def stop(self) -> None:
        self.server.shutdown()


TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


def run_jobs(url: str, key: str, n: int, concurrency: int, observe: str, poll_ms: float, receiver: Receiver,
             deadline_s: float, job_timeout_s: float = 30.0) -> list[dict[str, Any]]:
    import requests

    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    issued = [0]
    stop_at = time.monotonic() + deadline_s
    body = {"task": "echo", "input": {"text": "x"}}
    if observe == "webhook":
        body["webhook"] = receiver.url

    def worker() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        while True:
            with lock:
                if issued[0] >= n or time.monotonic() > stop_at:
                    return
                issued[0] += 1
            rec: dict[str, Any] = {"t0": time.perf_counter(), "wall0": time.time()}
            response = session.post(url + "/v1/jobs", json=body, timeout=10)
            rec["t_accepted"] = time.perf_counter()
            if response.status_code != 202:
                rec["error"] = f"submit {response.status_code}: {response.text[:200]}"
                with lock:
                    results.append(rec)
                continue
            rec["id"] = job_id = response.json()["id"]
            if observe == "webhook":
                arrival = receiver.wait(job_id, job_timeout_s)
                if arrival is None:
                    rec["error"] = "no webhook"
                else:
                    rec["t_visible"], rec["wall_visible"], rec["status"] = arrival[0], arrival[1], arrival[2]["status"]
            else:
                give_up = time.monotonic() + job_timeout_s
                while time.monotonic() < give_up:
                    job = session.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
                    if job.get("status") in TERMINAL:
                        rec["t_visible"], rec["wall_visible"], rec["status"] = time.perf_counter(), time.time(), job["status"]
                        break
                    time.sleep(poll_ms / 1000)
                else:
                    rec["error"] = "not terminal in time"
            with lock:
                results.append(rec)

    threads = [threading.Thread(target=worker, name=f"bench-caller-{i}", daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# ------------------------------------------------------------------------------------------------ #
#  Step Functions transitions                                                                       #
# ------------------------------------------------------------------------------------------------ #
def count_transitions(sfn: Any, job_ids: set[str], wait_s: float = 15.0) -> dict[str, Any]:
    """State transitions of the executions started for these jobs (named `<job id>-<attempt>`)."""
    executions = []
    for machine in sfn.list_state_machines()["stateMachines"]:
        for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=machine["stateMachineArn"]):
            for ex in page["executions"]:
                if ex["name"].rsplit("-", 1)[0] in job_ids or ex["name"].removesuffix("-council") in job_ids:
                    executions.append(ex["executionArn"])
    deadline = time.monotonic() + wait_s
    per_execution, statuses, types = [], Counter(), Counter()
    for arn in executions:
        while sfn.describe_execution(executionArn=arn)["status"] == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.2)
        statuses[sfn.describe_execution(executionArn=arn)["status"]] += 1
        events = []
        for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn):
            events += page["events"]
        kinds = Counter(e["type"] for e in events)
        types.update(kinds)
        entered = sum(v for k, v in kinds.items() if k.endswith("StateEntered"))
        tasks_entered = kinds.get("TaskStateEntered", 0)
        scheduled = kinds.get("TaskScheduled", 0) + kinds.get("LambdaFunctionScheduled", 0)
        per_execution.append(entered + max(0, scheduled - tasks_entered))
    return {"executions": len(executions), "transitions": sum(per_execution),
            "per_execution": summary([float(x) for x in per_execution]) if per_execution else None,
            "execution_status": dict(statuses), "history_event_types": dict(types)}


# ------------------------------------------------------------------------------------------------ #
#  One measured run                                                                                  #
# ------------------------------------------------------------------------------------------------ #
DETAIL = re.compile(r"delay=(\S+?)ms exec=(\S+?)ms")


def _parse_at(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import requests

    meter = Meter()
    real_stdout_fd = os.dup(1)
    os.dup2(2, 1)  # anything written to fd 1 (worker processes, stray prints) goes to stderr
    sys.stdout = CountingStdout(meter, echo=args.verbose)  # type: ignore[assignment]
    try:
        result = _measure(args, meter, requests)
    finally:
        sys.stdout = sys.__stdout__
        os.dup2(real_stdout_fd, 1)
        os.close(real_stdout_fd)
    return result


def _measure(args: argparse.Namespace, meter: Meter, requests: Any) -> dict[str, Any]:
    from stillhouse import aws
    from stillhouse_local.stack import EmbeddedStack, StackOptions

    install(meter)
    load_start = os.getloadavg()
    parameters = {"WorkflowMode": args.workflow_mode}
    t_start = time.monotonic()
    log(f"starting the embedded stack (WorkflowMode={args.workflow_mode}) ...")
    stack = EmbeddedStack(StackOptions(port=0, parameters=parameters,
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
                              g["Projection"]["ProjectionType"]) for g in desc.get("GlobalSecondaryIndexes", [])]
        meter.dynamo = DynamoMeter(indexes)
        memory, arch = function_sizes(stack.options.template)

        log(f"warm-up: {args.warmup} jobs")
        warm = run_jobs(stack.url, stack.dev_api_key, args.warmup, 1, args.observe, args.poll_ms, receiver, 60)
        if any("error" in r for r in warm):
            raise RuntimeError(f"warm-up failed: {[r.get('error') for r in warm]}")
        _quiesce(meter)

        calls_before = Counter(aws.api_calls)
        meter.reset()
        meter.enabled = True
        log(f"measuring: {args.jobs} jobs at concurrency {args.concurrency} (observe={args.observe})")
        t0 = time.perf_counter()
        records = run_jobs(stack.url, stack.dev_api_key, args.jobs, args.concurrency, args.observe, args.poll_ms,
                           receiver, args.max_run_s)
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
        job_ids = {r["id"] for r in records if "id" in r}
        sfn = count_transitions(stack.moto.client("stepfunctions"), job_ids)
        load_end = os.getloadavg()
    finally:
        receiver.stop()
        log("stopping the stack")
        stack.stop()

    return _report(args, meter, records, t1 - t0, factory_calls, sfn, memory, arch, load_start, load_end,
                   startup_s)


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


def _quiesce(meter: Meter, timeout: float = 10.0) -> None:
    """Wait until no handler runs (the webhook function finishes after the caller saw the result)."""
    deadline = time.monotonic() + timeout
    time.sleep(0.2)
    while meter.active and time.monotonic() < deadline:
        time.sleep(0.05)


def _report(args: argparse.Namespace, meter: Meter, records: list[dict[str, Any]], wall_s: float,
            factory_calls: Counter, sfn: dict[str, Any], memory: dict[str, int], arch: dict[str, str],
            load_start: tuple[float, ...], load_end: tuple[float, ...], startup_s: float) -> dict[str, Any]:
    completed = [r for r in records if r.get("status") == "COMPLETED" and "job" in r]
    n = len(completed)
    errors = Counter(r.get("error") or r.get("status") for r in records if r.get("status") != "COMPLETED")

    e2e, submit, overhead, delay, execution, router = [], [], [], [], [], []
    stages: dict[str, list[float]] = defaultdict(list)
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
        if found and found.group(2) not in ("None", ""):
            ex = float(found.group(2))
            dl = float(found.group(1)) if found.group(1) not in ("None", "") else 0.0
            execution.append(ex)
            delay.append(dl)
            overhead.append(e2e_ms - ex)
            router.append(e2e_ms - ex - dl)
        at = {e["status"]: _parse_at(e["at"]) for e in events}
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

    return {
        "benchmark": "overhead",
        "mode": "embedded (moto in-process, in-process Lambdas, RunPod stand-in with the real gpu_handler)",
        "workflow_mode": args.workflow_mode,
        "observe": args.observe if args.observe == "webhook" else f"poll every {args.poll_ms} ms",
        "jobs": len(records), "completed": n, "not_completed": dict(errors),
        "concurrency": args.concurrency,
        "wall_s": r(wall_s, 2), "jobs_per_s": r(n / wall_s if wall_s else None, 2),
        "e2e_ms": summary(e2e), "overhead_ms": summary(overhead), "queue_delay_ms": summary(delay),
        "exec_ms": summary(execution), "router_overhead_ms": summary(router), "submit_ms": summary(submit),
        "stages_ms_p50": {k: r(quantile(v, 0.5), 1) for k, v in stages.items()},
        "stages_ms_p95": {k: r(quantile(v, 0.95), 1) for k, v in stages.items()},
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


# ------------------------------------------------------------------------------------------------ #
def _workflow_always(args: argparse.Namespace) -> dict[str, Any]:
    """A short run with WorkflowMode=always, in a child process (a fresh stack and fresh Lambdas)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--workflow-mode", "always", "--jobs",
           str(args.workflow_jobs), "--concurrency", "1", "--warmup", "2", "--workflow-jobs", "0",
           "--gpu-usd-per-s", str(args.gpu_usd_per_s), "--gpu-seconds", str(args.gpu_seconds),
           "--xray-sampled-fraction", str(args.xray_sampled_fraction), "--max-run-s", "60"]
    log(f"WorkflowMode=always: {args.workflow_jobs} jobs in a child process")
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=240, cwd=REPO_ROOT)
    if done.returncode != 0:
        return {"error": f"child exited {done.returncode}"}
    child = json.loads(done.stdout)
    keep = ("jobs", "completed", "not_completed", "e2e_ms", "overhead_ms", "aws_calls_per_job",
            "aws_calls_per_job_total", "lambda_invocations_per_job", "stepfunctions", "capacity_units_per_job",
            "cost_per_1m_jobs_usd", "cost_breakdown_per_1m_jobs_usd", "router_cost_share")
    return {k: child.get(k) for k in keep}


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
    parser.add_argument("--verbose", action="store_true", help="pass the functions' logs to stderr")
    parser.add_argument("--write-doc", action="store_true", help="render docs/cost.md from PRICES and exit")
    args = parser.parse_args(argv)

    if args.write_doc:
        COST_DOC.write_text(render_cost_doc())
        log(f"wrote {COST_DOC}")
        return 0
    if not COST_DOC.exists() or COST_DOC.read_text() != render_cost_doc():
        log("note: docs/cost.md differs from PRICES; run with --write-doc")
    if args.jobs < 1 or args.concurrency < 1:
        parser.error("--jobs and --concurrency must be >= 1")

    started = time.monotonic()
    result = measure(args)
    if args.workflow_jobs > 0 and args.workflow_mode == "on_failure":
        always = _workflow_always(args)
        result["workflow_always"] = always
        if "stepfunctions" in (always or {}):
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
    result["total_runtime_s"] = round(time.monotonic() - started, 1)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    # This directory holds gpu_handler.py (another benchmark): keep it from shadowing the package.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    raise SystemExit(main())
