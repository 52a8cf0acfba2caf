"""A tenant's quotas, checked when it submits a job (stillhouse.jobs.service).

Both counted quotas live on one item per tenant (`{tenant}#in_flight`, apart from its record), and an
admitted submission is one conditional update of it: it takes a token and adds the job's id together,
so a submission refused by either takes neither.

- `requests_per_minute`: a token bucket: `rpm` tokens at most, refilled at rpm/60 a second, one per
  submission. The update is conditioned on the bucket being as this process last saw it (tokens and
  time); a process that lost a race learns the winner's bucket from the refused write
  (ReturnValuesOnConditionCheckFailure) and tries again. Other processes only ever take tokens, so a
  bucket that looks empty here is empty: refusing it needs no write at all.
- `max_in_flight`: the ids of the tenant's jobs not known to have ended, as a set; the update adds the
  job's id on the condition `size(live) < max`. Nothing removes an id when its job ends (a job may end
  in any of several functions, and a lost removal would lock a tenant out): instead the set is healed,
  by asking the jobs table which of its jobs still run, when it is full (then the submission tries
  again) and every HEAL_EVERY ids as it grows, so it stays small.
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

from stillhouse.config import TenantLimits
from stillhouse.errors import Forbidden, QuotaExceeded, Unprocessable
from stillhouse.refusals import refused_item
from stillhouse.tenants.store import TenantStore

#: A tenant at its in-flight limit is told to try again after this long: its jobs take seconds at least.
IN_FLIGHT_RETRY_AFTER_S = 5
#: From 2x this many ids on, the in-flight set is healed each time its size is a multiple of this, so it
#: holds the jobs in flight plus at most about 2x this many that have ended.
HEAL_EVERY = 25
_RACES = 8  # tries of an update that keeps losing to other processes' buckets, before answering 429


class Quotas:
    def __init__(self, tenants: TenantStore, live_jobs: Callable[[list[str]], set[str]], *,
                 now: Callable[[], float] = time.time) -> None:
        self._tenants = tenants
        self._table = tenants.table
        self._live_jobs = live_jobs
        self._now = now
        self._buckets: dict[str, tuple[Decimal, Decimal]] = {}  # tenant -> (tokens, at) as last seen
        # One update per tenant at a time in this process: its threads would only race each other.
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
            self._take(tenant_id, job_id, limits)

    def _take(self, tenant_id: str, job_id: str, limits: TenantLimits) -> None:
        """One token and one in-flight place for `job_id`, in one conditional write."""
        capacity = Decimal(limits.requests_per_minute)
        rate = capacity / 60  # tokens a second
        healed = False
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
            # Both bucket fields: two writes within one clock tick leave the same `rate_at`.
            bucket = ("attribute_not_exists(rate_at)" if seen is None
                      else "rate_at = :seen_at AND rate_tokens = :seen_tokens")
            try:
                added = self._table.update_item(
                    Key={"tenant_id": in_flight_key(tenant_id)},
                    UpdateExpression="SET rate_tokens = :left, rate_at = :now ADD #live :job",
                    ConditionExpression=f"({bucket}) AND (attribute_not_exists(#live) OR size(#live) < :max)",
                    ExpressionAttributeNames={"#live": "live"},
                    ExpressionAttributeValues={":left": left, ":now": now, ":job": {job_id},
                                               ":max": limits.max_in_flight,
                                               **({} if seen is None else
                                                  {":seen_tokens": seen[0], ":seen_at": seen[1]})},
                    ReturnValues="UPDATED_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except self._table.meta.client.exceptions.ConditionalCheckFailedException as refused:
                item = self._item_of(tenant_id, refused_item(refused))
                found = _bucket(item)
                if found != seen:  # another process took tokens: try again on its bucket
                    self._forget_or_keep(tenant_id, found)
                    continue
                if healed:  # the bucket was as seen: the set is full, even after healing
                    break
                self._heal(tenant_id)
                healed = True
                continue
            self._buckets[tenant_id] = (left, now)
            held = len(added["Attributes"]["live"])
            if held >= 2 * HEAL_EVERY and held % HEAL_EVERY == 0:
                self._heal(tenant_id)  # keeps the set, and so the cost of each write, near the jobs in flight
            return
        else:
            raise QuotaExceeded("requests_per_minute: too many submissions at once for this tenant; try again",
                                limit="requests_per_minute", retry_after_s=1)
        raise QuotaExceeded(f"max_in_flight: this tenant has {limits.max_in_flight} jobs that have not ended; "
                            "submit more when some have", limit="max_in_flight",
                            retry_after_s=IN_FLIGHT_RETRY_AFTER_S)

    def _forget_or_keep(self, tenant_id: str, bucket: tuple[Decimal, Decimal] | None) -> None:
        if bucket is None:
            self._buckets.pop(tenant_id, None)  # no bucket yet: a full one is made
        else:
            self._buckets[tenant_id] = bucket

    def _item_of(self, tenant_id: str, refused: dict[str, Any] | None) -> dict[str, Any]:
        if refused is not None:
            return refused
        # A backend that does not return the refused item.
        return self._table.get_item(Key={"tenant_id": in_flight_key(tenant_id)}, ConsistentRead=True).get("Item") or {}

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


def _bucket(item: dict[str, Any]) -> tuple[Decimal, Decimal] | None:
    if "rate_at" not in item:
        return None
    return Decimal(item["rate_tokens"]), Decimal(item["rate_at"])


def in_flight_key(tenant_id: str) -> str:
    """The item of a tenant's counted quotas, apart from its record (name, limits): the record is read
    on every cache miss and must stay small, while this item grows with the jobs in flight."""
    return f"{tenant_id}#in_flight"
