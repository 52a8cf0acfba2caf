"""The tenant quota item(s) with many jobs in flight: the benchmark's echo jobs end within milliseconds, so
its tenant never holds more than a few. This probe drives the real `Quotas.admit` on the stack's own
tenants table (moto) for a tenant of its own: `in_flight` admissions that are never released (every job
still runs, as far as the quota can tell), then `measured` more, metered as the run's writes are
(hot_items.HotItems: each write priced on the item's size before and after it).

It measures what one submission costs on the quota item(s) when that many jobs are in flight, whatever
the item's design (a set of ids on one item, or counts on shards), and the ceiling in submissions a
second that follows from DynamoDB's 1,000 WCU/s per partition key."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

from .hot_items import HotItems


def probe_quota(moto_url: str, hot: HotItems, in_flight: int, measured: int = 64) -> dict[str, Any]:
    """-> the quota kind's figures per submission at `in_flight` jobs in flight, or {"error": ...}."""
    import boto3

    from stillhouse.config import TenantLimits
    from stillhouse.tenants.quotas import Quotas, shard_count
    from stillhouse.tenants.store import TenantStore

    table_name = next((t.name for t in hot.tables.values() if t.label == "TenantsTable"), None)
    if table_name is None:
        return {"error": "no TenantsTable"}
    probe = HotItems(hot.tables)
    table = boto3.resource("dynamodb", endpoint_url=moto_url, region_name="us-east-1").Table(table_name)
    on = [False]

    def before(model: Any = None, params: Any = None, context: Any = None, **_: Any) -> None:
        body = params.get("body") if isinstance(params, dict) else None
        if on[0] and model is not None and context is not None and body:
            probe.before(model.name, json.loads(body), context)

    def after(model: Any = None, http_response: Any = None, parsed: Any = None, context: Any = None, **_: Any) -> None:
        if on[0] and model is not None and context is not None:
            code = ((parsed or {}).get("Error") or {}).get("Code")
            ok = http_response is not None and http_response.status_code < 300
            probe.after(model.name, context, ok, code == "ConditionalCheckFailedException", "probe")

    table.meta.client.meta.events.register("before-call", before)
    table.meta.client.meta.events.register("after-call", after)
    limits = TenantLimits(max_in_flight=5_000, requests_per_minute=1_000_000)
    tenant = f"bench-probe-{uuid.uuid4().hex[:8]}"
    try:
        quotas = Quotas(TenantStore(table, limits, cache_ttl_s=3600))
        started = time.monotonic()
        for _ in range(in_flight):
            quotas.admit(tenant, uuid.uuid4().hex)
        on[0] = True
        # Each job's whole life on the quota: its admission, and the give-back its terminal write makes.
        holds = [quotas.admit(tenant, uuid.uuid4().hex) for _ in range(measured)]
        for held in holds:
            quotas.release_finished(tenant, held)
        on[0] = False
    except Exception as err:  # noqa: BLE001 - a quota design this probe does not know: say so, go on
        return {"error": f"{type(err).__name__}: {err}", "in_flight": in_flight}
    hot_kinds, _ = probe.report(measured)
    figures = hot_kinds.get("tenant_quota")
    if figures is None:
        return {"error": "no write to a `#in_flight` item was seen", "in_flight": in_flight}
    return {"in_flight": in_flight, "submissions_measured": measured,
            "wcu_per_job": figures["wcu_per_job"], "writes_per_job": figures["writes_per_job"],
            "items": figures["items"], "shards": shard_count(limits), "item_bytes_max": figures["item_bytes_max"],
            "ceiling_jobs_per_s": figures["ceiling_jobs_per_s"],
            "ceiling_even_spread_jobs_per_s": figures["ceiling_even_spread_jobs_per_s"],
            # Jobs spread over every shard at random: each shard's 1,000 WCU/s, over the WCU a job costs.
            "ceiling_sharded_jobs_per_s": round(1000 * shard_count(limits) / figures["wcu_per_job"], 1),
            "fill_s": round(time.monotonic() - started, 1),
            "note": "a job's admission and its give-back at its end"}



def quota_probes(moto_url: str, hot: HotItems, in_flight: list[int]) -> dict[str, Any]:
    """One probe per figure of jobs in flight (`--quota-probe`), each for a tenant of its own."""
    from . import log

    out = {}
    for n in in_flight:
        if n > 0:
            log(f"quota probe: {n} jobs in flight for one tenant, then 64 jobs admitted and ended, metered")
            out[f"tenant_quota_at_{n}_in_flight"] = probe_quota(moto_url, hot, n)
    return out
