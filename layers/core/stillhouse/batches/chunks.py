"""A batch's chunks: each is a job (task `batch`, the batch lane), its lines kept in S3 beside it.

The job item stays small (its input names the chunk, not its lines), so each of its status writes costs a
write unit or two whatever the lines weigh; dispatch reads the lines from S3 when it sends the chunk.
Jobs are written with BatchWriteItem and queued with SendMessageBatch: a few calls for many lines.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from stillhouse.jobs.dispatch import runpod_payload
from stillhouse.jobs.model import Job, JobEvent, JobStatus, Priority, Task
from stillhouse.jobs.store import from_item, iso, to_item
from stillhouse.outputs.spill import result_key


def chunk_key(batch_id: str, index: int) -> str:
    return f"batches/{batch_id}/chunks/{index:05d}.json"


class ChunkObjects:
    """The lines of each chunk (and what finishing needs per line), in S3."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def put(self, batch_id: str, index: int, chunk: dict[str, Any]) -> None:
        self._s3.put_object(Bucket=self._bucket, Key=chunk_key(batch_id, index),
                            Body=json.dumps(chunk, separators=(",", ":")).encode(), ContentType="application/json")

    def get(self, batch_id: str, index: int) -> dict[str, Any]:
        body = self._s3.get_object(Bucket=self._bucket, Key=chunk_key(batch_id, index))["Body"].read()
        return json.loads(body)

    def payload(self, job: Job) -> dict[str, Any]:
        """What the worker runs for a job: a chunk's lines from S3, any other job's own input."""
        if job.task is not Task.BATCH:
            return runpod_payload(job)
        chunk = self.get(job.input["batch_id"], int(job.input["chunk"]))
        return {"task": Task.BATCH.value, "model": chunk["model"], "lines": chunk["lines"]}

    def output(self, job_id: str) -> Any:
        """An output kept in S3 (outputs.spill) because it was too big for the job's item."""
        return json.loads(self._s3.get_object(Bucket=self._bucket, Key=result_key(job_id))["Body"].read())


class ChunkJobs:
    """Chunk jobs in the jobs table, many at a time."""

    def __init__(self, table: Any, *, watch_s: float = 300.0) -> None:
        self._table = table
        self._watch_s = watch_s

    def create_many(self, jobs: Iterable[Job]) -> None:
        """Write new chunk jobs (BatchWriteItem, 25 a call; boto3 resends what DynamoDB leaves unprocessed).
        Not conditional: only the step that moved the batch to in_progress writes them, once."""
        with self._table.batch_writer() as writer:
            for job in jobs:
                item = to_item(job)
                moment = datetime.fromisoformat(job.updated_at.replace("Z", "+00:00"))
                item["due_at"] = iso(moment + timedelta(seconds=self._watch_s))
                writer.put_item(Item=item)

    def create_missing(self, job: Job) -> bool:
        """Write one chunk job if it is not there yet (healing a start that stopped half way)."""
        client = self._table.meta.client
        try:
            item = to_item(job)
            item["due_at"] = iso(datetime.now(UTC) + timedelta(seconds=self._watch_s))
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(id)")
            return True
        except client.exceptions.ConditionalCheckFailedException:
            return False

    def get_many(self, job_ids: list[str]) -> dict[str, Job]:
        return {item["id"]: from_item(item) for item in self._read(job_ids)}

    def statuses(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """Each chunk's status alone: a few bytes an item where get_many reads every chunk's output."""
        return {item["id"]: JobStatus(item["status"]) for item in self._read(job_ids, "id, #s")}

    def _read(self, job_ids: list[str], projection: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        client = self._table.meta.client
        for start in range(0, len(job_ids), 100):  # BatchGetItem's limit
            keys: dict[str, Any] = {"Keys": [{"id": i} for i in job_ids[start:start + 100]], "ConsistentRead": True}
            if projection:
                keys |= {"ProjectionExpression": projection, "ExpressionAttributeNames": {"#s": "status"}}
            request: dict[str, Any] = {self._table.name: keys}
            while request:
                answer = client.batch_get_item(RequestItems=request)
                found += answer.get("Responses", {}).get(self._table.name, [])
                request = answer.get("UnprocessedKeys") or {}
        return found


def chunk_job(job_id: str, tenant_id: str, batch_id: str, index: int, model: str, lines: int, first_line: int,
              trace_id: str | None, at: str) -> Job:
    return Job(id=job_id, tenant_id=tenant_id, task=Task.BATCH, status=JobStatus.IN_QUEUE, model=model,
               input={"batch_id": batch_id, "chunk": index, "lines": lines, "first_line": first_line},
               priority=Priority.BATCH, created_at=at, updated_at=at, trace_id=trace_id,
               events=[JobEvent(at=at, status=JobStatus.IN_QUEUE, actor="batch")])
