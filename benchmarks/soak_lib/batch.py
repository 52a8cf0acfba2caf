"""A batch beside the single jobs: `--batch-lines` echo-model chat lines through the Batch API (the official
`openai` SDK, as a caller would), chunked `--batch-chunk-lines` to a chunk, so its many chunks meet the same
faults as the single jobs (and a share of them a duplicate SQS message on the batch lane). When the batch
has ended, its output and error files are read and each line is accounted for: in exactly one of the two
files, exactly once, with its own answer ("<model> says: <its prompt>").
"""
from __future__ import annotations

import io
import json
import random
import threading
import time
import uuid
from collections import Counter
from typing import Any

from . import Ticker, log

CHAT = "/v1/chat/completions"
MODELS = ("echo-a", "echo-b", "echo-c")  # three groups: chunks of each model, the last of each part full
BATCH_TERMINAL = {"completed", "failed", "expired", "cancelled"}
JOB_TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
POLL_S = 2.0


def chunk_job_id(batch_id: str, index: int) -> str:
    return f"{batch_id}-c{index:05d}"  # stillhouse.batches.store.chunk_job_id


class BatchRun:
    """Submits one batch `at_s` seconds after `start()`, then follows it until it ends or `deadline`
    (monotonic) passes; sends a duplicate batch-lane message for a share of its chunks."""

    def __init__(self, url: str, key: str, lines: int, at_s: float, dup_rate: float, seed: int,
                 deadline: float) -> None:
        import openai

        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=5, timeout=60)
        self.lines, self.at_s, self.dup_rate, self.deadline = lines, at_s, dup_rate, deadline
        self.random = random.Random(seed + 1000)
        tag = uuid.uuid4().hex[:8]
        self.prompts = {f"line-{tag}-{i:05d}": (MODELS[i % len(MODELS)],
                                                f"soak batch {tag} line {i} {uuid.uuid4().hex[:8]}")
                        for i in range(lines)}
        self.batch_id: str | None = None
        self.batch: Any = None
        self.error: str | None = None
        self.sent_at: float | None = None  # wall time of the create call
        self.ended_after_s: float | None = None  # create -> terminal status seen
        self.statuses: list[tuple[float, str, int, int]] = []  # (s after create, status, completed, failed), on change
        self.dups_sent: list[str] = []
        self._thread = threading.Thread(target=self._run, name="soak-batch", daemon=True)

    def start(self) -> BatchRun:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join(timeout=max(0.0, self.deadline - time.monotonic()) + 30)

    def _run(self) -> None:
        try:
            time.sleep(self.at_s)
            rows = [{"custom_id": cid, "method": "POST", "url": CHAT,
                     "body": {"model": model, "messages": [{"role": "user", "content": text}]}}
                    for cid, (model, text) in self.prompts.items()]
            body = "".join(json.dumps(r) + "\n" for r in rows).encode()
            file = self.client.files.create(file=("soak.jsonl", io.BytesIO(body)), purpose="batch")
            self.sent_at = time.time()
            batch = self.client.batches.create(input_file_id=file.id, endpoint=CHAT, completion_window="24h",
                                               metadata={"soak": "fault_soak"})
            self.batch_id = batch.id
            log(f"batch {batch.id}: {self.lines} lines submitted")
            dups = None
            while time.monotonic() < self.deadline:
                batch = self._retrieve() or batch
                self.batch = batch
                self._note(batch)
                if dups is None and batch.status != "validating":
                    dups = self._duplicates(int((batch.model_extra or {}).get("stillhouse", {}).get("chunks") or 0))
                if batch.status in BATCH_TERMINAL:
                    self.ended_after_s = time.time() - self.sent_at
                    log(f"batch {batch.id}: {batch.status} after {self.ended_after_s:.1f} s")
                    break
                time.sleep(POLL_S)
            if dups is not None:
                dups.stop()
        except Exception as exc:  # noqa: BLE001 - reported: the verdict fails on a batch that did not end
            self.error = f"{type(exc).__name__}: {exc}"[:300]
            log(f"batch: {self.error}")

    def _retrieve(self) -> Any:
        try:
            return self.client.batches.retrieve(self.batch_id)
        except Exception:  # noqa: BLE001 - asked again next round
            return None

    def _note(self, batch: Any) -> None:
        counts = batch.request_counts
        entry = (round(time.time() - self.sent_at, 1), batch.status, counts.completed if counts else 0,
                 counts.failed if counts else 0)
        if not self.statuses or self.statuses[-1][1:] != entry[1:]:
            self.statuses.append(entry)

    def _duplicates(self, chunks: int) -> Ticker:
        """A second batch-lane message (the same body the start step sent) for a share of the chunks, 0-5 s on."""
        now = time.monotonic()
        due = sorted((now + self.random.uniform(0, 5.0), chunk_job_id(self.batch_id, i))
                     for i in range(chunks) if self.random.random() < self.dup_rate)

        def tick(_elapsed: float) -> None:
            from stillhouse.container import container
            from stillhouse.jobs.model import Priority

            while due and due[0][0] <= time.monotonic():
                _at, job_id = due.pop(0)
                container().queue.send(job_id, Priority.BATCH, attempts=0, task="batch")
                self.dups_sent.append(job_id)

        return Ticker("batch-dup-sqs", 0.25, tick, 30.0).start()

    # --- the figures, once it has ended -----------------------------------------------------------
    def report(self, session: Any, url: str) -> dict[str, Any]:
        batch = self.batch
        out: dict[str, Any] = {
            "id": self.batch_id, "status": batch.status if batch else None,
            "ended": bool(batch and batch.status in BATCH_TERMINAL), "error": self.error,
            "lines_total": self.lines,
            "ended_after_s": None if self.ended_after_s is None else round(self.ended_after_s, 1),
            "duplicate_sqs_sent": len(self.dups_sent),
        }
        if batch is None:
            return out | {"lines_lost": self.lines, "lines_duplicated": 0, "lines_wrong": 0}
        extra = (batch.model_extra or {}).get("stillhouse") or {}
        out["chunks"] = extra.get("chunks")
        out["request_counts"] = batch.request_counts.model_dump() if batch.request_counts else None
        output = self._file(batch.output_file_id)
        errors = self._file(batch.error_file_id)
        seen = Counter(line.get("custom_id") for line in output + errors)
        wrong = [line["custom_id"] for line in output if not self._right(line)]
        lost = [cid for cid in self.prompts if cid not in seen]
        out.update({
            "lines_output": len(output), "lines_error": len(errors),
            "lines_lost": len(lost), "lines_duplicated": sum(1 for n in seen.values() if n > 1),
            "lines_unknown": sum(1 for cid in seen if cid not in self.prompts),
            "lines_wrong": len(wrong),
            "errors_by_code": dict(Counter(_error_code(line) for line in errors)),
            "errors_by_message": dict(Counter(_error_message(line)[:100] for line in errors)),
            "examples": {"lost": lost[:5], "duplicated": [c for c, n in seen.items() if n > 1][:5], "wrong": wrong[:5]},
            "status_changes": self.statuses,
        })
        out["chunk_jobs"] = self._chunks(session, url, int(extra.get("chunks") or 0))
        return out

    def _file(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        text = self.client.files.content(file_id).text
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def _right(self, line: dict[str, Any]) -> bool:
        model, text = self.prompts.get(line.get("custom_id"), (None, None))
        try:
            content = line["response"]["body"]["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return False
        return model is not None and content == f"{model} says: {text}"

    def _chunks(self, session: Any, url: str, chunks: int) -> dict[str, Any]:
        """The chunk jobs as GET /v1/jobs/{id} shows them: statuses, attempts, terminal events per chunk."""
        status: Counter[str] = Counter()
        attempts: Counter[str] = Counter()
        endpoints: Counter[str] = Counter()
        ended_by: Counter[str] = Counter()  # the actor of each chunk's terminal event (webhook, sweeper ...)
        multi_terminal, unreadable, not_completed = 0, 0, []
        for i in range(chunks):
            job_id = chunk_job_id(self.batch_id, i)
            try:
                job = session.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
            except Exception:  # noqa: BLE001
                unreadable += 1
                continue
            status[str(job.get("status"))] += 1
            attempts[str(job.get("attempts"))] += 1
            ends = [e for e in job.get("events", []) if e.get("status") in JOB_TERMINAL]
            multi_terminal += len(ends) > 1
            endpoints[str(job.get("endpoint"))] += 1
            ended_by.update(str(e.get("actor")) for e in ends[:1])
            if job.get("status") != "COMPLETED" and len(not_completed) < 5:
                not_completed.append({"id": job_id, "status": job.get("status"), "attempts": job.get("attempts"),
                                      "endpoint": job.get("endpoint"), "error": job.get("error"),
                                      "events": job.get("events")})
        return {"by_status": dict(status), "by_attempts": dict(sorted(attempts.items())),
                "by_endpoint": dict(endpoints), "ended_by": dict(ended_by),
                "duplicate_terminal": multi_terminal, "unreadable": unreadable, "not_completed": not_completed}


def _error_code(line: dict[str, Any]) -> str:
    if line.get("error"):
        return str(line["error"].get("code"))
    body = ((line.get("response") or {}).get("body") or {}).get("error") or {}
    return f"{(line.get('response') or {}).get('status_code')}:{body.get('code') or body.get('type')}"


def _error_message(line: dict[str, Any]) -> str:
    if line.get("error"):
        return str(line["error"].get("message"))
    return str((((line.get("response") or {}).get("body") or {}).get("error") or {}).get("message"))
