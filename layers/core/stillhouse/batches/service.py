"""The Batch API's service: what its routes, its control queue and the sweeper do, free of HTTP and SQS.

A batch's life (docs/batches.md):
- `create`: the request is checked, the lines it holds are admitted against the tenant's `max_batch_lines`,
  the batch is stored `validating` and its start step is queued.
- `start`: every line is checked (a refused line refuses the batch: `failed`, with each line's error), the
  lines are planned into chunks, the batch moves to `in_progress` (once: only that write's winner goes on),
  then the chunks are stored in S3, written as jobs and queued on the batch lane, a few calls for many lines.
- Each chunk is an ordinary job from then on: routing, breakers, retries and failover, cancel, the sweeper.
  When one ends (JobStore.on_finished), its lines are counted; the last one queues the finish step.
- `finish`: the chunks' own records say how each line ended, so each line is written to the output file or
  the error file exactly once, however often the step runs; then `completed` (or `cancelled`, `expired`).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from stillhouse import aws
from stillhouse.auth import Principal
from stillhouse.batches.chunks import ChunkJobs, ChunkObjects, chunk_job
from stillhouse.batches.files import FileStore
from stillhouse.batches.lines import check_lines, plan_chunks
from stillhouse.batches.model import Batch, BatchCreate, BatchList, BatchStatus
from stillhouse.batches.results import Lines, chunk_lines
from stillhouse.batches.store import BatchStore, batch_of, chunk_job_id, new_batch_id
from stillhouse.config import BatchSettings, InputLimits
from stillhouse.errors import Conflict, InvalidRequest, ServiceUnavailable, TransitionRefused
from stillhouse.jobs.model import Job, JobStatus, Task
from stillhouse.jobs.store import now_iso
from stillhouse.telemetry.tracing import TraceContext

logger = logging.getLogger(__name__)

S = BatchStatus
#: A live batch whose counts have not moved this long is finished by the sweeper if its chunks have all
#: ended (a count lost between a chunk's end and its batch's ADD), or started again if still validating.
STALL_S = 120


class Steps(Protocol):
    """The control queue: a batch's start and finish steps run apart from the call that asked for them."""

    def send(self, batch_id: str, step: str) -> None: ...


class Lane(Protocol):
    """The batch lane's queue (jobs.queue.JobQueue)."""

    def send_many(self, jobs: list[Job]) -> None: ...


class BatchQuotas(Protocol):
    def admit_batch(self, tenant_id: str, batch_id: str, lines: int) -> None: ...


@dataclass
class BatchService:
    files: FileStore
    batches: BatchStore
    chunk_jobs: ChunkJobs
    chunk_objects: ChunkObjects
    steps: Steps
    lane: Lane
    settings: BatchSettings
    limits: InputLimits
    served: Callable[[str], bool]  # is a model served by any endpoint
    cancel_job: Callable[[Job], Any]  # cancel one chunk job (and its RunPod work)
    quotas: BatchQuotas | None = None
    ended: Callable[[dict[str, Any]], Any] | None = None  # a batch's end, for its webhook
    check_webhook: Callable[[str], Any] | None = None  # refuses a webhook URL we must not send to
    now: Callable[[], float] = time.time

    # --- the routes -----------------------------------------------------------------------------
    def create(self, who: Principal, request: BatchCreate, traceparent: str | None = None) -> Batch:
        webhook = str(request.webhook) if request.webhook else None
        if webhook and self.check_webhook is not None:
            self.check_webhook(webhook)
        file = self.files.record(who.tenant_id, request.input_file_id)
        if file["purpose"] != "batch":
            raise InvalidRequest(f"input_file_id: file {request.input_file_id} has purpose {file['purpose']!r}, "
                                 "not 'batch'", field="input_file_id")
        batch_id = new_batch_id()
        total = int(file["lines"])
        if self.quotas is not None:
            self.quotas.admit_batch(who.tenant_id, batch_id, total)
        trace = TraceContext.parse(traceparent) or TraceContext.new()
        item = self.batches.create(who.tenant_id, batch_id, request.model_dump(exclude={"webhook"}),
                                   window_s=self.settings.window_s, trace_id=trace.trace_id, total=total,
                                   webhook=webhook)
        try:
            self.steps.send(batch_id, "start")
        except Exception as err:  # noqa: BLE001 - a batch that cannot start must end now, not wait forever
            self.batches.transition(batch_id, S.FAILED, (S.VALIDATING,), {"errors": _errors([{
                "code": "not_started", "message": f"the batch could not be queued: {err}"}])})
            raise ServiceUnavailable("the batch queue is unavailable; the batch was not accepted") from err
        return batch_of(item)

    def get(self, who: Principal, batch_id: str) -> Batch:
        return self.batches.get(batch_id, who.tenant_id)

    def list(self, who: Principal, *, limit: int, after: str | None) -> BatchList:
        return self.batches.list(who.tenant_id, limit=limit, after=after)

    def cancel(self, who: Principal, batch_id: str) -> Batch:
        """Stop what has not run (queued and running chunks, on RunPod too); what finished is kept."""
        item = self.batches.item(batch_id, who.tenant_id)
        status = S(item["status"])
        if status is S.CANCELLING:
            return batch_of(item)
        if status.terminal or status is S.FINALIZING:
            raise Conflict(f"batch {batch_id} is already {status.value}", field="status")
        try:
            item = self.batches.transition(batch_id, S.CANCELLING, (S.VALIDATING, S.IN_PROGRESS),
                                           {"ending": "cancelled"})
        except TransitionRefused as err:
            now = self.batches.item(batch_id)
            raise Conflict(f"batch {batch_id} is already {now['status']}", field="status") from err
        self.steps.send(batch_id, "finish")
        return batch_of(item)

    # --- the steps ------------------------------------------------------------------------------
    def start(self, batch_id: str) -> str:
        """Check the lines, plan the chunks, queue them. Safe to repeat: only the move to in_progress goes on."""
        item = self.batches.item(batch_id)
        if item["status"] == S.CANCELLING.value:
            return self._finish(item)
        if item["status"] != S.VALIDATING.value:
            return "started already"
        tenant = item["tenant_id"]
        try:
            content = self.files.content(tenant, item["input_file_id"])
        except Exception as err:  # noqa: BLE001 - deleted meanwhile, or unreadable: the batch fails, named
            if aws.unavailable(err) is not None:
                raise  # AWS throttled the read: the step runs again (its message comes back), the batch goes on
            return self._refuse(batch_id, [{"code": "invalid_file", "message": f"the input file cannot be read: {err}",
                                            "param": "input_file_id"}])
        checked = check_lines(content, item["endpoint"], self.limits, self.served)
        if checked.errors:
            return self._refuse(batch_id, [e.model_dump() for e in checked.errors])
        chunks = plan_chunks(checked.lines, self.settings.chunk_lines, self.settings.chunk_max_bytes)
        for index, chunk in enumerate(chunks):  # first: a chunk's job never exists without its lines
            self.chunk_objects.put(batch_id, index, chunk.stored())
        try:
            item = self.batches.transition(batch_id, S.IN_PROGRESS, (S.VALIDATING,),
                                           {"chunks": len(chunks), "total": len(checked.lines),
                                            "progressed_at": int(self.now())})
        except TransitionRefused:
            return "started already"
        at = now_iso()
        jobs = [chunk_job(chunk_job_id(batch_id, i), tenant, batch_id, i, c.model, len(c.lines), c.lines[0].number,
                          item.get("trace_id"), at) for i, c in enumerate(chunks)]
        self.chunk_jobs.create_many(jobs)
        if self.batches.item(batch_id)["status"] != S.IN_PROGRESS.value:
            # Cancelled while its chunks were being written: the finish step may have closed the batch without
            # the later ones. Stop them all here rather than let them run for nobody (each line is already in
            # the error file, or will be: a cancelled chunk's lines are `batch_cancelled`).
            for job in jobs:
                self.cancel_job(job)
            return "cancelled while starting"
        self.lane.send_many(jobs)
        logger.info("batch started", extra={"batch_id": batch_id, "lines": len(checked.lines), "chunks": len(chunks)})
        return "started"

    def _refuse(self, batch_id: str, errors: list[dict[str, Any]]) -> str:
        try:
            item = self.batches.transition(batch_id, S.FAILED, (S.VALIDATING,), {"errors": _errors(errors)})
        except TransitionRefused:
            return "started already"
        self._announce(item)
        return "failed"

    def chunk_ended(self, job: Job) -> None:
        """A chunk job ended (JobStore.on_finished): count its lines; the last chunk queues the finish. Never
        raises: the job's own write has happened, and the sweeper finishes a batch whose count was lost."""
        if job.task is not Task.BATCH:
            return
        try:
            batch_id = job.input["batch_id"]
            completed, failed = _counted(job)
            item = self.batches.chunk_ended(batch_id, completed, failed, int(self.now()))
            if item and int(item.get("chunks_done", 0)) >= int(item.get("chunks", 0)) > 0:
                self.steps.send(batch_id, "finish")
        except Exception:  # noqa: BLE001
            logger.exception("could not count a chunk of its batch", extra={"job_id": job.id})

    def finish(self, batch_id: str) -> str:
        return self._finish(self.batches.item(batch_id))

    def _finish(self, item: dict[str, Any]) -> str:
        """Write the output and error files once every chunk has ended (cancelling what is left when the batch
        is cancelled or expired), then end the batch. A step that finds chunks still running does nothing."""
        batch_id, status = item["id"], S(item["status"])
        if status.terminal:
            return "ended already"
        if status is S.VALIDATING:
            if item.get("ending") is None:
                return "not started"
            return self._close(item, Lines(), S.CANCELLED)  # cancelled before it started: nothing ran
        ids = [chunk_job_id(batch_id, i) for i in range(int(item.get("chunks") or 0))]
        ending = item.get("ending")
        statuses = self.chunk_jobs.statuses(ids)  # cheap: the chunks' outputs are read once, at the end
        if ending is None and self._heal(item, ids, statuses):
            return "chunks recreated"
        running = [job_id for job_id, status in statuses.items() if not status.terminal]
        if running:
            if ending is None:
                return "chunks running"
            for job in self.chunk_jobs.get_many(running).values():
                self.cancel_job(job)
            if any(not status.terminal for status in self.chunk_jobs.statuses(running).values()):
                return "chunks stopping"  # a chunk ended meanwhile its own way, or cancel lost: next round
        jobs = self.chunk_jobs.get_many(ids)
        if status is S.IN_PROGRESS:
            try:
                item = self.batches.transition(batch_id, S.FINALIZING, (S.IN_PROGRESS,))
            except TransitionRefused:
                return "finishing elsewhere"
        lines = Lines()
        for index, job_id in enumerate(ids):
            job = jobs.get(job_id)
            output = job.output if job is not None else None
            if job is not None and job.status is JobStatus.COMPLETED and output is None and job.output_ref:
                output = self.chunk_objects.output(job.id)
            part = chunk_lines(item["endpoint"], self.chunk_objects.get(batch_id, index), job, output, ending)
            lines.output += part.output
            lines.errors += part.errors
        target = {"cancelled": S.CANCELLED, "expired": S.EXPIRED}.get(ending or "", S.COMPLETED)
        return self._close(item, lines, target)

    def _heal(self, item: dict[str, Any], ids: list[str], jobs: dict[str, Any]) -> bool:
        """Chunks the start step planned but did not write (it stopped half way): write and queue them now."""
        missing = [i for i, job_id in enumerate(ids) if job_id not in jobs]
        if not missing:
            return False
        made = []
        for index in missing:
            chunk = self.chunk_objects.get(item["id"], index)
            job = chunk_job(ids[index], item["tenant_id"], item["id"], index, chunk["model"], len(chunk["lines"]),
                            chunk["meta"][0]["line"], item.get("trace_id"), now_iso())
            if self.chunk_jobs.create_missing(job):
                made.append(job)
        self.lane.send_many(made)
        return True

    def _close(self, item: dict[str, Any], lines: Lines, target: BatchStatus) -> str:
        batch_id, tenant = item["id"], item["tenant_id"]
        fields: dict[str, Any] = {"completed": len(lines.output), "failed": len(lines.errors)}
        if lines.output:
            fields["output_file_id"] = self.files.put_output(
                tenant, f"file-{batch_id}-output", f"{batch_id}_output.jsonl", _jsonl(lines.output),
                len(lines.output)).id
        if lines.errors:
            fields["error_file_id"] = self.files.put_output(
                tenant, f"file-{batch_id}-errors", f"{batch_id}_errors.jsonl", _jsonl(lines.errors),
                len(lines.errors)).id
        try:
            ended = self.batches.transition(batch_id, target, (S.FINALIZING, S.CANCELLING, S.VALIDATING), fields)
        except TransitionRefused:
            return "ended already"
        logger.info("batch ended", extra={"batch_id": batch_id, "status": target.value, **{
            k: fields[k] for k in ("completed", "failed")}})
        self._announce(ended)
        return target.value

    def _announce(self, item: dict[str, Any]) -> None:
        if self.ended is not None:
            try:
                self.ended(item)
            except Exception:  # noqa: BLE001 - the batch has ended: its notice failing must not undo that
                logger.exception("could not announce a batch's end", extra={"batch_id": item["id"]})

    # --- the sweeper ----------------------------------------------------------------------------
    def sweep(self) -> dict[str, int]:
        """Expire batches past their window, and step those whose progress stalled (a lost message)."""
        counts = {"batches_expired": 0, "batches_stepped": 0}
        now = self.now()
        for item in self.batches.live():
            status = S(item["status"])
            if status is S.IN_PROGRESS and now >= float(item.get("deadline") or item["expires_at"]):
                try:
                    self.batches.transition(item["id"], S.FINALIZING, (S.IN_PROGRESS,), {"ending": "expired"})
                except TransitionRefused:
                    continue
                self.steps.send(item["id"], "finish")
                counts["batches_expired"] += 1
            elif status is S.VALIDATING and now - int(item["created_at"]) > STALL_S:
                self.steps.send(item["id"], "start")
                counts["batches_stepped"] += 1
            elif status is not S.VALIDATING and now - int(item.get("progressed_at") or item["created_at"]) > STALL_S:
                self.steps.send(item["id"], "finish")
                counts["batches_stepped"] += 1
        return counts


def _counted(job: Job) -> tuple[int, int]:
    """A chunk's lines as (completed, failed), for progress: from its output when it is at hand."""
    lines = int(job.input.get("lines") or 0)
    if job.status is not JobStatus.COMPLETED:
        return 0, lines
    entries = job.output.get("lines") if isinstance(job.output, dict) else None
    if not isinstance(entries, list):
        return lines, 0  # kept in S3: counted as done, and counted exactly when the batch finishes
    done = sum(1 for e in entries if isinstance(e, dict) and "output" in e)
    return done, lines - done


def _errors(errors: list[dict[str, Any]]) -> str:
    return json.dumps(errors, separators=(",", ":"))


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode()
