"""OpenAI's Batch API: /v1/files (multipart upload, list, get, content, delete) and /v1/batches (create, get,
cancel, list). Errors come in OpenAI's shape (http.resolver picks it by path)."""
from __future__ import annotations

from typing import Annotated, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import File, Form, Header, Path, Query, UploadFile

from stillhouse.auth import Principal
from stillhouse.batches.model import Batch, BatchCreate, BatchList, FileDeleted, FileList, FileObject
from stillhouse.container import container

router = Router()
UPLOAD_PATH = "/v1/files"
FileId = Annotated[str, Path(max_length=200)]
BatchId = Annotated[str, Path(max_length=200)]
Limit = Annotated[int, Query(ge=1, le=100)]
After = Annotated[str | None, Query(max_length=200)]


def _principal() -> Principal:
    return router.context["principal"]


@router.post(UPLOAD_PATH, responses={200: {"description": "the stored file"}})
def upload_file(file: Annotated[UploadFile, File(description="the JSONL file of requests")],
                purpose: Annotated[Literal["batch"], Form(description="what the file is for: batch")]) -> FileObject:
    """OpenAI's `files.create`: multipart/form-data with `purpose` (batch) and `file` (JSONL). Checked whole
    (bytes, lines, purpose) before anything is stored."""
    return container().files.create(_principal().tenant_id, file.filename or "upload.jsonl", purpose,
                                    file.content)


@router.get("/v1/files")
def list_files(purpose: Annotated[str | None, Query(max_length=40)] = None, limit: Limit = 20,
               after: After = None) -> FileList:
    return container().files.list(_principal().tenant_id, purpose=purpose, limit=limit, after=after)


@router.get("/v1/files/<file_id>")
def get_file(file_id: FileId) -> FileObject:
    return container().files.get(_principal().tenant_id, file_id)


@router.get("/v1/files/<file_id>/content", responses={200: {
    "description": "the file's bytes (JSONL)", "content": {"application/jsonl": {"schema": {"type": "string"}}}}})
def file_content(file_id: FileId) -> str:
    """The file's bytes. (Annotated `str` for the schema: the answer is the file itself, not JSON.)"""
    content = container().files.content(_principal().tenant_id, file_id)
    return Response(status_code=200, content_type="application/jsonl",  # type: ignore[return-value]
                    body=content.decode("utf-8", "replace"))


@router.delete("/v1/files/<file_id>")
def delete_file(file_id: FileId) -> FileDeleted:
    return container().files.delete(_principal().tenant_id, file_id)


@router.post("/v1/batches", responses={200: {"description": "the batch, validating"}})
def create_batch(request: BatchCreate,
                 traceparent: Annotated[str | None, Header(alias="traceparent", max_length=200)] = None) -> Batch:
    """OpenAI's `batches.create`. The lines are checked after this answer (status `validating`); a batch with
    a refused line ends `failed`, with each line's error in `errors`."""
    return container().batch_service.create(_principal(), request, traceparent)


@router.get("/v1/batches/<batch_id>")
def get_batch(batch_id: BatchId) -> Batch:
    return container().batch_service.get(_principal(), batch_id)


@router.post("/v1/batches/<batch_id>/cancel")
def cancel_batch(batch_id: BatchId) -> Batch:
    """Chunks not yet finished are stopped (on RunPod too); lines already done are kept in the output file."""
    return container().batch_service.cancel(_principal(), batch_id)


@router.get("/v1/batches")
def list_batches(limit: Limit = 20, after: After = None) -> BatchList:
    return container().batch_service.list(_principal(), limit=limit, after=after)
