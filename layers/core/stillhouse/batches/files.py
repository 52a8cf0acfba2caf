"""Files (OpenAI's /v1/files): the content in S3, the record in the batches table.

An upload is checked whole before anything is written (bytes, lines, purpose), then stored content first and
record second: a file is listed only once its content is there, and a refused upload leaves nothing.
"""
from __future__ import annotations

import secrets
import time
from typing import Any

from boto3.dynamodb.conditions import Key

from stillhouse.batches.lines import count_lines
from stillhouse.batches.model import FileDeleted, FileList, FileObject
from stillhouse.config import BatchSettings
from stillhouse.errors import InvalidRequest, NotFound

OWNER_INDEX = "ByOwner"  # (owner = "{tenant}#file" | "{tenant}#batch", created_sk): a tenant's, newest first
UPLOAD_PURPOSES = ("batch",)
OUTPUT_PURPOSE = "batch_output"


class FileNotFound(NotFound):
    def __init__(self, file_id: str) -> None:
        super().__init__(f"No such File object: {file_id}", field="file_id")


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


def created_sk(created_at: float, item_id: str) -> str:
    """The sort key of a tenant's listing: in milliseconds, so objects made in the same second keep their order."""
    return f"{int(created_at * 1000):015d}#{item_id}"


class FileStore:
    def __init__(self, table: Any, s3: Any, bucket: str, settings: BatchSettings, *, retain_s: int = 0) -> None:
        self._table = table
        self._s3 = s3
        self._bucket = bucket
        self._settings = settings
        self._retain_s = retain_s

    def create(self, tenant_id: str, filename: str, purpose: str, content: bytes) -> FileObject:
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequest(f"purpose: {purpose!r} is not supported; use 'batch'", field="purpose")
        limit = self._settings.file_max_bytes
        if len(content) > limit:
            raise InvalidRequest(f"file: {len(content)} bytes; a batch input file holds at most {limit} bytes",
                                 field="file")
        lines = count_lines(content)
        if lines > self._settings.file_max_lines:
            raise InvalidRequest(f"file: {lines} lines; a batch input file holds at most "
                                 f"{self._settings.file_max_lines} lines", field="file")
        if lines == 0:
            raise InvalidRequest("file: the file has no lines", field="file")
        return self._store(tenant_id, new_file_id(), filename, purpose, content, lines, exists_ok=False)

    def put_output(self, tenant_id: str, file_id: str, filename: str, content: bytes, lines: int) -> FileObject:
        """A batch's output or error file. Its id is the batch's own, so finishing twice writes it twice, the same."""
        return self._store(tenant_id, file_id, filename, OUTPUT_PURPOSE, content, lines, exists_ok=True)

    def _store(self, tenant_id: str, file_id: str, filename: str, purpose: str, content: bytes, lines: int, *,
               exists_ok: bool) -> FileObject:
        key = f"files/{tenant_id}/{file_id}"
        self._s3.put_object(Bucket=self._bucket, Key=key, Body=content, ContentType="application/jsonl")
        now = int(time.time())
        item = {"id": file_id, "kind": "file", "owner": f"{tenant_id}#file",
                "created_sk": created_sk(time.time(), file_id), "tenant_id": tenant_id, "bytes": len(content),
                "created_at": now, "filename": filename[:255], "purpose": purpose, "lines": lines, "key": key}
        if self._retain_s:
            item["ttl_at"] = now + self._retain_s  # the table's TTL (JobRetentionDays)
        if exists_ok:
            self._table.put_item(Item=item)
        else:
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(id)")
        return _file_of(item)

    def record(self, tenant_id: str, file_id: str) -> dict[str, Any]:
        item = self._table.get_item(Key={"id": file_id}, ConsistentRead=True).get("Item")
        if item is None or item.get("kind") != "file" or item.get("tenant_id") != tenant_id:
            raise FileNotFound(file_id)  # another tenant's file is a missing one
        return item

    def get(self, tenant_id: str, file_id: str) -> FileObject:
        return _file_of(self.record(tenant_id, file_id))

    def content(self, tenant_id: str, file_id: str) -> bytes:
        item = self.record(tenant_id, file_id)
        try:
            return self._s3.get_object(Bucket=self._bucket, Key=item["key"])["Body"].read()
        except self._s3.exceptions.NoSuchKey:
            raise FileNotFound(file_id) from None

    def list(self, tenant_id: str, *, purpose: str | None = None, limit: int = 20,
             after: str | None = None) -> FileList:
        items, more = page(self._table, f"{tenant_id}#file", limit, after,
                           (lambda i: i.get("purpose") == purpose) if purpose else None)
        files = [_file_of(i) for i in items]
        return FileList(data=files, first_id=files[0].id if files else None,
                        last_id=files[-1].id if files else None, has_more=more)

    def delete(self, tenant_id: str, file_id: str) -> FileDeleted:
        item = self.record(tenant_id, file_id)
        self._table.delete_item(Key={"id": file_id})  # the record first: a file half deleted is not listed
        self._s3.delete_object(Bucket=self._bucket, Key=item["key"])
        return FileDeleted(id=file_id)


def page(table: Any, owner: str, limit: int, after: str | None,
         keep: Any = None) -> tuple[list[dict[str, Any]], bool]:
    """A tenant's files or batches, newest first, after the one named `after` (OpenAI's cursor is an id)."""
    kwargs: dict[str, Any] = {"IndexName": OWNER_INDEX, "KeyConditionExpression": Key("owner").eq(owner),
                              "ScanIndexForward": False}
    if after:
        seen = table.get_item(Key={"id": after}).get("Item")
        if seen is None or seen.get("owner") != owner:
            raise InvalidRequest(f"after: no such object {after!r}", field="after")
        kwargs["ExclusiveStartKey"] = {"id": after, "owner": owner, "created_sk": seen["created_sk"]}
    found: list[dict[str, Any]] = []
    while True:
        out = table.query(Limit=limit + 1, **kwargs)
        found += [i for i in out.get("Items", []) if keep is None or keep(i)]
        if len(found) > limit or "LastEvaluatedKey" not in out:
            break
        kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
    return found[:limit], len(found) > limit


def _file_of(item: dict[str, Any]) -> FileObject:
    return FileObject(id=item["id"], bytes=int(item["bytes"]), created_at=int(item["created_at"]),
                      filename=item["filename"], purpose=item["purpose"],
                      expires_at=int(item["ttl_at"]) if item.get("ttl_at") else None)
