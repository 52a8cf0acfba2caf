"""Results too large for a DynamoDB item (400 KB) live in S3; the job keeps a reference.

Callers get a presigned URL (`output_url`) in place of `output` for such jobs.
"""
from __future__ import annotations

import json
from typing import Any

REF_KEY = "$s3"  # the stored output {"$s3": key, "bytes": n} marks a spilled result


class ResultStore:
    def __init__(self, s3: Any, bucket: str, inline_limit: int = 350_000) -> None:
        self._s3 = s3
        self._bucket = bucket
        self.inline_limit = inline_limit

    def keep(self, job_id: str, output: Any, *, room: int | None = None, force: bool = False) -> Any:
        """What to store on the job: the output itself, or a reference once it is too big to inline:
        over the inline limit, over the `room` the job's item has left, or `force`d."""
        body = json.dumps(output, separators=(",", ":")).encode()
        limit = self.inline_limit if room is None else min(self.inline_limit, room)
        if not self._bucket or (len(body) <= limit and not force):
            return output
        key = f"results/{job_id}.json"
        self._s3.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType="application/json")
        return {REF_KEY: key, "bytes": len(body)}

    def url(self, output: Any, expires_s: int = 3600) -> str | None:
        if not is_spilled(output):
            return None
        return self._s3.generate_presigned_url(
            "get_object", Params={"Bucket": self._bucket, "Key": output[REF_KEY]}, ExpiresIn=expires_s)


def is_spilled(output: Any) -> bool:
    return isinstance(output, dict) and set(output) == {REF_KEY, "bytes"}
