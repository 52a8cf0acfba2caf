"""The notice outbox: a finished job's caller notice is owed until its first delivery try is recorded.

The terminal write keeps the job in the due index (`due_at`, `JobStore.transition`), and the delivery
function's record of a try (`JobStore.record_delivery`) takes it out, in writes both make anyway. So a
function that dies between the terminal write and queueing the notice (a Lambda timeout or kill: the
crash points `callbacks.after_terminal`, `sweeper.after_fail`, `recovery.after_record_failure`,
`council.after_record`), or a notice whose queueing failed, cannot cost the caller its webhook: each sweep
queues the overdue ones again. Delivery is at least once: the webhook-id (`msg_<job id>`) is the same on
every copy, and callers drop a duplicate by it (docs/errors.md).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from aws_lambda_powertools import Logger

from stillhouse.errors import JobNotFound
from stillhouse.jobs.model import Job
from stillhouse.jobs.status import TERMINAL

logger = Logger(service="stillhouse", child=True)


class OwedNotices(Protocol):
    """Where finished jobs with an owed notice are found (stillhouse.jobs.store.JobStore)."""

    def due(self, status: Any, by: str, limit: int = 100) -> list[str]: ...

    def get(self, job_id: str) -> Job: ...

    def notice_settled(self, job_id: str) -> None: ...


def resend_owed(store: OwedNotices, notify: Callable[[Job], Any], by: str) -> dict[str, int]:
    """Queue again the notice of every finished job due by `by` (ISO time) whose delivery never started;
    the ones with no webhook, or already tried, just leave the index (quietly). Counts: notices_resent and
    errors (a notice that could not be queued stays owed: the next sweep tries again)."""
    counts: Counter[str] = Counter()
    for status in sorted(TERMINAL):
        for job_id in store.due(status, by):
            try:
                job = store.get(job_id)
                if job.webhook and not job.deliveries:
                    if notify(job) is False:
                        counts["errors"] += 1
                        continue
                    counts["notices_resent"] += 1
                    logger.warning("queued a finished job's notice again: it was never tried",
                                   extra={"job_id": job_id, "status": job.status.value})
                store.notice_settled(job_id)
            except JobNotFound:
                continue
            except Exception:  # noqa: BLE001 - one job must not stop the rest of the sweep
                logger.exception("could not settle a finished job's notice", extra={"job_id": job_id})
                counts["errors"] += 1
    return dict(counts)
