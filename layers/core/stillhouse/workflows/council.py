"""The Lambda tasks of the council workflow (statemachines/council.asl.json)."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stillhouse import errors
from stillhouse.crash_points import crash_point
from stillhouse.jobs.deadlines import SettleDeadlines, overdue
from stillhouse.jobs.model import CouncilInput, CouncilMember, Job, JobStatus
from stillhouse.jobs.status import COMPLETE_COUNCIL
from stillhouse.jobs.store import JobStore, MemberStore
from stillhouse.routing.placement import Endpoint, Refused, Routing, place
from stillhouse.runpod.client import RunPodClient
from stillhouse.workflows import council_prompts as council
from stillhouse.workflows.events import (
    CouncilMemberTask,
    CouncilQuorumTask,
    CouncilRecordTask,
    CouncilState,
    CouncilTallyTask,
    MemberAnswer,
    parse_task_event,
)

CouncilTask = CouncilMemberTask | CouncilQuorumTask | CouncilTallyTask | CouncilRecordTask


@dataclass
class CouncilTasks:
    store: JobStore
    members: MemberStore
    router: Routing
    client_for: Callable[[Endpoint], RunPodClient]
    callback_url: Callable[[Job, int, Endpoint, str], str]  # (job, attempt, endpoint, member key)
    policy: dict[str, Any]
    notify: Callable[[Job], Any]
    stop_runpod_job: Callable[[str, str], None]  # (endpoint name, RunPod id): cancel it, free its slot
    # A member's executionTimeout on RunPod, as for any job (a hung member ends TIMED_OUT and is asked again).
    deadlines: SettleDeadlines = field(default_factory=SettleDeadlines)

    def member(self, job_id: str, stage: str, index: int, model: str, task_token: str) -> dict[str, Any]:
        """Ask one model (answer, rank or synthesis stage); its webhook resumes the workflow."""
        job = self.store.get(job_id)
        if job.status.terminal:
            raise errors.JobFinished(f"job is {job.status.value}")
        self._time_out_if_overdue(job, stage)
        spec = CouncilInput.model_validate(job.input)
        key = f"{stage}-{index}"
        earlier = (job.members or {}).get(key)
        if earlier and not earlier.done and self.members.finish(job_id, key):
            # A retry after the callback timed out: the earlier try still holds a RunPod worker and an
            # endpoint slot, and its late result would be ignored. Taking it (finish) first makes this
            # the only place that frees it: its webhook, if it comes, finds it taken.
            self.stop_runpod_job(earlier.endpoint, earlier.runpod_id)
        payload: dict[str, Any] = {"task": "generate", "model": model, "messages": self._messages(job, spec, stage)}
        if spec.max_new_tokens:
            payload["max_new_tokens"] = spec.max_new_tokens
        run_timeout_s = self.deadlines.run_timeout_s("generate", {}, payload, None)
        outcome = place(self.router, self.client_for, model, payload,
                        lambda endpoint: self.callback_url(job, 0, endpoint, key),
                        {**self.policy, "executionTimeout": int(run_timeout_s * 1000)})
        if isinstance(outcome, Refused):
            # Count-bounded, unlike a single job's refused runs (docs/reliability.md): a council tolerates
            # members that cannot be served, and goes on with the others rather than wait for one.
            raise errors.WORKFLOW_ERRORS[outcome.error_class](f"{model}: {outcome.reason}")
        endpoint, runpod_id = outcome.endpoint, outcome.accepted["id"]
        crash_point("council.after_run", job_id)
        self.router.submitted(endpoint.name)
        if not self.members.put(job_id, key, CouncilMember(
            model=model, stage=stage, endpoint=endpoint.name, runpod_id=runpod_id, task_token=task_token,
            started_ms=int(time.time() * 1000),
        )):
            # Cancelled while we were submitting: the cancel could not see this member, so stop it here.
            self.stop_runpod_job(endpoint.name, runpod_id)
            raise errors.JobFinished(f"job {job_id} ended while {model} was being asked")
        return {"runpod_id": runpod_id}

    def _time_out_if_overdue(self, job: Job, stage: str) -> None:
        """A council past its deadline ends TIMED_OUT (naming the stage it waited in) instead of asking more."""
        why = overdue(datetime.now(UTC), job.deadline_at, None, started=True)
        if why is None:
            return
        try:
            ended = self.store.transition(job.id, JobStatus.TIMED_OUT, actor="council", detail=why,
                                          fields={"error": f"{why}; it was waiting for: the council's {stage} stage"})
        except errors.TransitionRefused:
            pass
        else:
            self.notify(ended)
        raise errors.JobFinished(f"job {job.id} is past its deadline")

    @staticmethod
    def _messages(job: Job, spec: CouncilInput, stage: str) -> list[dict[str, str]]:
        if stage == "answer":
            return council.answer_messages(spec.prompt)
        state = job.council or {}
        if stage == "rank":
            return council.ranking_messages(spec.prompt, state["answers"], state["labels"])
        if stage == "synthesis":
            return council.synthesis_messages(spec.prompt, state["answers"], state.get("aggregate"))
        raise errors.TerminalError(f"unknown council stage {stage!r}")

    def quorum(self, job_id: str, answers: list[MemberAnswer], tolerated_failure_percentage: float) -> dict[str, Any]:
        """Keep what the models answered; more failures than tolerated sink the job."""
        ok = [a.model_dump(include={"model", "text", "latency_ms"}, exclude_none=True) for a in answers if a.answered]
        failed = [a.model for a in answers if not a.answered]
        if not ok or 100.0 * len(failed) / len(answers) > tolerated_failure_percentage:
            reasons = "; ".join(f"{a.model}: {a.error}" for a in answers if not a.answered)
            raise errors.TerminalError(
                f"{len(failed)} of {len(answers)} models failed (tolerated: {tolerated_failure_percentage:g}%): {reasons}")
        labels = council.labels_for([a["model"] for a in ok])
        self.store.annotate(job_id, {"council": {"answers": ok, "failed_models": failed, "labels": labels}})
        return {"answered": [a["model"] for a in ok], "failed_models": failed}

    def tally(self, job_id: str, rankings: list[MemberAnswer]) -> dict[str, Any]:
        """Read every ranking once and keep them with their aggregate on the job: the chair's prompt
        and the recorded result both read them from there, so they cannot disagree."""
        kept = self.store.get(job_id).council or {}
        ranked = [{"model": r.model, "ranking": council.parse_ranking(r.text or "", kept.get("labels", {}))}
                  for r in rankings if r.answered]  # a ranker that failed is left out, not fatal
        aggregate = council.aggregate_rankings([r["ranking"] for r in ranked])
        self.store.annotate(job_id, {"council": {**kept, "rankings": ranked, "aggregate": aggregate}})
        return {"rankers": [r["model"] for r in ranked]}

    def record(self, state: CouncilState) -> dict[str, Any]:
        job = self.store.get(state.job_id)
        kept = job.council or {}
        output: dict[str, Any] = {
            "final": state.final.text,
            "chair": state.final.model,
            "answers": [{"model": a["model"], "text": a["text"], "latency_ms": a.get("latency_ms")}
                        for a in kept.get("answers", [])],
            "failed_models": kept.get("failed_models", []),
        }
        if "rankings" in kept:  # only a council with rank: true went through the tally
            output["rankings"] = kept["rankings"]
            output["aggregate_ranking"] = kept["aggregate"]
            output["labels"] = kept.get("labels", {})
        try:
            done = self.store.transition(job.id, COMPLETE_COUNCIL, actor="council", attempt=job.attempts,
                                         fields={"output": output}, current=job)
        except errors.TransitionRefused:
            return {"recorded": False}  # cancelled meanwhile: the cancel stands
        crash_point("council.after_record", job.id)
        self.notify(done)
        return {"recorded": True}

    def handle(self, event: CouncilTask | dict[str, Any]) -> dict[str, Any]:
        if isinstance(event, dict):
            event = parse_task_event(event)
        match event:
            case CouncilMemberTask():
                return self.member(event.job_id, event.stage, event.index, event.model, event.task_token)
            case CouncilQuorumTask():
                return self.quorum(event.job_id, event.answers, event.tolerated_failure_percentage)
            case CouncilTallyTask():
                return self.tally(event.job_id, event.rankings)
            case CouncilRecordTask():
                return self.record(event.state)
        raise errors.TerminalError(f"not a council task: {event!r}")
