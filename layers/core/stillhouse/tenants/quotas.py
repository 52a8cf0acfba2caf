"""A tenant's quotas, checked when it submits a job (stillhouse.jobs.service).

- `requests_per_minute`: a token bucket on the tenant's item: `rpm` tokens at most, refilled at rpm/60
  a second, one per submission. Taking a token is one conditional update, conditioned on the bucket being
  as this process last saw it (tokens and time); a process that lost a race learns the winner's bucket from the refused
  write (ReturnValuesOnConditionCheckFailure) and tries again. Other processes only ever take tokens, so
  a bucket that looks empty here is empty: refusing it needs no write at all.
- `max_in_flight`: the ids of the tenant's jobs not known to have ended, as a set in an item of its own;
  a submission adds its id with one conditional update (`size(live) < max`). Nothing removes an id when
  its job ends (a job may end in any of several functions, and a lost removal would lock a tenant out):
  instead the set is healed, by asking the jobs table which of its jobs still run, when it is full (then
  the submission tries again) and every HEAL_EVERY ids as it grows, so it stays small.
- `max_council_models` and `allow_high_priority` need no state.

Over `requests_per_minute` or `max_in_flight` → QuotaExceeded (429, Retry-After, naming the limit). A
council too large or a `high` priority not allowed are refused as the request's fault (422 / 403, naming
the field and the limit): waiting would not change the answer.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from threading import Lock
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from stillhouse.config import TenantLimits
from stillhouse.errors import Forbidden, QuotaExceeded, Unprocessable
from stillhouse.tenants.store import TenantStore

#: A tenant at its in-flight limit is told to try again after this long: its jobs take seconds at least.
IN_FLIGHT_RETRY_AFTER_S = 5
#: From 2x this many ids on, the in-flight set is healed each time its size is a multiple of this, so it
#: holds the jobs in flight plus at most about 2x this many that have ended.
HEAL_EVERY = 25
_RACES = 8  # tries of a bucket update that keeps losing to other processes, before answering 429


class Quotas:
    def __init__(self, tenants: TenantStore, live_jobs: Callable[[list[str]], set[str]], *,
                 now: Callable[[], float] = time.time) -> None:
        self._tenants = tenants
        self._table = tenants.table
        self._live_jobs = live_jobs
        self._now = now
        self._buckets: dict[str, tuple[Decimal, Decimal]] = {}  # tenant -> (tokens, at) as last seen
        # One bucket update per tenant at a time in this process: its threads would only race each other.
        self._locks: defaultdict[str, Lock] = defaultdict(Lock)

    def admit(self, tenant_id: str, job_id: str, *, high_priority: bool = False,
              council_models: int | None = None) -> None:
        """Admit one job submission of `tenant_id`, or raise naming the limit it is over."""
        limits = self._tenants.limits(tenant_id)
        if high_priority and not limits.allow_high_priority:
            raise Forbidden("priority: high is not allowed for this tenant (allow_high_priority is off)",
                            field="priority")
        if council_models is not None and council_models > limits.max_council_models:
            raise Unprocessable(f"input.models: {council_models} models; this tenant's max_council_models is "
                                f"{limits.max_council_models}", field="input.models")
        with self._locks[tenant_id]:
            self._take_token(tenant_id, limits)
        self._hold(tenant_id, job_id, limits)

    # --- requests_per_minute --------------------------------------------------------------------
    def _take_token(self, tenant_id: str, limits: TenantLimits) -> None:
        capacity = Decimal(limits.requests_per_minute)
        rate = capacity / 60  # tokens a second
        for _ in range(_RACES):
            now = Decimal(str(round(self._now(), 6)))
            seen = self._buckets.get(tenant_id)
            tokens = capacity if seen is None else min(capacity, seen[0] + max(Decimal(0), now - seen[1]) * rate)
            if tokens < 1:
                wait = math.ceil((1 - tokens) / rate)
                raise QuotaExceeded(f"requests_per_minute: this tenant may submit {limits.requests_per_minute} "
                                    f"jobs a minute; try again in {wait} s", limit="requests_per_minute",
                                    retry_after_s=max(1, wait))
            left = tokens - 1
            try:
                self._table.update_item(
                    Key={"tenant_id": tenant_id},
                    UpdateExpression="SET rate_tokens = :left, rate_at = :now",
                    # Both fields: two writes within one clock tick leave the same `rate_at`.
                    ConditionExpression=("attribute_not_exists(rate_at)" if seen is None
                                         else "rate_at = :seen_at AND rate_tokens = :seen_tokens"),
                    ExpressionAttributeValues={":left": left, ":now": now, **({} if seen is None else
                                               {":seen_tokens": seen[0], ":seen_at": seen[1]})},
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except self._table.meta.client.exceptions.ConditionalCheckFailedException as refused:
                bucket = self._bucket_of(tenant_id, refused.response.get("Item"))
                if bucket is None:
                    self._buckets.pop(tenant_id, None)
                else:
                    self._buckets[tenant_id] = bucket
                continue
            self._buckets[tenant_id] = (left, now)
            return
        raise QuotaExceeded("requests_per_minute: too many submissions at once for this tenant; try again",
                            limit="requests_per_minute", retry_after_s=1)

    def _bucket_of(self, tenant_id: str, raw: dict[str, Any] | None) -> tuple[Decimal, Decimal] | None:
        if raw is not None:
            item = {k: TypeDeserializer().deserialize(v) for k, v in raw.items()}
        else:  # a backend that does not return the refused item
            item = self._table.get_item(Key={"tenant_id": tenant_id}, ConsistentRead=True).get("Item") or {}
        if "rate_at" not in item:
            return None  # no bucket yet: a full one is made
        return Decimal(item["rate_tokens"]), Decimal(item["rate_at"])

    # --- max_in_flight --------------------------------------------------------------------------
    def _hold(self, tenant_id: str, job_id: str, limits: TenantLimits) -> None:
        key = {"tenant_id": in_flight_key(tenant_id)}
        for healed in (False, True):
            try:
                added = self._table.update_item(
                    Key=key, UpdateExpression="ADD #live :job",
                    ConditionExpression="attribute_not_exists(#live) OR size(#live) < :max",
                    ExpressionAttributeNames={"#live": "live"},
                    ExpressionAttributeValues={":job": {job_id}, ":max": limits.max_in_flight},
                    ReturnValues="UPDATED_NEW")
            except self._table.meta.client.exceptions.ConditionalCheckFailedException:
                if not healed:
                    self._heal(tenant_id)
                continue
            held = len(added["Attributes"]["live"])
            if held >= 2 * HEAL_EVERY and held % HEAL_EVERY == 0:
                self._heal(tenant_id)  # keeps the set, and so the cost of each write, near the jobs in flight
            return
        raise QuotaExceeded(f"max_in_flight: this tenant has {limits.max_in_flight} jobs that have not ended; "
                            "submit more when some have", limit="max_in_flight",
                            retry_after_s=IN_FLIGHT_RETRY_AFTER_S)

    def _heal(self, tenant_id: str) -> None:
        """Forget the jobs in the tenant's set that have ended (or were never stored)."""
        key = {"tenant_id": in_flight_key(tenant_id)}
        item = self._table.get_item(Key=key, ConsistentRead=True, ProjectionExpression="#live",
                                    ExpressionAttributeNames={"#live": "live"}).get("Item") or {}
        held = sorted(item.get("live") or ())
        ended = set(held) - self._live_jobs(held)
        if ended:
            self._table.update_item(Key=key, UpdateExpression="DELETE #live :ended",
                                    ExpressionAttributeNames={"#live": "live"},
                                    ExpressionAttributeValues={":ended": ended})


def in_flight_key(tenant_id: str) -> str:
    """The item holding a tenant's in-flight set, apart from its record: a write costs by the item's size,
    so the bucket's update stays one small write however many jobs are in flight."""
    return f"{tenant_id}#in_flight"
