"""A tenant's quotas, checked when it submits a job (stillhouse.jobs.service).

Both counted quotas live on one item per tenant (`{tenant}#in_flight`, apart from its record), and an
admitted submission is one conditional update of it: it takes its tokens and adds the job's entry
together, so a submission refused by either takes neither.

A job counts what it costs: its GPU jobs (`gpu_jobs`, from stillhouse.jobs.model.gpu_jobs: 1 for most
tasks, 2N+1 for a council of N that ranks, N+1 for one that does not), against both limits. A job that
costs more than a limit allows at all is refused as the request's fault (422): waiting would not help.

- `requests_per_minute`: a token bucket: `rpm` tokens at most, refilled at rpm/60 a second, `gpu_jobs`
  per submission. The update is conditioned on the bucket being as this process last saw it (tokens and
  time); a process that lost a race learns the winner's bucket from the refused write
  (ReturnValuesOnConditionCheckFailure) and tries again. Other processes only ever take tokens, so a
  bucket that looks empty here is empty: refusing it needs no write at all.
- `max_in_flight`: the tenant's jobs not known to have ended, as a set of entries, one per job whatever
  its weight (`{job id}`, or `{job id}*{gpu_jobs}` when it costs more than one), so the item grows with
  jobs, not with GPU jobs; `held` is the sum of their weights, kept with the set in every write. The
  update adds the entry and its weight on the condition `held <= max - weight`. Nothing removes an entry
  when its job ends (a job may end in any of several functions, and a lost removal would lock a tenant
  out): instead the set is healed, by asking the jobs table which of its jobs still run, when it is full
  (then the submission tries again) and every HEAL_EVERY entries as it grows, so it stays small. Healing
  removes an ended job's entry and its weight in one write, conditioned on the entry still being there,
  so two processes healing at once never release a weight twice.
- `stream_polls_per_minute` (poll()): `GET /v1/jobs/{id}/stream` asks RunPod with our key on every call,
  so a tenant's polls are counted per clock minute on an item of their own (`{tenant}#polls`): one
  conditional write a poll, and 429 once the minute's count is spent. Only that route counts: the OpenAI
  streaming front reads its own job's stream server-side (openai_compat) and is not throttled by it.
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
from stillhouse.errors import Forbidden, InvalidRequest, QuotaExceeded, Unprocessable
from stillhouse.refusals import refused_item
from stillhouse.tenants.store import TenantStore

#: A tenant at its in-flight limit is told to try again after this long: its jobs take seconds at least.
IN_FLIGHT_RETRY_AFTER_S = 5
#: From 2x this many ids on, the in-flight set is healed each time its size is a multiple of this, so it
#: holds the jobs in flight plus at most about 2x this many that have ended.
HEAL_EVERY = 25
_RACES = 8  # tries of an update that keeps losing to other processes' buckets, before answering 429
_HEAL_CHUNK = 40  # entries removed by one conditional write (each is a `contains` in its condition)


class Quotas:
    def __init__(self, tenants: TenantStore, live_jobs: Callable[[list[str]], set[str]], *,
                 now: Callable[[], float] = time.time,
                 live_batches: Callable[[list[str]], set[str]] | None = None) -> None:
        self._tenants = tenants
        self._live_batches = live_batches
        self._table = tenants.table
        self._live_jobs = live_jobs
        self._now = now
        self._buckets: dict[str, tuple[Decimal, Decimal]] = {}  # tenant -> (tokens, at) as last seen
        # One update per tenant at a time in this process: its threads would only race each other.
        self._locks: defaultdict[str, Lock] = defaultdict(Lock)

    def limits(self, tenant_id: str) -> TenantLimits:
        """The tenant's limits as configured (its own values over the defaults)."""
        return self._tenants.limits(tenant_id)

    def admit(self, tenant_id: str, job_id: str, *, high_priority: bool = False,
              council_models: int | None = None, gpu_jobs: int = 1) -> None:
        """Admit one job submission of `tenant_id` that runs `gpu_jobs` GPU jobs, or raise naming the limit
        it is over."""
        limits = self._tenants.limits(tenant_id)
        if high_priority and not limits.allow_high_priority:
            raise Forbidden("priority: high is not allowed for this tenant (allow_high_priority is off)",
                            field="priority")
        if council_models is not None and council_models > limits.max_council_models:
            raise Unprocessable(f"input.models: {council_models} models; this tenant's max_council_models is "
                                f"{limits.max_council_models}", field="input.models")
        for limit, allowed in (("max_in_flight", limits.max_in_flight),
                               ("requests_per_minute", limits.requests_per_minute)):
            if gpu_jobs > allowed:  # never admitted, however long the tenant waits
                field = "input.models" if council_models is not None else "task"
                raise Unprocessable(f"{field}: this job runs {gpu_jobs} GPU jobs; this tenant's {limit} is "
                                    f"{allowed}", field=field)
        with self._locks[tenant_id]:
            self._take(tenant_id, job_id, limits, gpu_jobs)

    def _take(self, tenant_id: str, job_id: str, limits: TenantLimits, weight: int) -> None:
        """`weight` tokens and in-flight places for `job_id`, in one conditional write."""
        capacity = Decimal(limits.requests_per_minute)
        rate = capacity / 60  # tokens a second
        healed = False
        for _ in range(_RACES):
            now = Decimal(str(round(self._now(), 6)))
            seen = self._buckets.get(tenant_id)
            tokens = capacity if seen is None else min(capacity, seen[0] + max(Decimal(0), now - seen[1]) * rate)
            if tokens < weight:
                wait = math.ceil((weight - tokens) / rate)
                raise QuotaExceeded(f"requests_per_minute: this tenant may submit {limits.requests_per_minute} "
                                    f"GPU jobs a minute (this job runs {weight}); try again in {wait} s",
                                    limit="requests_per_minute", retry_after_s=max(1, wait))
            left = tokens - weight
            # Both bucket fields: two writes within one clock tick leave the same `rate_at`.
            bucket = ("attribute_not_exists(rate_at)" if seen is None
                      else "rate_at = :seen_at AND rate_tokens = :seen_tokens")
            try:
                added = self._table.update_item(
                    Key={"tenant_id": in_flight_key(tenant_id)},
                    UpdateExpression="SET rate_tokens = :left, rate_at = :now ADD #live :entry, held :weight",
                    # A new item has neither the set nor its weight; one from before weights were kept has a
                    # set and no `held`: refused here, it is counted once (_count_legacy) and tried again.
                    ConditionExpression=f"({bucket}) AND ((attribute_not_exists(#live) AND "
                                        "attribute_not_exists(held)) OR held <= :room)",
                    ExpressionAttributeNames={"#live": "live"},
                    ExpressionAttributeValues={":left": left, ":now": now, ":entry": {_entry(job_id, weight)},
                                               ":weight": weight, ":room": limits.max_in_flight - weight,
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
                if "live" in item and "held" not in item:
                    self._count_legacy(tenant_id, item["live"])
                    continue
                if healed:  # the bucket was as seen: the set is full, even after healing
                    break
                self._heal(tenant_id)
                healed = True
                continue
            self._buckets[tenant_id] = (left, now)
            entries = len(added["Attributes"]["live"])
            if entries >= 2 * HEAL_EVERY and entries % HEAL_EVERY == 0:
                self._heal(tenant_id)  # keeps the set, and so the cost of each write, near the jobs in flight
            return
        else:
            raise QuotaExceeded("requests_per_minute: too many submissions at once for this tenant; try again",
                                limit="requests_per_minute", retry_after_s=1)
        raise QuotaExceeded(f"max_in_flight: this tenant has {limits.max_in_flight} GPU jobs that have not ended "
                            f"(this job runs {weight}); submit more when some have", limit="max_in_flight",
                            retry_after_s=IN_FLIGHT_RETRY_AFTER_S)

    def release(self, tenant_id: str, job_id: str, gpu_jobs: int = 1) -> bool:
        """Give back the in-flight place `admit` took for `job_id` (a submission refused after it was admitted),
        once: conditioned on the entry being there, as healing is. Its rate token stays spent, as a request
        counted. False when the entry was not there (healed, or never added)."""
        entry = _entry(job_id, gpu_jobs)
        try:
            self._table.update_item(Key={"tenant_id": in_flight_key(tenant_id)},
                                    UpdateExpression="DELETE #live :e ADD held :released",
                                    ConditionExpression="contains(#live, :one)",
                                    ExpressionAttributeNames={"#live": "live"},
                                    ExpressionAttributeValues={":e": {entry}, ":one": entry, ":released": -gpu_jobs})
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def admit_batch(self, tenant_id: str, batch_id: str, lines: int) -> None:
        """Admit a batch of `lines` lines against `max_batch_lines`, the lines of the tenant's batches that
        have not ended. The batch is one entry (`{batch id}*{lines}`) of a set of its own on the in-flight
        item, never one per line; it is released as jobs are, by healing against the batches that still run."""
        allowed = self._tenants.limits(tenant_id).max_batch_lines
        if lines > allowed:
            raise InvalidRequest(f"input_file_id: the file has {lines} lines; this tenant's max_batch_lines is "
                                 f"{allowed}", field="input_file_id")
        failed = self._table.meta.client.exceptions.ConditionalCheckFailedException
        for healed in (False, True):
            try:
                self._table.update_item(
                    Key={"tenant_id": in_flight_key(tenant_id)}, UpdateExpression="ADD batches :entry, batch_lines :n",
                    ConditionExpression="attribute_not_exists(batch_lines) OR batch_lines <= :room",
                    ExpressionAttributeValues={":entry": {_entry(batch_id, lines)}, ":n": lines,
                                               ":room": allowed - lines})
                return
            except failed:
                if not healed and self._live_batches is not None:
                    self._heal_batches(tenant_id)
        raise QuotaExceeded(f"max_batch_lines: this tenant's batches that have not ended hold {allowed} lines at "
                            f"most (this one has {lines}); submit it when some have ended", limit="max_batch_lines",
                            retry_after_s=IN_FLIGHT_RETRY_AFTER_S)

    def _heal_batches(self, tenant_id: str) -> None:
        """Release the lines of the tenant's batches that have ended, each entry once (conditioned on it)."""
        key = {"tenant_id": in_flight_key(tenant_id)}
        item = self._table.get_item(Key=key, ConsistentRead=True, ProjectionExpression="batches").get("Item") or {}
        entries = sorted(item.get("batches") or ())
        running = self._live_batches([_job_of(e) for e in entries]) if self._live_batches else set()
        for entry in (e for e in entries if _job_of(e) not in running):
            try:
                self._table.update_item(Key=key, UpdateExpression="DELETE batches :e ADD batch_lines :released",
                                        ConditionExpression="contains(batches, :one)",
                                        ExpressionAttributeValues={":e": {entry}, ":one": entry,
                                                                   ":released": -_weight(entry)})
            except self._table.meta.client.exceptions.ConditionalCheckFailedException:
                continue  # released by another process

    def poll(self, tenant_id: str) -> None:
        """Count one `GET /v1/jobs/{id}/stream` of `tenant_id` in this clock minute, or raise 429 once the
        minute's `stream_polls_per_minute` are spent (Retry-After: until the next minute)."""
        allowed = self._tenants.limits(tenant_id).stream_polls_per_minute
        key = {"tenant_id": polls_key(tenant_id)}
        failed = self._table.meta.client.exceptions.ConditionalCheckFailedException
        for _ in range(3):
            now = self._now()
            minute = int(now // 60)
            try:  # the common case: this minute's count, one more
                self._table.update_item(Key=key, UpdateExpression="ADD polls :one",
                                        ConditionExpression="#m = :m AND polls < :max",
                                        ExpressionAttributeNames={"#m": "minute"},
                                        ExpressionAttributeValues={":one": 1, ":m": minute, ":max": allowed},
                                        ReturnValuesOnConditionCheckFailure="ALL_OLD")
                return
            except failed as refused:
                item = refused_item(refused) or {}
            if item.get("minute") == minute:
                wait = max(1, math.ceil((minute + 1) * 60 - now))
                raise QuotaExceeded(f"stream_polls_per_minute: this tenant may poll streams "
                                    f"{allowed} times a minute; try again in {wait} s",
                                    limit="stream_polls_per_minute", retry_after_s=wait)
            try:  # a new minute (or the first poll): its count starts at this one
                self._table.update_item(Key=key, UpdateExpression="SET #m = :m, polls = :one",
                                        ConditionExpression="attribute_not_exists(#m) OR #m < :m",
                                        ExpressionAttributeNames={"#m": "minute"},
                                        ExpressionAttributeValues={":one": 1, ":m": minute})
                return
            except failed:
                continue  # another process started the minute first: count on it
        raise QuotaExceeded("stream_polls_per_minute: too many polls at once for this tenant; try again",
                            limit="stream_polls_per_minute", retry_after_s=1)

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

    def _count_legacy(self, tenant_id: str, live: set[str]) -> None:
        """Give a set written before weights were kept its `held`, once (its entries weigh what they say).
        Conditioned on the set's size as read: an entry added meanwhile makes it try again."""
        try:
            self._table.update_item(Key={"tenant_id": in_flight_key(tenant_id)}, UpdateExpression="SET held = :held",
                                    ConditionExpression="attribute_not_exists(held) AND size(#live) = :size",
                                    ExpressionAttributeNames={"#live": "live"},
                                    ExpressionAttributeValues={":held": sum(map(_weight, live)), ":size": len(live)})
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            pass  # counted by another process, or the set changed: the caller tries again on what it finds

    def _heal(self, tenant_id: str) -> None:
        """Forget the jobs in the tenant's set that have ended (or were never stored), and release their
        weight with them: this is where an ended job gives back what it took."""
        key = {"tenant_id": in_flight_key(tenant_id)}
        failed = self._table.meta.client.exceptions.ConditionalCheckFailedException
        for _ in range(3):
            item = self._table.get_item(Key=key, ConsistentRead=True, ProjectionExpression="#live, held",
                                        ExpressionAttributeNames={"#live": "live"}).get("Item") or {}
            entries = sorted(item.get("live") or ())
            if entries and "held" not in item:
                self._count_legacy(tenant_id, set(entries))
                continue
            running = self._live_jobs([_job_of(entry) for entry in entries])
            ended = [entry for entry in entries if _job_of(entry) not in running]
            try:
                for start in range(0, len(ended), _HEAL_CHUNK):
                    chunk = ended[start:start + _HEAL_CHUNK]
                    names = {f":e{i}": entry for i, entry in enumerate(chunk)}
                    # Only if every entry is still there: a process healing at the same time must not
                    # release the same weight twice.
                    self._table.update_item(
                        Key=key, UpdateExpression="DELETE #live :ended ADD held :released",
                        ConditionExpression=" AND ".join(f"contains(#live, {name})" for name in names),
                        ExpressionAttributeNames={"#live": "live"},
                        ExpressionAttributeValues={":ended": set(chunk), ":released": -sum(map(_weight, chunk)),
                                                   **names})
                return
            except failed:
                continue  # another process healed some of them first: read again


def _entry(job_id: str, weight: int) -> str:
    """A job's entry in the in-flight set: its id, and its weight when it is more than one."""
    return job_id if weight == 1 else f"{job_id}*{weight}"


def _job_of(entry: str) -> str:
    return entry.partition("*")[0]


def _weight(entry: str) -> int:
    _, star, weight = entry.partition("*")
    return int(weight) if star else 1


def _bucket(item: dict[str, Any]) -> tuple[Decimal, Decimal] | None:
    if "rate_at" not in item:
        return None
    return Decimal(item["rate_tokens"]), Decimal(item["rate_at"])


def in_flight_key(tenant_id: str) -> str:
    """The item of a tenant's counted quotas, apart from its record (name, limits): the record is read
    on every cache miss and must stay small, while this item grows with the jobs in flight."""
    return f"{tenant_id}#in_flight"


def polls_key(tenant_id: str) -> str:
    """The item that counts a tenant's stream polls in the current minute (small, written on each poll)."""
    return f"{tenant_id}#polls"
