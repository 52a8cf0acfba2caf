"""The events the state machines send to the workflow tasks Lambda, typed (statemachines/*.asl.json).

One pydantic model per task, told apart by `action`: a malformed event fails as TerminalError (retrying
it cannot help) with the field named, before any task runs.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from stillhouse.errors import TerminalError


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class StateError(_Event):
    """What a Catch block puts at `$.error`."""

    Error: str = "Unknown"
    Cause: str = ""


class SubmitTask(_Event):
    action: Literal["submit"]
    job_id: str
    task_token: str
    execution_arn: str | None = None


class CheckStatusTask(_Event):
    action: Literal["check_status"]
    job_id: str


class RecordFailureTask(_Event):
    action: Literal["record_failure"]
    job_id: str
    error: StateError | None = None


class MemberAnswer(_Event):
    """One council member's result: its text, or (caught by the Map) the error it failed with."""

    model: str
    text: str | None = None
    latency_ms: float | None = None
    error: str | None = None
    cause: str | None = None

    @property
    def answered(self) -> bool:
        return self.text is not None


class CouncilMemberTask(_Event):
    action: Literal["council_member"]
    job_id: str
    stage: Literal["answer", "rank", "synthesis"]
    index: int = Field(ge=0)
    model: str
    task_token: str


class CouncilQuorumTask(_Event):
    action: Literal["council_quorum"]
    job_id: str
    answers: list[MemberAnswer]
    tolerated_failure_percentage: float = Field(ge=0, le=100)


class CouncilTallyTask(_Event):
    action: Literal["council_tally"]
    job_id: str
    rankings: list[MemberAnswer]


class CouncilState(_Event):
    job_id: str
    final: MemberAnswer


class CouncilRecordTask(_Event):
    action: Literal["council_record"]
    state: CouncilState


TaskEvent = Annotated[
    SubmitTask | CheckStatusTask | RecordFailureTask | CouncilMemberTask | CouncilQuorumTask | CouncilTallyTask
    | CouncilRecordTask,
    Field(discriminator="action"),
]
_EVENTS: TypeAdapter[TaskEvent] = TypeAdapter(TaskEvent)


def parse_task_event(event: dict[str, Any]) -> TaskEvent:
    try:
        return _EVENTS.validate_python(event)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(map(str, first["loc"])) or "action"
        raise TerminalError(f"workflow task event: {field}: {first['msg']}", field=field) from err
