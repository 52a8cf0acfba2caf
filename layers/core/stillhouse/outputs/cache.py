"""Result cache: a deterministic job asked again (same tenant, task, model, input, params) is answered
from the first one's result, with no GPU work.

Only deterministic jobs qualify: echo, embed, and greedy (temperature 0), non-streaming generate.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from stillhouse.errors import Unprocessable
from stillhouse.jobs.model import Task

log = logging.getLogger(__name__)

MAX_CACHED_BYTES = 350_000  # a cache entry is one DynamoDB item


def cacheable(task: Task, input: dict[str, Any], params: dict[str, Any]) -> bool:
    merged = {**params, **input}
    if task in (Task.ECHO, Task.EMBED):
        return True
    if task is Task.GENERATE:
        return not merged.get("stream") and _temperature(input, params) == 0
    return False


def _temperature(input: dict[str, Any], params: dict[str, Any]) -> float:
    """The temperature the worker will use (`input` over `params`, 0 by default). A value that is not a
    number is the request's fault, named where the caller wrote it: `float("hot")` must never be a 500."""
    where = "input" if "temperature" in input else "params"
    value = input.get("temperature", params.get("temperature"))
    if value is None:
        return 0.0
    # bool is an int to Python, but `true` is no temperature; nor are NaN and infinity.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Unprocessable(f"{where}.temperature: must be a number (0 for a cacheable job)",
                            field=f"{where}.temperature")
    return float(value)


def cache_key(tenant_id: str, task: Task, model: str | None, input: dict[str, Any], params: dict[str, Any]) -> str:
    canonical = json.dumps([tenant_id, task.value, model, input, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResultCache:
    def __init__(self, table: Any, ttl_s: int = 86_400, now: Any = time.time) -> None:
        self._table = table
        self._ttl_s = ttl_s
        self._now = now

    def get(self, key: str) -> tuple[str, Any] | None:
        """(job id that produced it, output), or None. Expired entries count as missing (DynamoDB's TTL
        deletes them only eventually)."""
        item = self._table.get_item(Key={"key": key}).get("Item")
        if item is None or int(item["expires_at"]) < self._now():
            return None
        return item["job_id"], json.loads(item["output"])

    def put(self, key: str, job_id: str, output: Any) -> bool:
        """Keep a result; False when it is too big for one item or the write failed. A cache is an
        optimisation: the job is already recorded, so a failed write is logged, never raised."""
        body = json.dumps(output, separators=(",", ":"))
        if len(body) > MAX_CACHED_BYTES:
            return False
        try:
            self._table.put_item(Item={"key": key, "job_id": job_id, "output": body,
                                       "expires_at": int(self._now()) + self._ttl_s})
        except (BotoCoreError, ClientError) as err:
            log.warning("result cache write failed for job %s: %s", job_id, err)
            return False
        return True

    def forget(self, key: str, job_id: str) -> None:
        """Drop the entry `job_id` wrote (its job did not end COMPLETED after all). Best effort, like put;
        the condition keeps another job's entry for the same key."""
        try:
            self._table.delete_item(Key={"key": key}, ConditionExpression="job_id = :j",
                                    ExpressionAttributeValues={":j": job_id})
        except (BotoCoreError, ClientError) as err:
            log.info("result cache entry of job %s not dropped: %s", job_id, err)
