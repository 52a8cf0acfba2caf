"""What the benchmark meters, in this process only: AWS calls per function, DynamoDB capacity units, SQS
requests, Lambda durations, init times and log bytes.

It meters through the hooks the code offers: `stillhouse.aws.add_client_hook` (every client the clients
factory creates) and `stillhouse_local.lambdas.handler_wrappers` (every in-process function's handler).
"""
from __future__ import annotations

import base64
import contextvars
import json
import math
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from .prices import FREE_OPERATIONS


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
    if hasattr(v, "value") and isinstance(v.value, (bytes, bytearray)):  # boto3 Binary
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

    def __init__(self, indexes: dict[str, list[tuple[str, set[str], str, set[str]]]]) -> None:
        # table -> [(index name, key attributes, projection type, projected non-key attributes)]
        self.indexes = indexes
        self.last_size: dict[str, int] = {}

    def estimate(self, op: str, req: dict[str, Any], parsed: dict[str, Any], ok: bool) -> tuple[float, float]:
        """-> (WRU, RRU) for one call."""
        table = req.get("TableName", "")
        kb = lambda size: max(1, math.ceil(size / 1024))
        if op == "PutItem":
            size = item_size(req.get("Item"))
            self.last_size[table] = size
            wru = kb(size)
            if ok:
                keys = set(req.get("Item", {}))
                for _, index_keys, projection, _ in self.indexes.get(table, []):
                    if index_keys <= keys:  # a sparse index holds only items that have its keys
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
                for _, index_keys, projection, included in self.indexes.get(table, []):
                    has_keys = present is None or index_keys <= present
                    entry = kb(size) if projection == "ALL" else 1  # KEYS_ONLY/INCLUDE entries are small
                    if touched & index_keys:
                        # A key changed: the old entry is deleted and the new one put; a key removed
                        # (sparse index) only deletes. (An entry whose key is only now set only puts;
                        # counted as a move, an over-estimate by 1.)
                        wru += (1 + entry) if has_keys else 1
                    elif has_keys and (projection == "ALL" or touched & included):
                        wru += entry  # a projected attribute changed: the entry is rewritten in place
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
#  The meter (the benchmark process only)                                                            #
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
        self.hot: Any = None  # a hot_items.HotItems: shared items' writes and write units, by kind
        self.instrumented: set[int] = set()  # id() of the clients metered (they live as long as the process)
        self.callback_started: dict[str, float] = {}  # job id -> wall time its first RunPod callback's handler began

    def reset(self) -> None:
        with self.lock:
            for c in (self.calls, self.units, self.sources, self.log_bytes, self.esm, self.by_table):
                c.clear()
            self.durations.clear()
        if self.hot is not None:
            self.hot.reset()

    def function(self) -> str:
        return self.current.get() or "outside"

    # --- Lambda handlers -----------------------------------------------------------------------
    def wrap_handler(self, name: str, handler: Any) -> Any:
        meter = self

        def timed(event: Any, context: Any) -> Any:
            source = _event_source(event)
            path = event.get("rawPath", "") if isinstance(event, dict) else ""
            if path.startswith("/callbacks/runpod/"):
                meter.callback_started.setdefault(path.rsplit("/", 1)[-1], time.time())
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
        with self.lock:
            if id(client) in self.instrumented:  # the pollers share one client
                return
            self.instrumented.add(id(client))
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

    def _note_request(self, service: str, esm: bool, params: Any = None, context: Any = None, model: Any = None,
                      **_: Any) -> None:
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
            if self.hot is not None and self.enabled and model is not None and not esm:
                self.hot.before(model.name, context["bench_req"], context)

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
                if self.hot is not None:
                    code = ((parsed or {}).get("Error") or {}).get("Code")
                    self.hot.after(op, context, ok, code in _REFUSED, fn)
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


#: Error codes of a write refused by its condition: it still costs write units.
_REFUSED = ("ConditionalCheckFailedException", "TransactionCanceledException")


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


def install(meter: Meter) -> Callable[[], None]:
    """Meter this process through the code's hooks: time every handler, attribute every factory client's
    calls. Returns the function that removes both hooks."""
    from stillhouse_local import lambdas

    from stillhouse import aws

    def on_load(fn: lambdas.InProcessFunction, handler: lambdas.Handler, init_s: float) -> lambdas.Handler:
        meter.init_ms[fn.spec.logical_id] = round(init_s * 1000, 1)
        return meter.wrap_handler(fn.spec.logical_id, handler)

    lambdas.handler_wrappers.append(on_load)
    remove_client_hook = aws.add_client_hook(meter.instrument_client)

    def uninstall() -> None:
        remove_client_hook()
        if on_load in lambdas.handler_wrappers:
            lambdas.handler_wrappers.remove(on_load)

    return uninstall
