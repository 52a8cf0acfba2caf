"""Payloads kept in S3 beside a job's item: results too large for a DynamoDB item (400 KB), and inputs
larger than a few KB.

Callers get a presigned URL (`output_url`) in place of `output` for such jobs. The reference is a field
of its own (`output_ref`), never a value inside the output, and the S3 key is derived from the job id:
an output a worker (or a caller, through echo) crafts to look like a reference is only an output, and no
job can be given a link to another job's result.

Inputs: DynamoDB charges a write for the whole item, and a job's item is written on every transition
(about five times), so an input of 100 KB would cost about 100 write units on each. An input over
`input_limit` bytes is written once, at submission, to `inputs/<job id>.json`; the item keeps only its
reference (`input_ref`, a field of its own as `output_ref` is) and stays about 1 KB whatever the input
weighs. The job store loads it back where a job is read (jobs.store). An input never changes, so each
process keeps the last few it read.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

#: An input larger than this (bytes of compact JSON) is kept in S3, not in the job's item: a job item stays
#: about 1 KB beside it, so each of its writes costs a write unit or few.
INPUT_INLINE_LIMIT = 2_000
#: How many inputs, and how many bytes of them, a process keeps after reading them from S3.
INPUT_CACHE_ENTRIES = 64
INPUT_CACHE_BYTES = 16_000_000


def result_key(job_id: str) -> str:
    return f"results/{job_id}.json"


def input_key(job_id: str) -> str:
    return f"inputs/{job_id}.json"


class ResultStore:
    def __init__(self, s3: Any, bucket: str, inline_limit: int = 350_000, *, link_s: int = 3600,
                 input_limit: int = INPUT_INLINE_LIMIT) -> None:
        self._s3 = s3
        self._bucket = bucket
        self.inline_limit = inline_limit
        self.link_s = link_s  # a presigned link's lifetime (settings.output_link_s)
        self.input_limit = input_limit
        self._inputs: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()  # job id -> (input, bytes)
        self._inputs_bytes = 0
        self._inputs_lock = threading.Lock()  # dispatch handles a batch's records in threads

    def keep(self, job_id: str, output: Any, *, room: int | None = None, force: bool = False
             ) -> tuple[Any, dict[str, int] | None]:
        """(what to store as the job's output, its reference): the output itself and None, or None and a
        reference once it is too big to inline: over the inline limit, over the `room` the job's item has
        left, or `force`d."""
        body = json.dumps(output, separators=(",", ":")).encode()
        limit = self.inline_limit if room is None else min(self.inline_limit, room)
        if not self._bucket or (len(body) <= limit and not force):
            return output, None
        self._s3.put_object(Bucket=self._bucket, Key=result_key(job_id), Body=body, ContentType="application/json")
        return None, {"bytes": len(body)}

    def url(self, job_id: str, ref: dict[str, Any] | None) -> str | None:
        """A presigned link to `job_id`'s own kept result, when it has one, working for `link_s`."""
        if not ref:
            return None
        return self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self._bucket, "Key": result_key(job_id)}, ExpiresIn=self.link_s)

    # --- inputs ----------------------------------------------------------------------------------
    def keep_input(self, job_id: str, value: dict[str, Any]) -> dict[str, int] | None:
        """Write an input too big to keep in its job's item to S3: its reference ({"bytes": n}), or None
        when the input stays in the item (small enough, or no bucket). Raises what S3 raises: the caller
        must not store the job then."""
        body = json.dumps(value, separators=(",", ":")).encode()
        if not self._bucket or len(body) <= self.input_limit:
            return None
        self._s3.put_object(Bucket=self._bucket, Key=input_key(job_id), Body=body, ContentType="application/json")
        self._remember(job_id, value, len(body))
        return {"bytes": len(body)}

    def load_input(self, job_id: str) -> dict[str, Any]:
        """A kept input, from this process's memory or S3 (NoSuchKey once the bucket's lifecycle removed it)."""
        with self._inputs_lock:
            found = self._inputs.get(job_id)
            if found is not None:
                self._inputs.move_to_end(job_id)
                return found[0]
        body = self._s3.get_object(Bucket=self._bucket, Key=input_key(job_id))["Body"].read()
        value = json.loads(body)
        self._remember(job_id, value, len(body))
        return value

    def input_gone(self, err: BaseException) -> bool:
        """Is `err` S3's answer for an input object that is not there?"""
        return isinstance(err, self._s3.exceptions.NoSuchKey)

    def drop_input(self, job_id: str) -> None:
        """Delete a kept input (a submission refused after it was written); a no-op when there is none."""
        with self._inputs_lock:
            found = self._inputs.pop(job_id, None)
            if found is not None:
                self._inputs_bytes -= found[1]
        if self._bucket:
            self._s3.delete_object(Bucket=self._bucket, Key=input_key(job_id))

    def _remember(self, job_id: str, value: dict[str, Any], size: int) -> None:
        with self._inputs_lock:
            old = self._inputs.pop(job_id, None)
            if old is not None:
                self._inputs_bytes -= old[1]
            self._inputs[job_id] = (value, size)
            self._inputs_bytes += size
            while self._inputs and (len(self._inputs) > INPUT_CACHE_ENTRIES or self._inputs_bytes > INPUT_CACHE_BYTES):
                _, (_, dropped) = self._inputs.popitem(last=False)
                self._inputs_bytes -= dropped
