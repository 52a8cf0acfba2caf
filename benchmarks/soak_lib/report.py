"""The soak's JSON: counts, latencies (submit -> first terminal event of the job's timeline, one clock) and,
for every job that went wrong, its timeline as GET /v1/jobs/{id} shows it."""
from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from .drain import TERMINAL

MAX_PROBLEMS = 25
MAX_FAILED_EXAMPLES = 5


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _terminal_events(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in job.get("events", []) if e.get("status") in TERMINAL]


def classify(record: dict[str, Any]) -> list[str]:
    """What went wrong with one submitted job (empty: nothing)."""
    if "id" not in record:
        return ["not_submitted"]
    job = record.get("job")
    if job is None:
        return ["unreadable"]
    problems = []
    if job["status"] not in TERMINAL:
        problems.append("lost")
    if len(_terminal_events(job)) > 1:
        problems.append("duplicate_terminal")
    if job["status"] == "COMPLETED" and (job.get("output") or {}).get("text") != record["text"]:
        problems.append("wrong_output")
    return problems


def stages_p50(read: list[dict[str, Any]]) -> dict[str, float | None]:
    """Median split of submit -> terminal: the API (POST sent -> IN_QUEUE), the queue and dispatch
    (-> first IN_PROGRESS), the attempts and callbacks (-> first terminal event)."""
    api, queue, run = [], [], []
    for r in read:
        events = r["job"].get("events", [])
        at = {}
        for e in events:
            kind = "end" if e["status"] in TERMINAL else e["status"]
            at.setdefault(kind, _epoch(e["at"]))
        if {"IN_QUEUE", "IN_PROGRESS", "end"} <= at.keys():
            api.append((at["IN_QUEUE"] - r["wall_sent"]) * 1000)
            queue.append((at["IN_PROGRESS"] - at["IN_QUEUE"]) * 1000)
            run.append((at["end"] - at["IN_PROGRESS"]) * 1000)
    return {"submit_to_queued": _round(quantile(api, 0.5)), "queued_to_in_progress": _round(quantile(queue, 0.5)),
            "in_progress_to_terminal": _round(quantile(run, 0.5))}


def _problem_entry(record: dict[str, Any], kinds: list[str], webhooks: list[tuple[float, str]]) -> dict[str, Any]:
    job = record.get("job") or {}
    return {"id": record.get("id"), "problems": kinds, "text": record["text"], "status": job.get("status"),
            "attempts": job.get("attempts"), "endpoint": job.get("endpoint"), "runpod_id": job.get("runpod_id"),
            "error": job.get("error"), "output": job.get("output"), "dup_sqs": record.get("dup_sqs", False),
            "submit_error": record.get("submit_error"), "caller_webhooks": [s for _, s in webhooks],
            "events": job.get("events")}


def build(records: list[dict[str, Any]], arrivals: dict[str, list[tuple[float, str]]]) -> dict[str, Any]:
    accepted = [r for r in records if "id" in r]
    read = [r for r in accepted if "job" in r]
    kinds = {r["i"]: classify(r) for r in records}
    count = Counter(k for ks in kinds.values() for k in ks)
    latencies, ends = [], []
    for r in read:
        terminal = _terminal_events(r["job"])
        if terminal:
            end = min(_epoch(e["at"]) for e in terminal)
            ends.append(end)
            latencies.append((end - r["wall_sent"]) * 1000)
    first_sent = min((r["wall_sent"] for r in accepted), default=0.0)
    hooks = {r["id"]: arrivals.get(r["id"], []) for r in accepted}
    terminal_ids = [r["id"] for r in read if r["job"]["status"] in TERMINAL]
    problems = [_problem_entry(r, kinds[r["i"]], hooks.get(r.get("id"), [])) for r in records if kinds[r["i"]]]
    failed = [_problem_entry(r, [], hooks[r["id"]]) for r in read
              if r["job"]["status"] in TERMINAL - {"COMPLETED"}][:MAX_FAILED_EXAMPLES]
    retried = [_problem_entry(r, [], hooks[r["id"]]) for r in read if r["job"].get("attempts", 0) > 1][:MAX_FAILED_EXAMPLES]
    return {
        "jobs": len(records), "accepted": len(accepted), "not_submitted": count["not_submitted"],
        "terminal": len(terminal_ids),
        "completed": sum(1 for r in read if r["job"]["status"] == "COMPLETED"),
        "lost": count["lost"] + count["unreadable"], "duplicate_terminal": count["duplicate_terminal"],
        "wrong_output": count["wrong_output"],
        "drain_s": round(max(ends) - first_sent, 1) if ends else None,
        "p50_ms": _round(quantile(latencies, 0.5)), "p90_ms": _round(quantile(latencies, 0.9)),
        "p99_ms": _round(quantile(latencies, 0.99)), "max_ms": _round(max(latencies, default=None)),
        "stages_ms_p50": stages_p50(read),
        "by_status": dict(Counter(r["job"]["status"] for r in read)),
        "by_attempts": {str(k): v for k, v in sorted(Counter(r["job"].get("attempts", 0) for r in read).items())},
        "by_endpoint": dict(Counter(str(r["job"].get("endpoint")) for r in read)),
        "errors": dict(Counter((r["job"].get("error") or "")[:80] for r in read if r["job"]["status"] != "COMPLETED")),
        "submit_tries": dict(Counter(str(r.get("submit_tries")) for r in records)),
        "caller_webhooks": {
            "terminal_without_webhook": sum(1 for j in terminal_ids if not hooks[j]),
            "more_than_one": sum(1 for v in hooks.values() if len(v) > 1),
            "status_differs": sum(1 for r in read if hooks[r["id"]] and hooks[r["id"]][-1][1] != r["job"]["status"]),
        },
        "problems": problems[:MAX_PROBLEMS], "problems_left_out": max(0, len(problems) - MAX_PROBLEMS),
        "failed_examples": failed,  # ended, but not COMPLETED: with their timelines
        "retried_examples": retried,  # more than one attempt: with their timelines
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value)
