"""Batches on DynamoDB (the batches table, beside their files). Every status write is conditional, so a
duplicate step (a redelivered message, two sweepers) changes nothing the first one did.

`live` is set while the batch has not ended: the sparse index on it is what the sweeper reads to find
batches to finish or expire. The counts (`completed`, `failed`, `chunks_done`) move as chunks end, one
atomic ADD each; they show progress, and finishing counts the lines again from the chunks themselves.
"""
from __future__ import annotations

import json
import secrets
import time
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from stillhouse.batches.files import created_sk, page
from stillhouse.batches.model import Batch, BatchErrors, BatchList, BatchStatus, RequestCounts
from stillhouse.errors import NotFound, TransitionRefused

LIVE_INDEX = "ByLive"
#: When each status was reached, in the field OpenAI names for it.
_STAMP = {BatchStatus.IN_PROGRESS: "in_progress_at", BatchStatus.FINALIZING: "finalizing_at",
          BatchStatus.COMPLETED: "completed_at", BatchStatus.FAILED: "failed_at", BatchStatus.EXPIRED: "expired_at",
          BatchStatus.CANCELLING: "cancelling_at", BatchStatus.CANCELLED: "cancelled_at"}


class BatchNotFound(NotFound):
    def __init__(self, batch_id: str) -> None:
        super().__init__(f"No such Batch object: {batch_id}", field="batch_id")


def new_batch_id() -> str:
    return "batch_" + secrets.token_hex(16)


def chunk_job_id(batch_id: str, index: int) -> str:
    """A chunk's job id: made from its batch and place, so planning twice names the same jobs."""
    return f"{batch_id}-c{index:05d}"


class BatchStore:
    def __init__(self, table: Any, *, retain_s: int = 0) -> None:
        self._table = table
        self._retain_s = retain_s

    def create(self, tenant_id: str, batch_id: str, request: dict[str, Any], *, window_s: float,
               trace_id: str | None, total: int, webhook: str | None = None) -> dict[str, Any]:
        now = int(time.time())
        item = {"id": batch_id, "kind": "batch", "owner": f"{tenant_id}#batch",
                "created_sk": created_sk(time.time(), batch_id), "tenant_id": tenant_id,
                "status": BatchStatus.VALIDATING.value, "live": "1",
                "endpoint": request["endpoint"], "input_file_id": request["input_file_id"],
                "completion_window": request["completion_window"], "created_at": now,
                # OpenAI's `expires_at` is whole seconds; `deadline` is when the sweeper expires it (tests: < 1 s).
                "expires_at": now + int(window_s), "deadline": Decimal(str(round(now + window_s, 3))),
                "total": total, "completed": 0, "failed": 0, "chunks": 0, "chunks_done": 0}
        if request.get("metadata") is not None:
            item["metadata"] = request["metadata"]
        if trace_id:
            item["trace_id"] = trace_id
        if webhook:
            item["webhook"] = webhook
        self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(id)")
        return item

    def item(self, batch_id: str, tenant_id: str | None = None) -> dict[str, Any]:
        item = self._table.get_item(Key={"id": batch_id}, ConsistentRead=True).get("Item")
        foreign = tenant_id is not None and item is not None and item.get("tenant_id") != tenant_id
        if item is None or item.get("kind") != "batch" or foreign:  # another tenant's batch is a missing one
            raise BatchNotFound(batch_id)
        return item

    def get(self, batch_id: str, tenant_id: str | None = None) -> Batch:
        return batch_of(self.item(batch_id, tenant_id))

    def list(self, tenant_id: str, *, limit: int = 20, after: str | None = None) -> BatchList:
        items, more = page(self._table, f"{tenant_id}#batch", limit, after)
        batches = [batch_of(i) for i in items]
        return BatchList(data=batches, first_id=batches[0].id if batches else None,
                         last_id=batches[-1].id if batches else None, has_more=more)

    def live(self, limit: int = 200) -> list[dict[str, Any]]:
        """Batches that have not ended (the sweeper finishes or expires them)."""
        out = self._table.query(IndexName=LIVE_INDEX, KeyConditionExpression=Key("live").eq("1"), Limit=limit)
        return out.get("Items", [])

    def live_ids(self, batch_ids: list[str]) -> set[str]:
        """Which of these batches have not ended (quotas release the others' lines)."""
        live: set[str] = set()
        for start in range(0, len(batch_ids), 100):
            keys = [{"id": b} for b in batch_ids[start:start + 100]]
            request = {self._table.name: {"Keys": keys, "ProjectionExpression": "id, live"}}
            while request:
                out = self._table.meta.client.batch_get_item(RequestItems=request)
                live |= {i["id"] for i in out["Responses"].get(self._table.name, []) if i.get("live")}
                request = out.get("UnprocessedKeys") or {}
        return live

    def transition(self, batch_id: str, target: BatchStatus, sources: tuple[BatchStatus, ...],
                   fields: dict[str, Any] | None = None) -> dict[str, Any]:
        """Move the batch to `target` if it is in one of `sources`; TransitionRefused otherwise."""
        now = int(time.time())
        values: dict[str, Any] = {":to": target.value, **{f":s{i}": s.value for i, s in enumerate(sources)}}
        sets = ["#s = :to"]
        stamp = _STAMP.get(target)
        if stamp:
            sets.append(f"{stamp} = :now")
            values[":now"] = now
        for i, (name, value) in enumerate((fields or {}).items()):
            sets.append(f"#f{i} = :f{i}")
            values[f":f{i}"] = value
        names = {"#s": "status", **{f"#f{i}": name for i, name in enumerate(fields or {})}}
        update = "SET " + ", ".join(sets)
        if target.terminal:
            update += " REMOVE live"
            if self._retain_s:
                update = update.replace("SET ", "SET ttl_at = :ttl, ", 1)
                values[":ttl"] = now + self._retain_s
        try:
            out = self._table.update_item(
                Key={"id": batch_id}, UpdateExpression=update,
                ConditionExpression=f"#s IN ({', '.join(v for v in values if v.startswith(':s'))})",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values, ReturnValues="ALL_NEW")
        except ClientError as err:
            if err.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise TransitionRefused(f"batch {batch_id} is not {'/'.join(s.value for s in sources)}") from err
            raise
        return out["Attributes"]

    def chunk_ended(self, batch_id: str, completed: int, failed: int, now: int) -> dict[str, Any]:
        """Count one chunk's lines (progress); the item as it is now. Only while the batch is live: a chunk
        that ends after its batch (cancelled, expired) changes nothing."""
        try:
            return self._table.update_item(
                Key={"id": batch_id},
                UpdateExpression="ADD completed :c, failed :f, chunks_done :one SET progressed_at = :now",
                ConditionExpression="attribute_exists(live)",
                ExpressionAttributeValues={":c": completed, ":f": failed, ":one": 1, ":now": now},
                ReturnValues="ALL_NEW")["Attributes"]
        except ClientError as err:
            if err.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return {}
            raise


def batch_of(item: dict[str, Any]) -> Batch:
    errors = json.loads(item["errors"]) if item.get("errors") else None
    total = int(item.get("total") or 0)
    return Batch(
        id=item["id"], endpoint=item["endpoint"], input_file_id=item["input_file_id"],
        completion_window=item["completion_window"], status=BatchStatus(item["status"]),
        errors=BatchErrors(data=errors) if errors else None,
        output_file_id=item.get("output_file_id"), error_file_id=item.get("error_file_id"),
        created_at=int(item["created_at"]), expires_at=int(item["expires_at"]),
        **{stamp: int(item[stamp]) for stamp in _STAMP.values() if item.get(stamp) is not None},
        # Progress is counted as chunks end; never shown past the total (a chunk counted twice, healed at the end).
        request_counts=RequestCounts(total=total, completed=min(int(item.get("completed") or 0), total),
                                     failed=min(int(item.get("failed") or 0), total)),
        metadata=item.get("metadata"),
        stillhouse={"chunks": int(item.get("chunks") or 0), "chunks_done": int(item.get("chunks_done") or 0),
                    "trace_id": item.get("trace_id")})
