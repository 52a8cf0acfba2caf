"""Results too large for a DynamoDB item (400 KB) live in S3; the job keeps a reference beside its output.

Callers get a presigned URL (`output_url`) in place of `output` for such jobs. The reference is a field
of its own (`output_ref`), never a value inside the output, and the S3 key is derived from the job id:
an output a worker (or a caller, through echo) crafts to look like a reference is only an output, and no
job can be given a link to another job's result.
"""
from __future__ import annotations

import json
from typing import Any


def result_key(job_id: str) -> str:
    return f"results/{job_id}.json"


class ResultStore:
    def __init__(self, s3: Any, bucket: str, inline_limit: int = 350_000, *, link_s: int = 3600) -> None:
        self._s3 = s3
        self._bucket = bucket
        self.inline_limit = inline_limit
        self.link_s = link_s  # a presigned link's lifetime (settings.output_link_s)

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
