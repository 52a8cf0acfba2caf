"""A batch input file's lines: read, checked, and planned into chunks. Pure: no I/O.

Each line is `{"custom_id", "method": "POST", "url", "body"}`; its body is what the route takes alone, and it
becomes the job that route would run (openai_compat.translate), so a line is refused exactly where the route
would refuse the same call. A chunk is up to `chunk_lines` lines of one model, in file order: one RunPod job,
run by the worker as one micro-batch.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from stillhouse.batches.model import BatchError
from stillhouse.config import InputLimits
from stillhouse.errors import StillhouseError
from stillhouse.jobs.input_limits import check_input
from stillhouse.jobs.model import JobRequest, Task
from stillhouse.openai_compat import translate
from stillhouse.openai_compat.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

#: The most errors a refused batch lists (each names its line); the rest are counted in the last one.
MAX_ERRORS = 100

_REQUESTS = {"/v1/chat/completions": ChatCompletionRequest, "/v1/completions": CompletionRequest,
             "/v1/embeddings": EmbeddingRequest}


@dataclass(frozen=True)
class Line:
    number: int  # 1-based, as the caller's editor numbers the file
    custom_id: str
    model: str
    payload: dict[str, Any]  # what the worker runs for it: the job's {**params, **input, task, model}
    encoding_format: str | None = None  # embeddings: how the vectors are written back

    def size(self) -> int:
        return len(json.dumps(self.payload, separators=(",", ":"))) + len(self.custom_id) + 32


@dataclass
class Chunk:
    model: str
    lines: list[Line] = field(default_factory=list)
    bytes: int = 0

    def stored(self) -> dict[str, Any]:
        """The chunk as kept in S3: what dispatch sends the worker, and what finishing needs per line."""
        return {"task": Task.BATCH.value, "model": self.model,
                "lines": [{"custom_id": ln.custom_id, "input": ln.payload} for ln in self.lines],
                "meta": [{"line": ln.number, "encoding_format": ln.encoding_format} for ln in self.lines]}


@dataclass
class Checked:
    lines: list[Line]
    errors: list[BatchError]


class _LineError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.error = (code, message, param)


def split_lines(content: bytes) -> Iterator[tuple[int, bytes]]:
    """The file's non-blank lines with their 1-based numbers."""
    for number, raw in enumerate(content.split(b"\n"), start=1):
        if raw.strip():
            yield number, raw


def count_lines(content: bytes) -> int:
    return sum(1 for _ in split_lines(content))


def check_lines(content: bytes, endpoint: str, limits: InputLimits, served: Callable[[str], bool]) -> Checked:
    """Every line as the worker will run it, or the errors that refuse the whole batch (each with its line)."""
    lines: list[Line] = []
    errors: list[BatchError] = []
    seen: set[str] = set()
    refused = 0
    for number, raw in split_lines(content):
        try:
            line = _check(number, raw, endpoint, limits, served)
            if line.custom_id in seen:
                raise _LineError("duplicate_custom_id", f"custom_id {line.custom_id!r} is used by an earlier line; "
                                 "each line needs its own", "custom_id")
            seen.add(line.custom_id)
            lines.append(line)
        except _LineError as err:
            refused += 1
            if len(errors) < MAX_ERRORS:
                code, message, param = err.error
                errors.append(BatchError(code=code, message=message, param=param, line=number))
    if refused > len(errors):
        errors.append(BatchError(code="too_many_errors", message=f"{refused - len(errors)} more lines were refused"))
    if not lines and not errors:
        errors.append(BatchError(code="empty_file", message="the input file has no requests", param="input_file_id"))
    return Checked(lines, errors)


def _check(number: int, raw: bytes, endpoint: str, limits: InputLimits, served: Callable[[str], bool]) -> Line:
    try:
        data = json.loads(raw)
    except ValueError:
        raise _LineError("invalid_json_line", "the line is not valid JSON") from None
    if not isinstance(data, dict):
        raise _LineError("invalid_json_line", "the line is not a JSON object")
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 512:
        raise _LineError("invalid_custom_id", "custom_id: a string of 1 to 512 characters is required", "custom_id")
    if data.get("method") != "POST":
        raise _LineError("invalid_method", f"method: must be POST, not {data.get('method')!r}", "method")
    if data.get("url") != endpoint:
        raise _LineError("invalid_url", f"url: must be the batch's endpoint {endpoint}, not {data.get('url')!r}", "url")
    unknown = set(data) - {"custom_id", "method", "url", "body"}
    if unknown:
        raise _LineError("invalid_request", f"unknown field {min(unknown)!r} on the line", min(unknown))
    body = data.get("body")
    if not isinstance(body, dict):
        raise _LineError("invalid_body", "body: a JSON object is required", "body")
    job, encoding = _job_of(endpoint, body, limits)
    assert job.model is not None  # every route's request names its model
    if not served(job.model):
        raise _LineError("model_not_found", f"body.model: the model {job.model!r} is not served", "body.model")
    payload = {**job.params, **job.input, "task": job.task.value, "model": job.model}
    return Line(number, custom_id, job.model, payload, encoding)


def _job_of(endpoint: str, body: dict[str, Any], limits: InputLimits) -> tuple[JobRequest, str | None]:
    try:
        request = _REQUESTS[endpoint].model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(["body", *map(str, first["loc"])])
        raise _LineError("invalid_body", f"{where}: {first['msg']}", where) from None
    if getattr(request, "stream", False):
        raise _LineError("invalid_body", "body.stream: a batch line cannot stream", "body.stream")
    try:
        if isinstance(request, ChatCompletionRequest):
            if translate.council_of(request.model, {}) is not None:
                raise _LineError("invalid_body", "body.model: councils are not run in batches", "body.model")
            job, encoding = translate.chat_job(request, limits, {}, streaming=False), None
        elif isinstance(request, CompletionRequest):
            job, encoding = translate.completion_job(request, limits, streaming=False), None
        else:
            job, encoding = translate.embedding_job(request, limits), request.encoding_format
        check_input(job.task, job.input, job.params, limits)
    except StillhouseError as err:
        where = f"body.{err.field}" if err.field else "body"
        raise _LineError("invalid_body", f"{where}: {err.message}", where) from None
    return job, encoding


def plan_chunks(lines: list[Line], chunk_lines: int, chunk_max_bytes: int) -> list[Chunk]:
    """Lines grouped by model in file order, each chunk at most `chunk_lines` lines and `chunk_max_bytes`."""
    open_chunks: dict[str, Chunk] = {}
    chunks: list[Chunk] = []
    for line in lines:
        size = line.size()
        chunk = open_chunks.get(line.model)
        if chunk is None or len(chunk.lines) >= chunk_lines or (chunk.lines and chunk.bytes + size > chunk_max_bytes):
            chunk = Chunk(line.model)
            open_chunks[line.model] = chunk
            chunks.append(chunk)
        chunk.lines.append(line)
        chunk.bytes += size
    return chunks
