"""Job store on DynamoDB. Every write is conditional, so duplicates never change a terminal job.

Payloads (input, params, output) are stored as JSON strings: DynamoDB refuses Python floats, and a
result is read back whole anyway. An input of more than a few KB is kept in S3 (outputs.spill), written
once at submission: DynamoDB charges every write for the whole item, and a job's item is written on each
of its transitions. The item then carries `input_ref` in place of `input`, and every read that returns a
job (get, claim_attempt, transition) gives it its input back.
"""
from __future__ import annotations

import base64
import heapq
import json
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from stillhouse.errors import InvalidRequest, JobNotFound, NotFound, TransitionRefused
from stillhouse.jobs.model import CouncilMember, Job, JobEvent, JobStatus, JobSummary
from stillhouse.jobs.status import TERMINAL, Move, to
from stillhouse.refusals import refused_item
from stillhouse.telemetry.metrics import metrics

logger = Logger(service="stillhouse", child=True)

_JSON_FIELDS = ("input", "params", "output", "council")
ITEM_LIMIT = 400_000  # DynamoDB's limit for a whole item
ITEM_MARGIN = 16_000  # what a write adds beside the output: the new timeline event, a few fields
# Beside the input, what an item holds that a write made without reading it cannot see: the timeline so
# far, the parameters, the deliveries; more than a job on the fast path gathers.
UNREAD_ALLOWANCE = 48_000
# Both indexes are write-sharded: one partition key value takes about 1,000 write units a second, so an
# index keyed on the tenant (or on the status, for the whole stack) capped every tenant (the stack) at a few
# hundred jobs/s (docs/scale.md). Each job's entry goes to one of INDEX_SHARDS partitions per tenant (per
# status), picked by a stable hash of its id; readers query every partition and merge.
INDEX_SHARDS = 16
# A tenant's jobs by `tenant_sk` (created_at#id), on `tenant_part` = "{tenant_id}#{shard}".
TENANT_INDEX = "ByTenantPart"
# Live jobs by status and `due_at`, when the sweeper should look at them next (jobs.deadlines), on
# `due_part` = "{status}#{shard}" (rewritten with every status). A terminal job stays only while its
# caller's notice is owed (the notice outbox: the terminal write keeps a `due_at`, the first recorded
# delivery try removes it, stillhouse.delivery.outbox re-sends what is overdue), so the sweeper reads only
# what is due.
DUE_INDEX = "ByStatusDuePart"
_PART_FIELDS = ("tenant_sk", "tenant_part", "due_part")
_READERS = 8  # index partitions queried at once
_pool: ThreadPoolExecutor | None = None


def index_shard(job_id: str) -> int:
    """The job's index shard: stable across processes (crc32, not Python's salted hash())."""
    return zlib.crc32(job_id.encode()) % INDEX_SHARDS


def tenant_part(tenant_id: str, job_id: str) -> str:
    return f"{tenant_id}#{index_shard(job_id)}"


def due_part(status: JobStatus | str, job_id: str) -> str:
    return f"{JobStatus(status).value}#{index_shard(job_id)}"


def _parts(key: str) -> list[str]:
    return [f"{key}#{k}" for k in range(INDEX_SHARDS)]


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso(datetime.now(UTC))


def to_item(job: Job) -> dict[str, Any]:
    data = job.model_dump(mode="json", exclude_none=True)
    if job.task_token:  # excluded from every dump shown to callers, but stored
        data["task_token"] = job.task_token
    if job.execution_arn:
        data["execution_arn"] = job.execution_arn
    if job.members is not None:
        data["members"] = {key: m.model_dump() for key, m in job.members.items()}
    if job.cache_key:
        data["cache_key"] = job.cache_key
    if job.quota_hold:
        data["quota_hold"] = job.quota_hold
    if job.input_ref is not None:  # the input is kept in S3 (JobStore.create): the item names it only
        data["input_ref"] = job.input_ref
        data.pop("input", None)
    for name in _JSON_FIELDS:
        if name in data:
            data[name] = json.dumps(data[name])
    data["tenant_sk"] = f"{job.created_at}#{job.id}"
    data["tenant_part"] = tenant_part(job.tenant_id, job.id)
    data["due_part"] = due_part(job.status, job.id)
    return data


def from_item(item: dict[str, Any]) -> Job:
    data = dict(item)
    for name in _JSON_FIELDS:
        if isinstance(data.get(name), str):
            data[name] = json.loads(data[name])
    for name in _PART_FIELDS:
        data.pop(name, None)
    if data.get("input_ref") is not None and "input" not in data:
        data["input"] = {}  # kept in S3: JobStore loads it (JobStore._with_input)
    return Job.model_validate(data)


def _live(values: dict[str, Any]) -> str:
    """A condition that the job (status as `#s`) has not ended; adds its placeholders to `values`."""
    terminal = {f":t{i}": s.value for i, s in enumerate(sorted(TERMINAL))}
    values.update(terminal)
    return f"NOT #s IN ({', '.join(terminal)})"


def _item_size(job: Job) -> int:
    """About what the job's item weighs in DynamoDB (names and values as stored)."""
    return len(json.dumps(to_item(job), separators=(",", ":"), default=str))


def _is_item_too_large(err: ClientError) -> bool:
    error = err.response["Error"]
    return error["Code"] == "ValidationException" and "size" in error.get("Message", "").lower()


def _is_condition_failure(err: ClientError) -> bool:
    return err.response["Error"]["Code"] == "ConditionalCheckFailedException"


class JobStore:
    def __init__(self, table: Any, results: Any = None, *, watch_s: float = 300.0, retain_s: float = 0) -> None:
        self._table = table
        self._results = results  # stillhouse.outputs.spill.ResultStore: big outputs go to S3
        self._watch_s = watch_s  # a live job's default `due_at`: this long after its last news
        # A finished job is kept this long (settings.job_retention_days): the terminal write sets
        # `expires_at` (epoch seconds, the jobs table's TTL attribute). 0: kept forever, no attribute.
        self._retain_s = retain_s
        # Told of every job that ends, once (the terminal write won), whichever function wrote it: the Batch
        # API counts its chunks here (stillhouse.batches). Its failure never undoes the write.
        self.on_finished: Callable[[Job], None] | None = None

    def _expires_at(self, moment: datetime) -> int | None:
        return int(moment.timestamp() + self._retain_s) if self._retain_s > 0 else None

    def _due_after_news(self, moment: datetime) -> str:
        return iso(moment + timedelta(seconds=self._watch_s))

    def _stored(self, job_id: str, fields: dict[str, Any], room: int | None = None) -> dict[str, Any]:
        """`fields` as stored: JSON payloads as strings; an output too big for the item kept in S3, with
        its reference in `output_ref` (a field of its own: nothing inside an output can pose as one)."""
        stored = dict(fields)
        if "output" in stored and self._results is not None:
            stored["output"], stored["output_ref"] = self._results.keep(job_id, stored["output"], room=room)
        return {name: json.dumps(value) if name in _JSON_FIELDS else value for name, value in stored.items()}

    def create(self, job: Job) -> Job:
        """Store a new job. An input too big to keep in the item goes to S3 first (a failure there raises
        before anything is stored); the job returned carries its reference and its input both."""
        if self._results is not None and job.input_ref is None:
            ref = self._results.keep_input(job.id, job.input)
            if ref is not None:
                job = job.model_copy(update={"input_ref": ref})
        item = to_item(job)
        moment = datetime.fromisoformat(job.updated_at.replace("Z", "+00:00"))
        if not job.status.terminal:  # a job answered from the cache is created COMPLETED: never due
            item["due_at"] = self._due_after_news(moment)
        elif (expires := self._expires_at(moment)) is not None:
            item["expires_at"] = expires
        try:
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(id)")
        except ClientError as err:
            if _is_condition_failure(err):
                raise TransitionRefused(f"job {job.id} already exists") from err
            raise
        metrics.job_submitted(job)
        return job

    def discard(self, job_id: str) -> bool:
        """Delete a job that was never accepted (its submission was refused after its write): only while it is
        IN_QUEUE and never attempted, so a job something has begun to work on is never taken away. False
        when there was none to delete."""
        deleted = True
        try:
            self._table.delete_item(Key={"id": job_id},
                                    ConditionExpression="#s = :queued AND (attribute_not_exists(attempts) OR "
                                                        "attempts = :none)",
                                    ExpressionAttributeNames={"#s": "status"},
                                    ExpressionAttributeValues={":queued": JobStatus.IN_QUEUE.value, ":none": 0})
        except ClientError as err:
            if not _is_condition_failure(err):
                raise
            deleted = False
        # Its input kept in S3 goes too, once no item names it (the item was deleted, or never written).
        if self._results is not None and (deleted or "Item" not in self._table.get_item(
                Key={"id": job_id}, ConsistentRead=True, ProjectionExpression="id")):
            self._results.drop_input(job_id)
        return deleted

    def get(self, job_id: str, tenant_id: str | None = None) -> Job:
        item = self._table.get_item(Key={"id": job_id}, ConsistentRead=True).get("Item")
        # Another tenant's job is indistinguishable from a missing one.
        if item is None or (tenant_id is not None and item.get("tenant_id") != tenant_id):
            raise JobNotFound(f"job {job_id} not found", field="id")
        return self._with_input(from_item(item))

    def list(
        self, tenant_id: str, *, status: JobStatus | None = None, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[JobSummary], str | None]:
        """A tenant's jobs, newest first. The index carries only the summary fields (template.yaml),
        so a status change rewrites a small index entry, not a copy of the whole job. Each of the
        tenant's index partitions gives its newest `limit` (past the cursor: the last `tenant_sk` shown),
        and the merge keeps the newest `limit` of them."""
        before = _decode_cursor(cursor, tenant_id) if cursor else None

        def request(part: str) -> dict[str, Any]:
            kwargs: dict[str, Any] = {
                "IndexName": TENANT_INDEX,
                "KeyConditionExpression": "tenant_part = :p",
                "ExpressionAttributeValues": {":p": part},
                "ScanIndexForward": False,  # newest first
            }
            if before is not None:
                kwargs["KeyConditionExpression"] += " AND tenant_sk < :before"
                kwargs["ExpressionAttributeValues"][":before"] = before
            if status is not None:
                kwargs["FilterExpression"] = "#s = :s"
                kwargs["ExpressionAttributeNames"] = {"#s": "status"}
                kwargs["ExpressionAttributeValues"][":s"] = status.value
            return kwargs

        found = self._query_parts(_parts(tenant_id), request, limit)
        merged = list(heapq.merge(*(items for items, _ in found), key=lambda i: i["tenant_sk"], reverse=True))
        page = merged[:limit]
        more = len(merged) > limit or any(left for _, left in found)
        summaries = [JobSummary.model_validate(i) for i in page]
        return summaries, _encode_cursor(tenant_id, page[-1]["tenant_sk"]) if more and page else None

    def _query_parts(self, parts: list[str], request: Callable[[str], dict[str, Any]],
                     want: int | None) -> list[tuple[list[dict[str, Any]], bool]]:
        """Query each index partition in `parts` (`request(part)`: the query's arguments), at most
        `_READERS` at once: its first `want` items (all: None) in the index's order, and whether it
        has more."""
        client = self._table.meta.client  # thread-safe, unlike the resource; (de)serialises as the table does

        def one(part: str) -> tuple[list[dict[str, Any]], bool]:
            kwargs = {"TableName": self._table.name, **request(part)}
            items: list[dict[str, Any]] = []
            while True:
                if want is not None:
                    kwargs["Limit"] = want - len(items)
                page = client.query(**kwargs)
                items += page.get("Items", [])
                last = page.get("LastEvaluatedKey")
                if last is None:
                    return items, False
                if want is not None and len(items) >= want:
                    return items, True
                kwargs["ExclusiveStartKey"] = last

        global _pool
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="index-part")
        return list(_pool.map(one, parts))

    def live(self, job_ids: list[str]) -> set[str]:
        """Which of `job_ids` exist and have not ended (a tenant's in-flight count is healed with it)."""
        found: set[str] = set()
        client = self._table.meta.client
        for start in range(0, len(job_ids), 100):  # BatchGetItem's limit
            keys = [{"id": job_id} for job_id in job_ids[start:start + 100]]
            request = {self._table.name: {"Keys": keys, "ProjectionExpression": "id, #s",
                                          "ExpressionAttributeNames": {"#s": "status"}, "ConsistentRead": True}}
            while request:
                page = client.batch_get_item(RequestItems=request)
                for item in page["Responses"].get(self._table.name, []):
                    if JobStatus(item["status"]) not in TERMINAL:
                        found.add(item["id"])
                request = page.get("UnprocessedKeys") or None
        return found

    def quota_holds(self) -> Iterator[tuple[str, str]]:
        """(tenant, quota hold) of every job that has not ended and holds places on its tenant's quota
        (tenants.quotas heals its counts with them): the live jobs are the due index's, read again here."""
        client = self._table.meta.client
        for status in (s for s in JobStatus if not s.terminal):
            found = self._query_parts(_parts(status.value), lambda part: {
                "IndexName": DUE_INDEX, "KeyConditionExpression": "due_part = :p",
                "ExpressionAttributeValues": {":p": part}}, None)
            ids = [item["id"] for items, _ in found for item in items]
            for start in range(0, len(ids), 100):  # BatchGetItem's limit
                request = {self._table.name: {"Keys": [{"id": i} for i in ids[start:start + 100]],
                                              "ProjectionExpression": "tenant_id, quota_hold, #s",
                                              "ExpressionAttributeNames": {"#s": "status"}, "ConsistentRead": True}}
                while request:
                    page = client.batch_get_item(RequestItems=request)
                    for item in page["Responses"].get(self._table.name, []):
                        if item.get("quota_hold") and JobStatus(item["status"]) not in TERMINAL:
                            yield item["tenant_id"], item["quota_hold"]
                    request = page.get("UnprocessedKeys") or None

    def due(self, status: JobStatus, by: str, limit: int = 100) -> list[str]:
        """Ids of jobs in `status` due for a look by `by` (ISO time), longest overdue first, at most
        `limit`: each of the status's index partitions gives its `limit` most overdue, merged."""
        found = self._query_parts(_parts(status.value), lambda part: {
            "IndexName": DUE_INDEX, "KeyConditionExpression": "due_part = :p AND due_at <= :by",
            "ExpressionAttributeValues": {":p": part, ":by": by}}, limit)
        merged = heapq.merge(*(items for items, _ in found), key=lambda i: (i["due_at"], i["id"]))
        return [item["id"] for _, item in zip(range(limit), merged, strict=False)]

    def submitted_since(self, tenant_id: str, since: str, limit: int = 1000) -> list[dict[str, Any]]:
        """A tenant's jobs submitted at or after `since` (ISO time), newest first, at most `limit`, as the
        tenant index carries them: id, status, task, created_at, updated_at."""
        found = self._query_parts(_parts(tenant_id), lambda part: {
            "IndexName": TENANT_INDEX, "KeyConditionExpression": "tenant_part = :p AND tenant_sk >= :since",
            "ExpressionAttributeValues": {":p": part, ":since": since}, "ScanIndexForward": False}, limit)
        merged = heapq.merge(*(items for items, _ in found), key=lambda i: i["tenant_sk"], reverse=True)
        return [{k: v for k, v in item.items() if k not in _PART_FIELDS}
                for _, item in zip(range(limit), merged, strict=False)]

    def backfill_index_parts(self) -> int:
        """Give every job written before the indexes were sharded its `tenant_part` and `due_part` (one
        pass over the table; docs/scale.md, "Upgrading a stack"). Each write is conditional on the status
        read, so a job that moved meanwhile (its new status's write sets both) is left as it is. Returns
        how many jobs were written."""
        client = self._table.meta.client
        pages = client.get_paginator("scan").paginate(
            TableName=self._table.name, ProjectionExpression="id, tenant_id, #s",
            FilterExpression="attribute_not_exists(tenant_part) OR attribute_not_exists(due_part)",
            ExpressionAttributeNames={"#s": "status"})
        written = 0
        for page in pages:
            for item in page.get("Items", []):
                try:
                    self._table.update_item(
                        Key={"id": item["id"]}, UpdateExpression="SET tenant_part = :tp, due_part = :dp",
                        ConditionExpression="#s = :s",
                        ExpressionAttributeNames={"#s": "status"},
                        ExpressionAttributeValues={":tp": tenant_part(item["tenant_id"], item["id"]),
                                                   ":dp": due_part(item["status"], item["id"]),
                                                   ":s": item["status"]})
                except ClientError as err:
                    if not _is_condition_failure(err):
                        raise
                    continue
                written += 1
        return written

    def overviews(self, job_ids: list[str]) -> list[dict[str, Any]]:
        """The small fields of many jobs at once (no input, output or council): for dashboards. Unordered."""
        fields = ["id", "status", "task", "priority", "endpoint", "attempts", "created_at", "updated_at", "error",
                  "error_class", "events", "tenant_id", "cached_from"]
        names = {f"#f{i}": name for i, name in enumerate(fields)}  # several are DynamoDB reserved words
        found: list[dict[str, Any]] = []
        # BatchGetItem lives on the client; the resource's client (de)serialises values as the table does
        client = self._table.meta.client
        for start in range(0, len(job_ids), 100):  # BatchGetItem's limit
            request: dict[str, Any] = {self._table.name: {
                "Keys": [{"id": job_id} for job_id in dict.fromkeys(job_ids[start:start + 100])],
                "ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}}
            while request:
                answer = client.batch_get_item(RequestItems=request)
                found += answer.get("Responses", {}).get(self._table.name, [])
                request = answer.get("UnprocessedKeys") or {}
        return found

    def transition(
        self,
        job_id: str,
        move: Move | JobStatus,
        *,
        actor: str,
        endpoint: str | None = None,
        attempt: int | None = None,
        detail: str | None = None,
        fields: dict[str, Any] | None = None,
        expect_runpod_id: str | None = None,
        expect_attempts: int | None = None,
        expect_uncached: bool = False,
        expect_room: bool = False,
        refused_job: bool = False,
        current: Job | None = None,
    ) -> Job:
        """Make a move of the status table (a bare status: the plain move to it) if the job is in one of
        its sources; else refuse. `expect_runpod_id` also requires the RunPod job in flight to be that one,
        `expect_attempts` the job to be at that attempt, `expect_uncached` the job to have no cache key,
        `expect_room` the item to have room for the output in `fields` beside its input (a write made
        without reading the job first: else the caller sizes the output on the job it reads).
        `refused_job`: a refusal carries the job as it was (TransitionRefused.current), read with the
        refusal itself. `current`, the job as the caller last read it, sizes the room an output has
        beside the rest."""
        if isinstance(move, JobStatus):
            move = to(move)
        if not move.sources:
            raise TransitionRefused(f"no status may move to {move.target}")
        target, sources = move.target, sorted(move.sources)
        moment = datetime.now(UTC)
        at = iso(moment)
        started = (fields or {}).get("runpod_id") if target is JobStatus.IN_PROGRESS else None
        event = JobEvent(at=at, status=target, actor=actor, endpoint=endpoint, attempt=attempt or 0, detail=detail,
                         runpod_id=started)
        names = {"#s": "status"}
        values: dict[str, Any] = {
            ":target": target.value,
            ":now": at,
            ":ev": [event.model_dump(mode="json", exclude_none=True)],
            ":dp": due_part(target, job_id),
        }
        # `due_part` moves with the status: the due index is keyed on it (sparse on `due_at` as before)
        sets = ["#s = :target", "due_part = :dp", "updated_at = :now", "events = list_append(events, :ev)"]
        if not target.terminal and "due_at" not in (fields or {}):
            values[":due"] = self._due_after_news(moment)
            sets.append("due_at = :due")
        if target.terminal and (current is None or current.webhook):
            # The notice outbox: the caller's notice is owed until a delivery try is recorded. A crash
            # between this write and queueing the notice (a Lambda dies mid-step) cannot lose it: the
            # sweeper finds the job due and queues it again (at least once; webhook-id dedups).
            values[":due"] = self._due_after_news(moment)
            sets.append("due_at = :due")
        if target.terminal and (expires := self._expires_at(moment)) is not None:
            values[":expires"] = expires
            sets.append("expires_at = :expires")
        room = ITEM_LIMIT - ITEM_MARGIN - _item_size(current) if current is not None else None
        for i, (name, value) in enumerate(self._stored(job_id, fields or {}, room).items()):
            names[f"#f{i}"] = name
            values[f":f{i}"] = value
            sets.append(f"#f{i} = :f{i}")
        if endpoint is not None and "endpoint" not in (fields or {}):
            names["#ep"], values[":ep"] = "endpoint", endpoint
            sets.append("#ep = :ep")
        placeholders = []
        for i, src in enumerate(sources):
            values[f":src{i}"] = src.value
            placeholders.append(f":src{i}")
        condition = f"attribute_exists(id) AND #s IN ({', '.join(placeholders)})"
        if expect_runpod_id is not None:
            names["#rp"], values[":rp"] = "runpod_id", expect_runpod_id
            condition += " AND #rp = :rp"
        if expect_attempts is not None:
            values[":attempts"] = expect_attempts
            condition += " AND attempts = :attempts"
        if expect_uncached:
            condition += " AND attribute_not_exists(cache_key)"
        if expect_room:
            output_bytes = len(json.dumps((fields or {}).get("output"), separators=(",", ":")))
            names["#in"], values[":in_max"] = "input", ITEM_LIMIT - ITEM_MARGIN - UNREAD_ALLOWANCE - output_bytes
            if values[":in_max"] <= 0:
                raise TransitionRefused(f"job {job_id}: an output of {output_bytes} bytes is sized on the job")
            condition += " AND (attribute_not_exists(#in) OR size(#in) <= :in_max)"  # kept in S3: no input
        owed = target.terminal and ":due" in values
        update = "SET " + ", ".join(sets) + (" REMOVE due_at" if target.terminal and not owed else "")
        request = {"Key": {"id": job_id}, "UpdateExpression": update,
                   "ConditionExpression": condition, "ExpressionAttributeNames": names,
                   "ExpressionAttributeValues": values, "ReturnValues": "ALL_NEW"}
        if refused_job:
            request["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            out = self._update_spilling(job_id, request, fields or {})
        except ClientError as err:
            if _is_condition_failure(err):
                refused = TransitionRefused(f"job {job_id} cannot move to {target}")
                found = refused_item(err)
                if found:
                    refused.current = self._with_input(from_item(found), current, after_write=True)
                raise refused from err
            raise
        moved = self._with_input(from_item(out["Attributes"]), current, after_write=True)
        if target in TERMINAL:  # the conditional write won: each job is counted once
            metrics.job_finished(moved)
            if self.on_finished is not None:
                self.on_finished(moved)
        return moved

    def _update_spilling(self, job_id: str, request: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        """One UpdateItem. The whole item must fit DynamoDB's 400 KB: an output that fits alone may not fit
        beside a large input and the timeline, so when DynamoDB refuses the size, the output goes to S3
        and the write is made once more (a job never completes without its result)."""
        try:
            return self._table.update_item(**request)
        except ClientError as err:
            if not (_is_item_too_large(err) and "output" in fields and self._results is not None):
                raise
            output, ref = self._results.keep(job_id, fields["output"], force=True)
            placeholder = {name: ":" + key[1:] for key, name in request["ExpressionAttributeNames"].items()}
            request["ExpressionAttributeValues"][placeholder["output"]] = json.dumps(output)
            request["ExpressionAttributeValues"][placeholder["output_ref"]] = ref
            return self._table.update_item(**request)

    def annotate(self, job_id: str, fields: dict[str, Any]) -> None:
        """Write fields of a live job without a status change (e.g. a council's collected answers). It is
        news: the job is due `watch_s` later, unless `fields` set `due_at` themselves."""
        moment = datetime.now(UTC)
        names, values, sets = {"#s": "status"}, {":now": iso(moment)}, ["updated_at = :now"]
        if "due_at" not in fields:
            values[":due"] = self._due_after_news(moment)
            sets.append("due_at = :due")
        for i, (name, value) in enumerate(self._stored(job_id, fields).items()):
            names[f"#f{i}"] = name
            values[f":f{i}"] = value
            sets.append(f"#f{i} = :f{i}")
        try:
            self._table.update_item(
                Key={"id": job_id}, UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=f"attribute_exists(id) AND {_live(values)}",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values,
            )
        except ClientError as err:
            if _is_condition_failure(err):
                raise TransitionRefused(f"job {job_id} has already ended") from err
            raise

    def record_delivery(self, job_id: str, entry: dict[str, Any]) -> bool:
        """Append one try of the caller's webhook to the job (no status change: the job has ended). False
        when the job is gone (expired): a notice carries its body, so it can be tried after its job. The
        notice is no longer owed (the delivery queue has it, retries and DLQ included): `due_at` goes."""
        try:
            self._table.update_item(
                Key={"id": job_id},
                UpdateExpression="SET deliveries = list_append(if_not_exists(deliveries, :none), :d) REMOVE due_at",
                ConditionExpression="attribute_exists(id)",
                ExpressionAttributeValues={":d": [entry], ":none": []},
            )
        except ClientError as err:
            if not _is_condition_failure(err):
                raise
            return False
        return True

    def notice_settled(self, job_id: str) -> None:
        """A finished job's notice is no longer owed (queued again, or there is none to send): it leaves
        the due index. A no-op for a live job (its `due_at` is the sweeper's) or a job gone."""
        values = {f":t{i}": s.value for i, s in enumerate(sorted(TERMINAL))}
        try:
            self._table.update_item(
                Key={"id": job_id}, UpdateExpression="REMOVE due_at",
                ConditionExpression=f"attribute_exists(id) AND #s IN ({', '.join(values)})",
                ExpressionAttributeNames={"#s": "status"}, ExpressionAttributeValues=values,
            )
        except ClientError as err:
            if not _is_condition_failure(err):
                raise

    def claim_attempt(self, job_id: str, seen_attempts: int, *, queued_only: bool = False) -> Job | None:
        """Take the next dispatch attempt; None when another delivery took it first, or the job is not
        waiting any more (IN_QUEUE, or RETRYING for the recovery workflow; IN_QUEUE only: `queued_only`).

        Only `attempts` is written: `updated_at` and the status are left to the write that records the
        attempt's start moments later, so the claim moves no index entry (ByStatus is keyed on
        `updated_at`, ByTenant projects it) and costs one write unit instead of four."""
        values: dict[str, Any] = {":next": seen_attempts + 1, ":seen": seen_attempts, ":q": JobStatus.IN_QUEUE.value}
        waiting = ":q"
        if not queued_only:
            values[":r"] = JobStatus.RETRYING.value
            waiting = ":q, :r"
        try:
            out = self._table.update_item(
                Key={"id": job_id},
                UpdateExpression="SET attempts = :next",
                ConditionExpression=f"#s IN ({waiting}) AND attempts = :seen",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as err:
            if _is_condition_failure(err):
                return None
            raise
        return self._with_input(from_item(out["Attributes"]))

    def _with_input(self, job: Job, known: Job | None = None, *, after_write: bool = False) -> Job:
        """`job` with its input, when the input is kept in S3: from `known` (the job as its caller read
        it), else this process's memory or S3. An input the bucket's lifecycle has removed (a finished
        job's, in its last day of retention: it was written at submission) is shown empty. `after_write`:
        the job is what a write returned (made, or refused): what the caller must learn is the write's
        outcome, so a failure to load is logged, not raised (the job comes back with an empty input and
        its `input_ref`), and a write that was made is never mistaken for one that failed."""
        if job.input_ref is None or self._results is None:
            return job
        if known is not None and known.id == job.id and known.input:
            return job.model_copy(update={"input": known.input})
        try:
            value = self._results.load_input(job.id)
        except Exception as err:
            if self._results.input_gone(err) and job.status.terminal:
                logger.warning("a finished job's input is no longer kept", extra={"job_id": job.id})
                return job
            if not after_write:
                raise
            logger.warning("could not load a job's input after its write", extra={"job_id": job.id})
            return job
        return job.model_copy(update={"input": value})


class MemberStore:
    """Council members of a job, kept in the job item's `members` map (one key per stage-index)."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def put(self, job_id: str, key: str, member: CouncilMember) -> bool:
        """Record a member in flight; False when the job has ended meanwhile (e.g. cancelled): a cancel
        reads the members in the write that ends the job, so one put after it would never be seen."""
        values: dict[str, Any] = {":m": member.model_dump(exclude={"done"})}  # `done` is set once, by finish()
        try:
            self._table.update_item(
                Key={"id": job_id},
                UpdateExpression="SET members.#k = :m",
                ConditionExpression=f"attribute_exists(members) AND {_live(values)}",
                ExpressionAttributeNames={"#k": key, "#s": "status"},
                ExpressionAttributeValues=values,
            )
        except ClientError as err:
            if _is_condition_failure(err):
                return False
            raise
        return True

    def finish(self, job_id: str, key: str) -> bool:
        """Mark a member's result as taken; False when it already was (a duplicate callback)."""
        try:
            self._table.update_item(
                Key={"id": job_id},
                UpdateExpression="SET members.#k.done = :t",
                ConditionExpression="attribute_exists(members.#k) AND attribute_not_exists(members.#k.done)",
                ExpressionAttributeNames={"#k": key},
                ExpressionAttributeValues={":t": True},
            )
        except ClientError as err:
            if _is_condition_failure(err):
                return False
            raise
        return True


def _encode_cursor(tenant_id: str, tenant_sk: str) -> str:
    """Opaque to callers: the tenant and the last `tenant_sk` shown (the next page is what sorts before it)."""
    key = {"tenant_id": tenant_id, "tenant_sk": tenant_sk}
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _decode_cursor(cursor: str, tenant_id: str) -> str:
    """The `tenant_sk` a cursor continues after. A cursor from before the indexes were sharded (it also
    names the job's `id`) still works."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError as err:
        raise InvalidRequest("cursor is not a cursor this API returned", field="cursor") from err
    if not isinstance(key, dict) or set(key) - {"id"} != {"tenant_id", "tenant_sk"} or \
            not all(isinstance(v, str) for v in key.values()):
        raise InvalidRequest("cursor is not a cursor this API returned", field="cursor")
    if key["tenant_id"] != tenant_id:  # another tenant's cursor is as unknown as another tenant's job
        raise NotFound("no such cursor", field="cursor")
    return key["tenant_sk"]
