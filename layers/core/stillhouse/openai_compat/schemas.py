"""OpenAI's wire shapes for the routes we serve: chat completions, completions, embeddings, models.

Requests refuse what they do not know (`extra="forbid"`, as OpenAI's API does), so a misspelt parameter
is a 400 naming it. Parameters OpenAI defines but the fleet cannot honour are accepted only at the value
that means "off" (e.g. `n: 1`, `logprobs: false`) and refused otherwise, naming the parameter; a few that
change nothing about the answer are accepted and ignored (listed in docs/openai.md)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema, field_validator, model_validator

from stillhouse.errors import InvalidRequest


class Unsupported(InvalidRequest):
    """An OpenAI parameter the fleet does not support at the value given (400 naming it)."""

    code = "unsupported_parameter"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=600)
    user: str | None = Field(default=None, max_length=256)
    # Accepted and ignored: they change nothing about the answer (docs/openai.md).
    metadata: dict[str, str] | None = None
    store: StrictBool | None = None
    service_tier: str | None = Field(default=None, max_length=32)

    def _off(self, name: str, value: Any, off: Any) -> None:
        if value is not None and value != off:
            raise Unsupported(f"{name}: only {off!r} is supported", field=name)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: StrictBool = False
    include_obfuscation: StrictBool | None = None  # accepted, ignored: we add no padding to chunks


#: What `_stops` allows, stated in the document too (non-empty, at most 4), so no client is refused a value
#: the document allows.
STOP_SCHEMA = {"anyOf": [{"type": "string", "minLength": 1},
                         {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 4},
                         {"type": "null"}], "default": None}


class _Sampling(_Request):
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    # At most 2**53 - 1, the largest integer every JSON parser holds exactly (I-JSON, RFC 7493): near 2**63 a
    # number the document allowed as a double (2**63 + 190 reads as 2**63 - 1) was refused as an integer.
    seed: int | None = Field(default=None, ge=0, le=2**53 - 1)
    stop: Annotated[str | list[str] | None, WithJsonSchema(STOP_SCHEMA)] = None  # checked by _stops
    n: int | None = Field(default=None, ge=1, le=128)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty")
        return stops

    def check_supported(self) -> None:
        self._off("n", self.n, 1)
        self._off("frequency_penalty", self.frequency_penalty, 0)
        self._off("presence_penalty", self.presence_penalty, 0)
        if self.logit_bias:
            raise Unsupported("logit_bias: not supported", field="logit_bias")
        if self.stream_options is not None and not self.stream:
            raise InvalidRequest("stream_options: only allowed with stream: true", field="stream_options")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # `name`, `refusal`, `audio`...: checked in `text`

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None

    def text(self, index: int) -> str:
        where = f"messages[{index}]"
        if self.role in ("tool", "function") or getattr(self, "tool_calls", None) or getattr(self, "function_call", None):
            raise Unsupported(f"{where}: tool and function messages are not supported", field=f"{where}.role")
        if self.content is None:
            raise InvalidRequest(f"{where}.content: required", field=f"{where}.content")
        if isinstance(self.content, str):
            return self.content
        texts = []
        for n, part in enumerate(self.content):
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise Unsupported(f"{where}.content[{n}]: only text parts are supported",
                                  field=f"{where}.content[{n}].type")
            texts.append(part["text"])
        return "".join(texts)

    @property
    def worker_role(self) -> str:
        return "system" if self.role == "developer" else self.role  # OpenAI's newer name for system


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: StrictBool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None  # accepted, ignored (no tools)
    reasoning_effort: str | None = None
    modalities: list[str] | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> ChatCompletionRequest:
        if self.max_tokens is not None and self.max_completion_tokens is not None \
                and self.max_tokens != self.max_completion_tokens:
            raise ValueError("give max_completion_tokens or max_tokens, not both")
        return self

    def check_supported(self) -> None:
        super().check_supported()
        self._off("logprobs", self.logprobs, False)
        self._off("top_logprobs", self.top_logprobs, 0)
        if self.response_format is not None and self.response_format.get("type") != "text":
            raise Unsupported("response_format: only {\"type\": \"text\"} is supported", field="response_format")
        if self.tools:
            raise Unsupported("tools: not supported", field="tools")
        self._off("tool_choice", self.tool_choice, "none")
        if self.reasoning_effort is not None:
            raise Unsupported("reasoning_effort: not supported", field="reasoning_effort")
        if self.modalities is not None and self.modalities != ["text"]:
            raise Unsupported("modalities: only [\"text\"] is supported", field="modalities")

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's default for this route
    echo: StrictBool | None = None
    suffix: str | None = None
    logprobs: int | None = Field(default=None, ge=0, le=5)
    best_of: int | None = Field(default=None, ge=1, le=20)

    def check_supported(self) -> None:
        super().check_supported()
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise Unsupported("prompt: one prompt per request (a list of exactly one string)", field="prompt")
        self._off("echo", self.echo, False)
        if self.suffix:
            raise Unsupported("suffix: not supported", field="suffix")
        self._off("logprobs", self.logprobs, 0)
        self._off("best_of", self.best_of, 1)

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class EmbeddingRequest(_Request):
    input: str | Annotated[list[str], Field(min_length=1)]  # the document says an empty list is refused
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        if isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
            raise ValueError("a string or a list of strings (token arrays are not supported)")
        if value == []:
            raise ValueError("at least one input")
        return value

    def check_supported(self) -> None:
        if self.dimensions is not None:
            raise Unsupported("dimensions: not supported (each model has its own)", field="dimensions")

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


# --- answers ---------------------------------------------------------------------------------------

class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None
    # Extensions (OpenAI's SDKs keep unknown fields): the job behind the answer, and a council's members.
    stillhouse: dict[str, Any] | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: str | None = None
    stillhouse: dict[str, Any] | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
    stillhouse: dict[str, Any] | None = None


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "stillhouse"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail
