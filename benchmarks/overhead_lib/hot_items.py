"""Shared ("hot") DynamoDB items: the writes and write units each kind of item takes per job, with the
item's real size, and the jobs/s at which one partition key of that kind would reach DynamoDB's
1,000 write units a second (docs/scale.md).

Every write the functions make (PutItem, UpdateItem, DeleteItem, the items of TransactWriteItems and
BatchWriteItem) is classified by table and key, never by the code that made it, so the figures hold
whatever the quota's or the endpoint state's design:

- `tenant_quota`: any TenantsTable key containing `#in_flight` (one item per tenant, or its shards);
  `tenant_stream_polls` (`#polls`), `tenant_record` (any other tenants key);
- `endpoint_state`, `config` (live config, endpoints, audit: one partition per `id`), `api_key`,
  `tenant_webhook_secret`, `result_cache`, `batch`: by table;
- the partitions of each global secondary index, by its partition key's value (`JobsTable.ByTenantPart`:
  16 partitions per tenant, `{tenant}#{k}`; `JobsTable.ByStatusDuePart`: 16 per status, `{status}#{k}`):
  an index partition takes the same 1,000 write units a second, and an index that cannot keep up
  throttles the table's writes;
- `job` and `idempotency_record` (one item per job or request) are not shared: reported apart.

Write units, as DynamoDB bills and throttles them: 1 per started KB of the larger of the item before
and after the write (a delete: the item before; a write refused by its condition: the item as it is,
at least 1); twice that inside a transaction. The sizes are read from moto's in-process backend just
before and just after each write (the benchmark's moto runs in this process), so they are the item's
own, not the request's. An index entry costs 1 unit per started KB of the entry (keys and projected
attributes); a write that moves an entry to another key deletes the old one and puts the new one.

The ceiling of a kind: DynamoDB's 1,000 WCU/s per partition key ÷ the write units a job puts on one
of its items. `ceiling_jobs_per_s` takes the busiest item of the run (never more than what was seen);
`ceiling_even_spread_jobs_per_s` assumes a job's writes of that kind land on one of its `items` items,
evenly (what sharding gives over many jobs; the same figure when every job writes every item).
A partition value ending in `#<n>` is shard n of the key before it (`acme#3` of tenant `acme`,
`IN_QUEUE#7` of status `IN_QUEUE`, `acme#in_flight#2` of `acme#in_flight`):
`ceiling_busiest_key_even_spread_jobs_per_s` takes the key (all its shards) with the most write units a
job and spreads them evenly over the shards of it seen in the run (never more than were seen: a short
run may not touch all 16). For a kind with several keys, such as the statuses of the due index, that is
the figure that binds; `ceiling_even_spread_jobs_per_s` spreads over every item of the kind.
"""
from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .metering import item_size

PARTITION_WCU_PER_S = 1000  # DynamoDB, per partition (key): the ceiling every figure here divides
KB = 1024
#: Items written once per job (or per request): not shared between jobs, reported apart.
PER_JOB_KINDS = ("job", "idempotency_record")
#: Shared kinds always reported, with 0 writes when a run made none (then no ceiling: null).
ALWAYS = ("tenant_quota", "endpoint_state", "config")
_SHARD = re.compile(r"^(.*)#(\d+)$")
_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem")


@dataclass(frozen=True)
class Index:
    name: str
    hash_key: str
    range_key: str | None
    projection: str  # ALL | KEYS_ONLY | INCLUDE
    included: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    name: str  # physical
    label: str  # logical id (JobsTable)
    hash_key: str
    range_key: str | None
    indexes: tuple[Index, ...]


@dataclass
class KindStats:
    writes: int = 0
    refused: int = 0
    wcu: float = 0.0
    max_bytes: int = 0
    bytes_total: int = 0
    item_writes: Counter = field(default_factory=Counter)  # partition -> writes
    item_wcu: Counter = field(default_factory=Counter)  # partition -> write units
    fixed_writes: int = 0  # by the scheduled sweeper: a fixed rate, not per job
    fixed_wcu: float = 0.0


def kind_of(label: str, partition: str) -> str:
    """The kind of a table's item, by table and partition key (see the module's docstring)."""
    if label == "TenantsTable":
        if "#in_flight" in partition:
            return "tenant_quota"
        return "tenant_stream_polls" if "#polls" in partition else "tenant_record"
    return {"EndpointStateTable": "endpoint_state", "ConfigTable": "config", "JobsTable": "job",
            "IdempotencyTable": "idempotency_record", "ApiKeysTable": "api_key",
            "WebhookSecretsTable": "tenant_webhook_secret", "ResultCacheTable": "result_cache",
            "BatchesTable": "batch"}.get(label, label)


def _label(physical: str) -> str:
    parts = physical.split("-")  # moto: <stack>-<logical id>-<suffix>
    return parts[1] if len(parts) >= 3 else physical


def _scalar(typed: dict[str, Any] | None) -> str | None:
    if not typed:
        return None
    (_, value), = typed.items()
    return str(value)


@dataclass(frozen=True)
class Snapshot:
    """What a write is priced on: the item's size, and each index's entry (partition, sort, size, projected)."""

    size: int  # 0: no item
    entries: tuple[tuple[str, str | None, int, str] | None, ...]


class HotItems:
    """Per-kind writes and write units of shared items, fed by the meter's before/after-call hooks."""

    def __init__(self, tables: dict[str, Table], *, sizes: Any = None) -> None:
        self.tables = tables
        self.lock = threading.Lock()
        self.stats: dict[str, KindStats] = {}
        self._sizes = sizes if sizes is not None else MotoItems()
        self.errors: Counter[str] = Counter()

    @classmethod
    def from_client(cls, ddb: Any, **kwargs: Any) -> HotItems:
        tables = {}
        for name in ddb.list_tables()["TableNames"]:
            desc = ddb.describe_table(TableName=name)["Table"]
            keys = {k["KeyType"]: k["AttributeName"] for k in desc["KeySchema"]}
            indexes = []
            for g in desc.get("GlobalSecondaryIndexes", []):
                gk = {k["KeyType"]: k["AttributeName"] for k in g["KeySchema"]}
                indexes.append(Index(g["IndexName"], gk["HASH"], gk.get("RANGE"), g["Projection"]["ProjectionType"],
                                     tuple(g["Projection"].get("NonKeyAttributes", []))))
            tables[name] = Table(name, _label(name), keys["HASH"], keys.get("RANGE"), tuple(indexes))
        return cls(tables, **kwargs)

    def reset(self) -> None:
        with self.lock:
            self.stats.clear()
            self.errors.clear()

    # --- the meter's hooks -------------------------------------------------------------------------
    def before(self, op: str, req: dict[str, Any], context: dict[str, Any]) -> None:
        """Just before a write is sent: the items it targets, as they are."""
        if op not in _WRITES:
            return
        targets = []
        for table_name, key, how in _targets(op, req, self.tables):
            table = self.tables.get(table_name)
            if table is not None:
                targets.append((table, key, how, self._snapshot(table, key)))
        context["bench_hot_targets"] = targets

    def after(self, op: str, context: dict[str, Any], ok: bool, refused: bool, function: str) -> None:
        """Just after it answered: price each target on the larger of before and after."""
        for table, key, how, before in context.get("bench_hot_targets", ()):
            after = self._snapshot(table, key) if ok else before
            factor = 2.0 if op == "TransactWriteItems" else 1.0
            partition = _scalar(key.get(table.hash_key)) or "?"
            kind = kind_of(table.label, partition)
            if ok:
                size = before.size if how == "delete" else max(before.size, after.size)
            elif refused:
                size = before.size  # a refused condition still costs the item's size, at least 1 unit
            else:
                continue  # throttled or invalid: no write happened
            self._add(kind, partition, factor * _units(size), max(before.size, after.size), function, refused)
            if ok:
                for index, old, new in zip(table.indexes, before.entries, after.entries, strict=True):
                    for part, units, size in _index_writes(index, old, new):
                        self._add(f"{table.label}.{index.name}", part, factor * units, size, function, False)

    def _add(self, kind: str, partition: str, wcu: float, size: int, function: str, refused: bool) -> None:
        with self.lock:
            s = self.stats.setdefault(kind, KindStats())
            if function == "SweeperFunction":
                s.fixed_writes += 1
                s.fixed_wcu += wcu
                return
            s.writes += 1
            s.refused += refused
            s.wcu += wcu
            s.max_bytes = max(s.max_bytes, size)
            s.bytes_total += size
            s.item_writes[partition] += 1
            s.item_wcu[partition] += wcu

    def _snapshot(self, table: Table, key: dict[str, Any]) -> Snapshot:
        try:
            item = self._sizes.item(table, key)
        except Exception as err:  # noqa: BLE001 - the meter must never break the code it measures
            self.errors[f"{type(err).__name__}: {err}"] += 1
            item = None
        if not item:
            return Snapshot(0, tuple(None for _ in table.indexes))
        entries = []
        for index in table.indexes:
            if index.hash_key not in item or (index.range_key and index.range_key not in item):
                entries.append(None)  # sparse: no entry
                continue
            keys = {table.hash_key, table.range_key, index.hash_key, index.range_key} - {None}
            names = set(item) if index.projection == "ALL" else keys | set(index.included)
            projected = {k: item[k] for k in sorted(names) if k in item}
            entries.append((_scalar(item[index.hash_key]) or "?", _scalar(item.get(index.range_key or "")),
                            item_size(projected), json.dumps(projected, sort_keys=True, default=str)))
        return Snapshot(item_size(item), tuple(entries))

    # --- the report ----------------------------------------------------------------------------------
    def report(self, jobs: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """-> (hot_items: the shared kinds, per_job_items: the items of one job or request)."""
        hot, per_job = {}, {}
        with self.lock:
            stats = dict(self.stats)
        for kind, s in sorted(stats.items()):
            if s.writes == 0 and s.fixed_writes == 0:
                continue
            figures = kind_figures(s, jobs)
            (per_job if kind in PER_JOB_KINDS else hot)[kind] = figures
        for kind in ALWAYS:
            hot.setdefault(kind, kind_figures(KindStats(), jobs))
        return hot, per_job


def shard_key_of(partition: str) -> str:
    """The key a sharded partition value belongs to (`acme#3` -> `acme`); any other value is its own key."""
    m = _SHARD.match(partition)
    return m.group(1) if m else partition


def kind_figures(s: KindStats, jobs: int) -> dict[str, Any]:
    r = lambda v, d=3: None if v is None else round(v, d)
    n = max(jobs, 1)
    wcu_per_job = s.wcu / n
    busiest, busiest_wcu = (s.item_wcu.most_common(1) or [("", 0.0)])[0]
    items = len(s.item_wcu)
    busiest_per_job = busiest_wcu / n
    key_wcu: Counter = Counter()
    key_shards: Counter = Counter()
    for partition, wcu in s.item_wcu.items():
        key_wcu[shard_key_of(partition)] += wcu
        key_shards[shard_key_of(partition)] += 1
    busiest_key, busiest_key_wcu = (key_wcu.most_common(1) or [("", 0.0)])[0]
    return {
        "writes_per_job": r(s.writes / n),
        "wcu_per_job": r(wcu_per_job),
        "items": items,
        "busiest_item": busiest,
        "busiest_item_writes_per_job": r(s.item_writes[busiest] / n),
        "busiest_item_wcu_per_job": r(busiest_per_job),
        "item_bytes_max": s.max_bytes or None,  # an index's kind: its entry's bytes
        "item_bytes_mean": round(s.bytes_total / s.writes) if s.writes and s.max_bytes else None,
        "refused_writes_per_job": r(s.refused / n),
        "ceiling_jobs_per_s": r(PARTITION_WCU_PER_S / busiest_per_job, 1) if busiest_per_job else None,
        "ceiling_even_spread_jobs_per_s": r(PARTITION_WCU_PER_S * items / wcu_per_job, 1) if wcu_per_job else None,
        "busiest_key": busiest_key,
        "busiest_key_shards": key_shards[busiest_key],
        "busiest_key_wcu_per_job": r(busiest_key_wcu / n),
        "ceiling_busiest_key_even_spread_jobs_per_s":
            r(PARTITION_WCU_PER_S * key_shards[busiest_key] * n / busiest_key_wcu, 1) if busiest_key_wcu else None,
        "sweeper_writes_in_window": s.fixed_writes, "sweeper_wcu_in_window": r(s.fixed_wcu),
    }


def _units(size: int) -> int:
    return max(1, math.ceil(size / KB))


def _index_writes(index: Index, old: tuple | None, new: tuple | None) -> list[tuple[str, int, int]]:
    """(partition, write units, entry bytes) of the index writes that turn entry `old` into `new`."""
    if old is None and new is None:
        return []
    if old is None:
        return [(new[0], _units(new[2]), new[2])]
    if new is None:
        return [(old[0], _units(old[2]), old[2])]
    if old[:2] != new[:2]:  # the entry moves: a delete and a put
        return [(old[0], _units(old[2]), old[2]), (new[0], _units(new[2]), new[2])]
    if old[3] != new[3]:  # a projected attribute changed: rewritten in place
        size = max(old[2], new[2])
        return [(new[0], _units(size), size)]
    return []


def _targets(op: str, req: dict[str, Any], tables: dict[str, Table]) -> list[tuple[str, dict[str, Any], str]]:
    """(table, key (typed), put|update|delete) of each item a write request names."""
    def key_of(table_name: str, item: dict[str, Any]) -> dict[str, Any]:
        t = tables.get(table_name)
        if t is None:
            return {}
        return {k: item[k] for k in (t.hash_key, t.range_key) if k and k in item}

    if op == "PutItem":
        return [(req.get("TableName", ""), key_of(req.get("TableName", ""), req.get("Item", {})), "put")]
    if op in ("UpdateItem", "DeleteItem"):
        return [(req.get("TableName", ""), req.get("Key", {}), "delete" if op == "DeleteItem" else "update")]
    out = []
    if op == "TransactWriteItems":
        for entry in req.get("TransactItems", []):
            for how, body in entry.items():
                name = body.get("TableName", "")
                if how == "Put":
                    out.append((name, key_of(name, body.get("Item", {})), "put"))
                elif how in ("Update", "Delete"):
                    out.append((name, body.get("Key", {}), how.lower()))
    if op == "BatchWriteItem":
        for name, writes in req.get("RequestItems", {}).items():
            for w in writes:
                if "PutRequest" in w:
                    out.append((name, key_of(name, w["PutRequest"].get("Item", {})), "put"))
                elif "DeleteRequest" in w:
                    out.append((name, w["DeleteRequest"].get("Key", {}), "delete"))
    return out


class MotoItems:
    """Items as moto's in-process backend holds them (typed, as on the wire): no request, no meter."""

    def __init__(self, account: str = "123456789012") -> None:
        self.account = account
        self._tables: dict[str, Any] = {}

    def item(self, table: Table, key: dict[str, Any]) -> dict[str, Any] | None:
        from moto.dynamodb.models import dynamodb_backends

        backend = self._tables.get(table.name)
        if backend is None:
            regions = dynamodb_backends[self.account]
            backend = next(b for b in (regions[r] for r in list(regions.keys())) if table.name in b.tables)
            self._tables[table.name] = backend
        for _ in range(5):  # another thread's write may change the item while it is read
            try:
                found = backend.get_item(table.name, key)
                return None if found is None else dict(found.to_json()["Attributes"])
            except RuntimeError:
                continue
        return None


# ------------------------------------------------------------------------------------------------ #
#  The human report                                                                                  #
# ------------------------------------------------------------------------------------------------ #
def render(hot: dict[str, Any], probe: dict[str, Any] | None = None) -> str:
    """The hot-item figures as a table (stderr), busiest kind first."""
    head = (f"{'shared item kind':<28} {'writes/job':>10} {'WCU/job':>8} {'items':>5} {'max bytes':>9} "
            f"{'ceiling jobs/s':>14} {'key spread':>10}")
    lines = ["hot items: DynamoDB's 1,000 WCU/s per partition key / WCU per job on the busiest item", head]
    order = sorted(hot.items(), key=lambda kv: kv[1].get("ceiling_jobs_per_s") or math.inf)
    for kind, f in order:
        ceiling = f.get("ceiling_jobs_per_s")
        lines.append(f"{kind:<28} {f['writes_per_job']:>10} {f['wcu_per_job']:>8} {f['items']:>5} "
                     f"{f['item_bytes_max'] or '-':>9} {ceiling if ceiling is not None else '-':>14} "
                     f"{f.get('ceiling_busiest_key_even_spread_jobs_per_s') or '-':>10}")
    for name, p in (probe or {}).items():
        if "error" in p:
            lines.append(f"{name}: {p['error']}")
            continue
        lines.append(f"{name}: {p['in_flight']} jobs in flight -> quota item(s) up to {p['item_bytes_max']} bytes, "
                     f"{p['wcu_per_job']} WCU a job (admitted and ended), {p['shards']} shard(s): ceiling "
                     f"{p['ceiling_sharded_jobs_per_s']} jobs/s")
    return "\n".join(lines)


def hot_items_section(hot: HotItems | None, jobs: int, probe: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON report's part: `hot_items` (shared kinds), `per_job_items`, `hot_items_probe`, the limit."""
    if hot is None:
        return {}
    shared, per_job = hot.report(jobs)
    return {"hot_items": shared, "per_job_items": per_job, "hot_items_probe": probe or {},
            "hot_items_basis": {"partition_wcu_per_s": PARTITION_WCU_PER_S, "jobs": jobs,
                                "sizes": "moto's item before and after each write; 1 WCU per started KB, "
                                         "2x in a transaction", "meter_errors": dict(hot.errors)}}
