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


def right_output(record: dict[str, Any], output: Any) -> bool:
    """A single job echoes its text; a council has every answer it kept as "<model> says: <prompt>" and a
    chair's final answer ("<chair> says: ...")."""
    output = output or {}
    if record.get("kind") != "council":
        return output.get("text") == record["text"]
    answers = output.get("answers") or []
    return (bool(answers) and all(a.get("text") == f"{a.get('model')} says: {record['text']}" for a in answers)
            and isinstance(output.get("final"), str) and output["final"].startswith(f"{output.get('chair')} says:"))


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
    if job["status"] == "COMPLETED" and not right_output(record, job.get("output")):
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
    return {"id": record.get("id"), "kind": record.get("kind", "single"), "problems": kinds, "text": record["text"], "status": job.get("status"),
            "attempts": job.get("attempts"), "endpoint": job.get("endpoint"), "runpod_id": job.get("runpod_id"),
            "error": job.get("error"), "output": job.get("output"), "dup_sqs": record.get("dup_sqs", False),
            "submit_error": record.get("submit_error"), "caller_webhooks": [s for _, s in webhooks],
            "events": job.get("events")}


def recorded_runs(job: dict[str, Any]) -> int:
    """RunPod jobs its timeline shows started (IN_PROGRESS events with a runpod_id)."""
    return sum(1 for e in job.get("events", []) if e.get("status") == "IN_PROGRESS" and e.get("runpod_id"))


def saw_no_fault(record: dict[str, Any], crashed: dict[str, list[str]], gpu_runs: dict[str, int]) -> bool:
    """A job that saw no fault: one attempt, no RETRYING event, no crash point hit, no duplicate SQS message
    sent for it, and one GPU run. (A fault it never met, e.g. a 5xx on another job's /run, does not count.)"""
    job = record["job"]
    return (job.get("attempts") == 1 and not any(e.get("status") == "RETRYING" for e in job.get("events", []))
            and record["id"] not in crashed and not record.get("dup_sqs") and gpu_runs.get(record["id"], 0) == 1)


def webhook_report(records: list[dict[str, Any]], hooks: dict[str, list[tuple[float, str]]]) -> dict[str, int]:
    """Per kind: terminal jobs never told, told twice with different news (two notices), told otherwise
    than they ended, and copies of one notice posted again (at least once: same webhook-id, the receiver
    drops them; a function that died after its POST sends it again)."""
    read = [r for r in records if "job" in r]
    terminal = [r for r in read if r["job"]["status"] in TERMINAL]
    return {
        "terminal_without_webhook": sum(1 for r in terminal if not hooks.get(r["id"])),
        "more_than_one": sum(1 for r in read if len({s for _, s in hooks.get(r["id"], [])}) > 1),
        "status_differs": sum(1 for r in read if hooks.get(r["id"]) and hooks[r["id"]][-1][1] != r["job"]["status"]),
        "copies_redelivered": sum(max(0, len(hooks.get(r["id"], [])) - 1) for r in read),
    }


def gpu_report(read: list[dict[str, Any]], gpu_runs: dict[str, int], crashed: dict[str, list[str]],
               most_per_step: dict[str, int]) -> dict[str, Any]:
    """GPU runs per job (accepted /run calls: stillhouse_local.gpu_runs), as a histogram and its max. A run
    the timeline never shows started (recorded_runs) was made by a crash after /run (or an AWS fault on the
    write that records it); `over_two_by_crash` counts the jobs (or council members) that ran more than twice
    while the crash point after /run hit them and made such a run: it must be 0."""
    runs = {r["id"]: gpu_runs.get(r["id"], 0) for r in read}
    # Only a crash between /run and the IN_PROGRESS write makes an unrecorded run; one made by an AWS fault
    # on that write (the soak's --aws-fault-rate) is not the crash point's, whatever other point hit the job.
    over = [r["id"] for r in read if "dispatch.after_run" in crashed.get(r["id"], ()) and r.get("kind") != "council"
            and runs[r["id"]] > 2 and runs[r["id"]] > recorded_runs(r["job"])]
    over += [r["id"] for r in read if r["id"] in crashed and r.get("kind") == "council"
             and "council.after_run" in crashed[r["id"]] and most_per_step.get(r["id"], 0) > 2]
    return {"histogram": {str(k): v for k, v in sorted(Counter(runs.values()).items())},
            "max": max(runs.values(), default=0),
            "unrecorded_runs": sum(max(0, runs[r["id"]] - recorded_runs(r["job"])) for r in read
                                   if r.get("kind") != "council"),
            "over_two_by_crash": len(over), "over_two_by_crash_ids": over[:10]}


def build(records: list[dict[str, Any]], arrivals: dict[str, list[tuple[float, str]]],
          gpu_runs: dict[str, int] | None = None, crashed: dict[str, list[str]] | None = None,
          most_per_step: dict[str, int] | None = None) -> dict[str, Any]:
    accepted = [r for r in records if "id" in r]
    read = [r for r in accepted if "job" in r]
    kinds = {r["i"]: classify(r) for r in records}
    count = Counter(k for ks in kinds.values() for k in ks)
    gpu_runs, crashed = gpu_runs or {}, crashed or {}
    latencies, ends, calm = [], [], []
    for r in read:
        terminal = _terminal_events(r["job"])
        if terminal:
            end = min(_epoch(e["at"]) for e in terminal)
            ends.append(end)
            latencies.append((end - r["wall_sent"]) * 1000)
            if r.get("kind") != "council" and saw_no_fault(r, crashed, gpu_runs):
                calm.append((end - r["wall_sent"]) * 1000)
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
        "no_fault": {"jobs": len(calm), "p50_ms": _round(quantile(calm, 0.5)), "p99_ms": _round(quantile(calm, 0.99)),
                     "max_ms": _round(max(calm, default=None))},
        "by_kind": dict(Counter(r.get("kind", "single") for r in accepted)),
        "caller_webhooks": {k: v for k, v in webhook_report(records, hooks).items() if k != "copies_redelivered"},
        "caller_webhooks_by_kind": {kind: webhook_report([r for r in accepted if r.get("kind", "single") == kind], hooks)
                                    for kind in sorted({r.get("kind", "single") for r in accepted})},
        "councils": {"completed": sum(1 for r in read if r.get("kind") == "council" and r["job"]["status"] == "COMPLETED"),
                     "by_status": dict(Counter(r["job"]["status"] for r in read if r.get("kind") == "council"))},
        "gpu_runs": gpu_report(read, gpu_runs, crashed, most_per_step or {}),
        "problems": problems[:MAX_PROBLEMS], "problems_left_out": max(0, len(problems) - MAX_PROBLEMS),
        "failed_examples": failed,  # ended, but not COMPLETED: with their timelines
        "retried_examples": retried,  # more than one attempt: with their timelines
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value)
