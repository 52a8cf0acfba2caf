"""A finished chunk's lines, as OpenAI's batch output and error files have them. Pure: no I/O.

Output line: `{"id", "custom_id", "response": {"status_code": 200, "request_id", "body"}, "error": null}`, the
body being what the route answers alone (openai_compat.translate). A line the worker refused goes to the error
file with its status and OpenAI's error body; a line that never ran (its chunk failed after every retry, or
the batch was cancelled or expired first) with `response: null` and an error naming why.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from stillhouse.jobs.model import Job, JobStatus, Task
from stillhouse.openai_compat import translate
from stillhouse.openai_compat.errors import error_detail

#: Why a line that never ran did not, by how its batch ended.
NOT_RUN = {"cancelled": ("batch_cancelled", "This request was not run: the batch was cancelled."),
           "expired": ("batch_expired", "This request could not be executed before the completion window expired.")}


@dataclass
class Lines:
    """A chunk's lines, sorted into the two files (each line in exactly one)."""

    output: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


def chunk_lines(endpoint: str, chunk: dict[str, Any], job: Job | None, output: Any, ending: str | None) -> Lines:
    """Sort one chunk's lines. `chunk`: the chunk as stored (custom ids, line numbers); `job`: its job, ended
    (None: never made); `output`: the job's output (read from S3 when it was kept there)."""
    lines = Lines()
    custom_ids = [ln["custom_id"] for ln in chunk["lines"]]
    meta = chunk.get("meta") or [{} for _ in custom_ids]
    if job is None or job.status is not JobStatus.COMPLETED:
        code, message = _not_run(job, ending)
        for i, custom_id in enumerate(custom_ids):
            lines.errors.append(_line(job, i, custom_id, None, {"code": code, "message": message}))
        return lines
    entries = output.get("lines") if isinstance(output, dict) else None
    if not isinstance(entries, list) or len(entries) != len(custom_ids):
        answered = len(entries) if isinstance(entries, list) else "no"
        message = f"the worker answered {answered} lines for {len(custom_ids)}"
        for i, custom_id in enumerate(custom_ids):
            lines.errors.append(_line(job, i, custom_id, None, {"code": "worker_error", "message": message}))
        return lines
    for i, (custom_id, entry) in enumerate(zip(custom_ids, entries, strict=True)):
        entry = entry if isinstance(entry, dict) else {}
        if "output" in entry and entry.get("custom_id") == custom_id:
            body = _body(endpoint, job, i, entry["output"], meta[i].get("encoding_format"))
            lines.output.append(_line(job, i, custom_id, {"status_code": 200, "body": body}, None))
        else:
            status, detail = _refusal(entry.get("error"), entry.get("custom_id") == custom_id)
            lines.errors.append(_line(job, i, custom_id, {"status_code": status, "body": {"error": detail}}, None))
    return lines


def _not_run(job: Job | None, ending: str | None) -> tuple[str, str]:
    if job is not None and job.status is JobStatus.CANCELLED and ending in NOT_RUN:
        return NOT_RUN[ending]
    if job is None or job.status is JobStatus.CANCELLED:
        return NOT_RUN.get(ending or "cancelled", NOT_RUN["cancelled"])
    return "request_failed", f"{job.status.value}: {job.error or 'the chunk did not complete'}"


def _refusal(error: Any, matched: bool) -> tuple[int, dict[str, Any]]:
    if not matched:
        return 500, error_detail(500, "worker_error", "the worker's answer does not match this line", None)
    if isinstance(error, str):
        try:
            error = json.loads(error)
        except ValueError:
            error = {"error_message": error}
    error = error if isinstance(error, dict) else {}
    status = 500 if error.get("retryable") else 400
    message = str(error.get("error_message") or error.get("message") or "the request failed")
    return status, error_detail(status, str(error.get("error_type") or "request_failed"), message, error.get("field"))


def _request_id(job: Job, index: int) -> str:
    return f"{job.id}-{index}"


def _line(job: Job | None, index: int, custom_id: str, response: dict[str, Any] | None,
          error: dict[str, Any] | None) -> dict[str, Any]:
    request_id = _request_id(job, index) if job is not None else None
    if response is not None:
        response = {"status_code": response["status_code"], "request_id": request_id, "body": response["body"]}
    return {"id": f"batch_req_{(job.id if job else 'none')}_{index}", "custom_id": custom_id,
            "response": response, "error": error}


def _body(endpoint: str, job: Job, index: int, output: Any, encoding_format: str | None) -> dict[str, Any]:
    """The route's own answer for one line: the chunk's job, seen as if it had been this line alone."""
    line_job = job.model_copy(update={"id": _request_id(job, index), "output": output,
                                      "task": Task.EMBED if endpoint == "/v1/embeddings" else Task.GENERATE})
    model = str(output.get("model") or job.model) if isinstance(output, dict) else str(job.model)
    if endpoint == "/v1/chat/completions":
        answer: Any = translate.chat_completion(line_job, model)
    elif endpoint == "/v1/completions":
        answer = translate.completion(line_job, model)
    else:
        answer = translate.embedding_list(line_job, model, encoding_format or "float")
    return answer.model_dump(mode="json", exclude_none=True)
