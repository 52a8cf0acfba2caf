"""OpenAI's Batch API: /v1/files (multipart upload, list, get, content, delete) and /v1/batches (create, get,
cancel, list). Errors come in OpenAI's shape (http.resolver picks it by path)."""
from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP
from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query

from stillhouse.auth import Principal
from stillhouse.batches.model import Batch, BatchCreate, BatchList, FileDeleted, FileList, FileObject
from stillhouse.container import container
from stillhouse.errors import InvalidRequest
from stillhouse.http.resolver import media_type, raw_body

router = Router()
UPLOAD_PATH = "/v1/files"
FileId = Annotated[str, Path(max_length=200)]
BatchId = Annotated[str, Path(max_length=200)]
Limit = Annotated[int, Query(ge=1, le=100)]
After = Annotated[str | None, Query(max_length=200)]


def _principal() -> Principal:
    return router.context["principal"]


def form_fields(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body's fields: name -> (file name, bytes). Parsed by the standard library's MIME
    parser, which is what a multipart body is."""
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise InvalidRequest("the body is not multipart/form-data with a boundary", field="body")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


@router.post(UPLOAD_PATH, responses={200: {"description": "the stored file"}})
def upload_file() -> FileObject:
    """OpenAI's `files.create`: multipart/form-data with `purpose` (batch) and `file` (JSONL)."""
    event = router.current_event
    declared = (event.headers or {}).get("content-type") or ""
    if media_type(event.headers) != "multipart/form-data":
        raise InvalidRequest("send the file as multipart/form-data (fields `purpose` and `file`)", field="file")
    fields = form_fields(declared, raw_body(event))
    if "file" not in fields:
        raise InvalidRequest("file: the form has no `file` field", field="file")
    if "purpose" not in fields:
        raise InvalidRequest("purpose: the form has no `purpose` field", field="purpose")
    filename, content = fields["file"]
    purpose = fields["purpose"][1].decode("utf-8", "replace").strip()
    return container().files.create(_principal().tenant_id, filename or "upload.jsonl", purpose, content)


@router.get("/v1/files")
def list_files(purpose: Annotated[str | None, Query(max_length=40)] = None, limit: Limit = 20,
               after: After = None) -> FileList:
    return container().files.list(_principal().tenant_id, purpose=purpose, limit=limit, after=after)


@router.get("/v1/files/<file_id>")
def get_file(file_id: FileId) -> FileObject:
    return container().files.get(_principal().tenant_id, file_id)


@router.get("/v1/files/<file_id>/content", responses={200: {"description": "the file's bytes (JSONL)"}})
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
