"""Job input schemas (pydantic). Unknown fields are refused, so a typo such as `max_tokens` is an error
naming the field rather than a silently ignored parameter."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

MAX_SLEEP_S = 60.0

NonEmptyStr = Annotated[str, StringConstraints(min_length=1)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The model the job was routed for. The worker serves only the model its endpoint is deployed with
    # (serving.py): another name is a misrouted job and fails, never answered by a different model.
    model: str | None = None


class EchoInput(BaseModel):
    model_config = ConfigDict(extra="allow")


class SleepInput(_Input):
    seconds: float = Field(default=0.0, ge=0.0, le=MAX_SLEEP_S)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: NonEmptyStr
    content: str


class GenerateInput(_Input):
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    # A bare `prompt` is wrapped as one user message when the model has a chat template, because an
    # instruct model answers raw text poorly; `raw: true` sends the prompt verbatim (plain completion).
    raw: bool = False
    max_new_tokens: int | None = Field(default=None, ge=1)
    # 0 means greedy decoding (the default: deterministic, so results can be cached and batched freely).
    temperature: float = Field(default=0.0, ge=0.0, le=5.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: list[NonEmptyStr] = Field(default_factory=list, max_length=16)
    stream: bool = False

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_prompt(self) -> GenerateInput:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` or `messages`")
        if self.raw and self.messages is not None:
            raise ValueError("`raw` applies to `prompt` only")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class EmbedInput(_Input):
    texts: list[str] | None = Field(default=None, min_length=1)
    text: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EmbedInput:
        if (self.texts is None) == (self.text is None):
            raise ValueError("give exactly one of `texts` (a list) or `text`")
        return self

    @property
    def all_texts(self) -> list[str]:
        return self.texts if self.texts is not None else [self.text or ""]


#: Most lines in one `batch` job (one chunk of a Batch API file).
MAX_BATCH_LINES = 512


class BatchLineInput(BaseModel):
    """A line's `input`: exactly what a single job of its task receives. Only `task` is checked here; the
    rest is validated by that task when the line runs, so one bad line fails alone."""

    model_config = ConfigDict(extra="allow")

    # Model work plus `echo` (diagnostics). Never `batch` (no nesting) nor `sleep` (it would hold the whole
    # chunk). No `task` means `echo`, as for a single job.
    task: Literal["generate", "embed", "echo"] = "echo"

    def job_input(self) -> dict[str, Any]:
        """The line's input as received (a `task` it did not give is not added)."""
        return self.model_dump(exclude_unset=True)


class BatchLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    custom_id: NonEmptyStr
    input: BatchLineInput


class BatchInput(_Input):
    """One chunk of a Batch API file: its lines run concurrently, each as the single job it describes."""

    model: NonEmptyStr  # the chunk's model: every line that names a model must name this one
    lines: list[BatchLine] = Field(min_length=1, max_length=MAX_BATCH_LINES)
