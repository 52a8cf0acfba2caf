"""A tenant's quotas, checked when it submits a job (stillhouse.jobs.service).

Both counted quotas are split over a few small items per tenant, its *shards* (`{tenant}#in_flight#{k}`,
apart from its record): one item takes about 1,000 writes a second in DynamoDB (one partition key), so a
tenant whose every submission wrote one item could submit no faster than that, and slower as the item grew.
Each shard holds a share of each limit (the shares add up to the limit) and an admitted submission is one
conditional update of one shard, chosen at random: it takes its tokens and its places together, so a
submission refused by either takes neither. Why and what it costs: docs/scale.md.

A job counts what it costs: its GPU jobs (`gpu_jobs`, from stillhouse.jobs.model.gpu_jobs: 1 for most
tasks, 2N+1 for a council of N that ranks, N+1 for one that does not), against both limits. A job that
costs more than a limit allows at all is refused as the request's fault (422): waiting would not help.

- `requests_per_minute`: a token bucket on each shard: its share of `rpm` tokens at most, refilled at
  share/60 a second. The update is conditioned on the bucket being as this process last saw it (tokens and
  time); a process that lost a race learns the winner's bucket from the refused write
  (ReturnValuesOnConditionCheckFailure) and tries again. Other processes only ever take tokens, so a
  bucket that looks empty here is empty: it needs no write to know.
- `max_in_flight`: `held`, the weight of the shard's jobs not known to have ended. The update adds the
  job's weight on the condition `held <= share - weight`; the job keeps where it is held (`quota_hold`,
  "{shard}*{weight}") and the write that ends it gives it back (release_finished, from JobStore's
  on_finished): one more small write. A give-back that is lost (a crash right after the terminal write) is
  healed by the sweeper (heal): a shard that took no job for QUIET_S is recounted from the jobs still live.
- When the chosen shard cannot take the job (no tokens, no room, or throttled by DynamoDB), every shard is
  read (one BatchGetItem) and the one with the most room is tried. So a limit is never passed, and a job
  of weight w is refused only when no shard has w places: at most shards x (w - 1) places stay unused.
- `stream_polls_per_minute` (poll()): `GET /v1/jobs/{id}/stream` asks RunPod with our key on every call,
  so a tenant's polls are counted per clock minute on an item of their own (`{tenant}#polls`): one
  conditional write a poll, and 429 once the minute's count is spent. Only that route counts: the OpenAI
  streaming front reads its own job's stream server-side (openai_compat) and is not throttled by it.
- `max_batch_lines` (admit_batch): one entry per batch (not per line) on the item `{tenant}#in_flight`.
- `max_council_models` and `allow_high_priority` need no state.

Over `requests_per_minute` or `max_in_flight` → QuotaExceeded (429, Retry-After, naming the limit). A
council too large or a `high` priority not allowed are refused as the request's fault (422 / 403, naming
the field and the limit): waiting would not change the answer.
"""
from __future__ import annotations

import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from threading import Lock
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from stillhouse import aws
from stillhouse.config import TenantLimits
from stillhouse.errors import Forbidden, InvalidRequest, QuotaExceeded, Unprocessable
from stillhouse.refusals import refused_item
from stillhouse.tenants.store import TenantStore

logger = Logger(service="stillhouse", child=True)

#: A tenant at its in-flight limit is told to try again after this long: its jobs take seconds at least.
IN_FLIGHT_RETRY_AFTER_S = 5
#: Shards per tenant at most: 16 x ~500 jobs/s (a take and a give-back a job, ~1,000 writes/s an item).
SHARDS_MAX = 16
#: A shard's share of each limit is at least this: a council of 8 that ranks weighs 17, and a share close
#: to a job's weight would leave places unused (see above).
SHARE_MIN = 32
#: A shard that took no job for this long may be recounted: every job it admitted is stored by then.
QUIET_S = 30
_RACES = 8  # tries of an update that keeps losing to other processes' buckets, before answering 429


def shard_count(limits: TenantLimits) -> int:
    """How many shards a tenant's limits are split over: as many as keep each share >= SHARE_MIN."""
    return max(1, min(SHARDS_MAX, min(limits.max_in_flight, limits.requests_per_minute) // SHARE_MIN))


def share(total: int, shards: int, k: int) -> int:
    """Shard `k`'s share of a limit of `total` split over `shards`: the shares add up to `total`."""
    return total // shards + (1 if k < total % shards else 0)


@dataclass(frozen=True)
class _Shard:
    """One shard as read: its tokens refilled to `now`, and the weight it holds."""

    k: int
    tokens: Decimal
    held: int
    places: int  # its share of max_in_flight
    rate: Decimal  # tokens a second


class Quotas:
    def __init__(self, tenants: TenantStore, *, now: Callable[[], float] = time.time,
                 live_batches: Callable[[list[str]], set[str]] | None = None,
                 pick: Callable[[int], int] | None = None) -> None:
        self._tenants = tenants
        self._live_batches = live_batches
        self._table = tenants.table
        self._now = now
        self._pick = pick or random.randrange  # the shard a submission tries first
        # (tenant, shard) -> (tokens, at) as last seen
        self._buckets: dict[tuple[str, int], tuple[Decimal, Decimal]] = {}
        # One update per tenant at a time in this process: its threads would only race each other.
        self._locks: defaultdict[str, Lock] = defaultdict(Lock)

    def limits(self, tenant_id: str) -> TenantLimits:
        """The tenant's limits as configured (its own values over the defaults)."""
        return self._tenants.limits(tenant_id)

    def admit(self, tenant_id: str, job_id: str, *, high_priority: bool = False,
              council_models: int | None = None, gpu_jobs: int = 1) -> str:
        """Admit one job submission of `tenant_id` that runs `gpu_jobs` GPU jobs, or raise naming the limit
        it is over. Returns the job's hold ("{shard}*{weight}"), which the job keeps (Job.quota_hold)."""
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
            return self._take(tenant_id, limits, gpu_jobs)

    def _take(self, tenant_id: str, limits: TenantLimits, weight: int) -> str:
        """`weight` tokens and in-flight places on one shard, in one conditional write."""
        shards = shard_count(limits)
        k: int | None = self._pick(shards)
        shunned: set[int] = set()  # shards DynamoDB throttled this time
        throttled: ClientError | None = None
        for _ in range(_RACES + SHARDS_MAX):  # races lost, and each shard throttled once at most
            if k is None:  # read them all: raises the 429 (or 503) when none can take it
                k = self._roomiest(tenant_id, limits, shards, weight, shunned, throttled)
            try:
                outcome = self._try(tenant_id, k, limits, shards, weight)
            except ClientError as err:
                if aws.unavailable(err) is None:
                    raise
                throttled = err
                shunned.add(k)
                outcome = "throttled"
            if outcome == "admitted":
                return hold(k, weight)
            if outcome != "raced":  # this shard cannot take it now: look at them all
                k = None
        raise QuotaExceeded("requests_per_minute: too many submissions at once for this tenant; try again",
                            limit="requests_per_minute", retry_after_s=1)

    def _try(self, tenant_id: str, k: int, limits: TenantLimits, shards: int, weight: int) -> str:
        """One conditional write of shard `k`: 'admitted', 'raced' (another process took tokens first:
        its bucket is learnt), 'no_tokens' (known without a write) or 'full'."""
        capacity = Decimal(share(limits.requests_per_minute, shards, k))
        now = Decimal(str(round(self._now(), 6)))
        seen = self._buckets.get((tenant_id, k))
        tokens = capacity if seen is None else _refilled(seen, capacity, capacity / 60, now)
        if tokens < weight:
            return "no_tokens"
        left = tokens - weight
        # Both bucket fields: two writes within one clock tick leave the same `rate_at`.
        bucket = ("attribute_not_exists(rate_at)" if seen is None
                  else "rate_at = :seen_at AND rate_tokens = :seen_tokens")
        try:
            self._table.update_item(
                Key={"tenant_id": shard_key(tenant_id, k)},
                UpdateExpression="SET rate_tokens = :left, rate_at = :now ADD held :weight, seq :one",
                ConditionExpression=f"({bucket}) AND (attribute_not_exists(held) OR held <= :room)",
                ExpressionAttributeValues={":left": left, ":now": now, ":weight": weight, ":one": 1,
                                           ":room": share(limits.max_in_flight, shards, k) - weight,
                                           **({} if seen is None else
                                              {":seen_tokens": seen[0], ":seen_at": seen[1]})},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._table.meta.client.exceptions.ConditionalCheckFailedException as refused:
            item = refused_item(refused)
            if item is None:  # a backend that does not return the refused item
                item = self._table.get_item(Key={"tenant_id": shard_key(tenant_id, k)},
                                            ConsistentRead=True).get("Item") or {}
            found = _bucket(item)
            self._remember(tenant_id, k, found)
            return "raced" if found != seen else "full"
        self._buckets[(tenant_id, k)] = (left, now)
        return "admitted"

    def _roomiest(self, tenant_id: str, limits: TenantLimits, shards: int, weight: int, shunned: set[int],
                  throttled: ClientError | None) -> int:
        """The shard with the most room that can take `weight` now, read all at once; else raise the 429
        naming the limit (or the 503 of a throttled DynamoDB when every shard with room was throttled)."""
        views = [v for v in self._read(tenant_id, limits, shards) if v.k not in shunned]
        placed = [v for v in views if v.held + weight <= v.places]
        ready = [v for v in placed if v.tokens >= weight]
        if ready:
            return max(ready, key=lambda v: (v.places - v.held, v.tokens)).k
        if throttled is not None:  # the shards that could take it are too hot now: 503, nothing taken
            raise aws.unavailable(throttled) or throttled
        if placed:  # places, but no tokens yet: the first shard whose bucket refills
            wait = min(math.ceil((weight - v.tokens) / v.rate) for v in placed)
            raise QuotaExceeded(f"requests_per_minute: this tenant may submit {limits.requests_per_minute} "
                                f"GPU jobs a minute (this job runs {weight}); try again in {max(1, wait)} s",
                                limit="requests_per_minute", retry_after_s=max(1, wait))
        raise QuotaExceeded(f"max_in_flight: this tenant has {limits.max_in_flight} GPU jobs that have not ended "
                            f"(this job runs {weight}); submit more when some have", limit="max_in_flight",
                            retry_after_s=IN_FLIGHT_RETRY_AFTER_S)

    def _read(self, tenant_id: str, limits: TenantLimits, shards: int) -> list[_Shard]:
        """Every shard of the tenant, consistent, in one BatchGetItem (16 keys at most)."""
        client = self._table.meta.client
        request = {self._table.name: {"Keys": [{"tenant_id": shard_key(tenant_id, k)} for k in range(shards)],
                                      "ConsistentRead": True}}
        items: dict[int, dict[str, Any]] = {}
        while request:
            page = client.batch_get_item(RequestItems=request)
            for item in page["Responses"].get(self._table.name, []):
                items[int(item["tenant_id"].rpartition("#")[2])] = item
            request = page.get("UnprocessedKeys") or None
        now = Decimal(str(round(self._now(), 6)))
        views = []
        for k in range(shards):
            capacity = Decimal(share(limits.requests_per_minute, shards, k))
            found = _bucket(items.get(k, {}))
            self._remember(tenant_id, k, found)
            views.append(_Shard(k=k, tokens=capacity if found is None else _refilled(found, capacity,
                                                                                        capacity / 60, now),
                                held=int(items.get(k, {}).get("held", 0)),
                                places=share(limits.max_in_flight, shards, k), rate=capacity / 60))
        return views

    def release(self, tenant_id: str, quota_hold: str) -> bool:
        """Give back the places a job held (`quota_hold`, as admit returned it): when it ended, or when its
        submission was refused after it was admitted. Its tokens stay spent, as a request counted. Never
        below zero: False when the shard holds less (a recount already gave them back)."""
        k, weight = _parse(quota_hold)
        try:
            self._table.update_item(Key={"tenant_id": shard_key(tenant_id, k)},
                                    UpdateExpression="ADD held :released, seq :one",
                                    ConditionExpression="held >= :weight",
                                    ExpressionAttributeValues={":released": -weight, ":weight": weight, ":one": 1})
        except self._table.meta.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def release_finished(self, tenant_id: str, quota_hold: str | None) -> None:
        """A job ended (JobStore.on_finished: the terminal write won, once): its places are given back. Its
        failure is only logged: the job has ended whatever this does, and heal() gives back what is lost."""
        if not quota_hold:
            return
        try:
            self.release(tenant_id, quota_hold)
        except Exception:  # noqa: BLE001 - healed by the sweeper
            logger.warning("could not give back a finished job's quota; the sweeper heals it",
                           extra={"tenant_id": tenant_id, "quota_hold": quota_hold})

    def heal(self, live_holds: Callable[[], Iterable[tuple[str, str]]]) -> int:
        """Recount the shards that took no job for QUIET_S and hold more than their live jobs do (a
        give-back was lost), from `live_holds` (JobStore.quota_holds: (tenant, hold) of each live job).
        Each write is conditioned on the shard being as read (`seq`, bumped by every take and give-back),
        so a job taken or given back meanwhile leaves the shard for the next round. Returns the shards healed."""
        quiet_before = Decimal(str(round(self._now() - QUIET_S, 6)))
        suspects = self._scan("attribute_exists(seq) AND held > :zero AND rate_at < :quiet",
                              {":zero": 0, ":quiet": quiet_before})
        if not suspects:
            return 0
        counted: Counter[str] = Counter()
        for tenant_id, quota_hold in live_holds():
            k, weight = _parse(quota_hold)
            counted[shard_key(tenant_id, k)] += weight
        healed = 0
        for item in suspects:
            true = counted[item["tenant_id"]]
            if int(item["held"]) <= true:
                continue
            try:
                self._table.update_item(Key={"tenant_id": item["tenant_id"]},
                                        UpdateExpression="SET held = :true ADD seq :one",
                                        ConditionExpression="seq = :seen",
                                        ExpressionAttributeValues={":true": true, ":one": 1, ":seen": item["seq"]})
                healed += 1
                logger.info("quota shard recounted", extra={"shard": item["tenant_id"], "held": int(item["held"]),
                                                            "live": true})
            except self._table.meta.client.exceptions.ConditionalCheckFailedException:
                continue  # it took or gave back a job meanwhile: next round
        return healed

    def _scan(self, condition: str, values: dict[str, Any]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"FilterExpression": condition, "ExpressionAttributeValues": values,
                                  "ProjectionExpression": "tenant_id, held, seq, rate_at", "ConsistentRead": True}
        while True:
            page = self._table.scan(**kwargs)
            found += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

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

    def _remember(self, tenant_id: str, k: int, bucket: tuple[Decimal, Decimal] | None) -> None:
        if bucket is None:
            self._buckets.pop((tenant_id, k), None)  # no bucket yet: a full one is made
        else:
            self._buckets[(tenant_id, k)] = bucket


def hold(k: int, weight: int) -> str:
    """Where a job holds its places: "{shard}*{weight}" (Job.quota_hold)."""
    return f"{k}*{weight}"


def _parse(quota_hold: str) -> tuple[int, int]:
    k, _, weight = quota_hold.partition("*")
    return int(k), int(weight)


def _refilled(bucket: tuple[Decimal, Decimal], capacity: Decimal, rate: Decimal, now: Decimal) -> Decimal:
    tokens, at = bucket
    return min(capacity, tokens + max(Decimal(0), now - at) * rate)


def _entry(batch_id: str, lines: int) -> str:
    """A batch's entry in the set of the tenant's batches: its id and its lines."""
    return f"{batch_id}*{lines}"


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
    """The item of a tenant's batches that have not ended, apart from its record (name, limits): the
    record is read on every cache miss and must stay small."""
    return f"{tenant_id}#in_flight"


def shard_key(tenant_id: str, k: int) -> str:
    """Shard `k` of a tenant's rate and in-flight quotas (a few hundred bytes, whatever the load)."""
    return f"{tenant_id}#in_flight#{k}"


def polls_key(tenant_id: str) -> str:
    """The item that counts a tenant's stream polls in the current minute (small, written on each poll)."""
    return f"{tenant_id}#polls"
