"""OpenAI requests -> job requests, and finished jobs -> OpenAI answers. Pure: no I/O."""
from __future__ import annotations

import base64
import struct
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stillhouse.config import InputLimits
from stillhouse.errors import InvalidRequest, NotFound
from stillhouse.jobs.model import Job, JobRequest, Task
from stillhouse.openai_compat.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    Usage,
)

#: `model: "council"` (the default council) or `"council:<preset>"` / `"council:<a>,<b>,<c>"`.
COUNCIL = "council"
#: OpenAI's default sampling temperature: a caller who names none expects it, not our greedy default.
OPENAI_TEMPERATURE = 1.0


class ModelNotFound(NotFound):
    """The model is served by no endpoint this tenant can reach (404 `model_not_found`)."""

    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist or you do not have access to it.", field="model")


@dataclass(frozen=True)
class Council:
    models: list[str]
    chair: str | None = None


def council_of(model: str, presets: dict[str, list[str]]) -> Council | None:
    """The council a model name asks for; None when it is an ordinary model. `council` alone is the default
    council (an empty member list: the job takes the configured one)."""
    if model == COUNCIL:
        return Council(models=[])
    if not model.startswith(COUNCIL + ":"):
        return None
    spec = model[len(COUNCIL) + 1:]
    if spec in presets:
        return Council(models=list(presets[spec]))
    members = [m.strip() for m in spec.split(",")]
    if len(members) < 2 or any(not m for m in members):
        raise ModelNotFound(model)  # neither a preset nor a member list
    return Council(models=members)


def _sampling(request: ChatCompletionRequest | CompletionRequest, limit: int | None,
              limits: InputLimits) -> dict[str, Any]:
    name = "max_completion_tokens" if getattr(request, "max_completion_tokens", None) else "max_tokens"
    if limit is not None and limit > limits.max_new_tokens:
        raise InvalidRequest(f"{name}: at most {limits.max_new_tokens}", field=name)
    fields: dict[str, Any] = {
        "temperature": OPENAI_TEMPERATURE if request.temperature is None else request.temperature,
        "top_p": 1.0 if request.top_p is None else request.top_p,
    }
    if limit is not None:
        fields["max_new_tokens"] = limit
    if request.seed is not None:
        fields["seed"] = request.seed
    if request.stop:
        fields["stop"] = request.stop
    return fields


def chat_prompt(request: ChatCompletionRequest) -> str:
    """A chat as one prompt, for a council (its members are asked one question)."""
    messages = [(m.role, m.text(i)) for i, m in enumerate(request.messages)]
    if len(messages) == 1:
        return messages[0][1]
    return "\n\n".join(f"{role}: {text}" for role, text in messages)


def chat_job(request: ChatCompletionRequest, limits: InputLimits, presets: dict[str, list[str]],
             streaming: bool) -> JobRequest:
    """The job a chat completion runs as: a `generate` job, or a council when the model names one."""
    request.check_supported()
    council = council_of(request.model, presets)
    if council is not None:
        council_input: dict[str, Any] = {"prompt": chat_prompt(request)}
        if council.models:
            council_input["models"] = council.models
        if request.limit is not None:
            council_input["max_new_tokens"] = request.limit
        return JobRequest(task=Task.COUNCIL, input=council_input)
    messages = [{"role": m.worker_role, "content": m.text(i)} for i, m in enumerate(request.messages)]
    job_input = {"messages": messages, **_sampling(request, request.limit, limits)}
    if streaming:
        job_input["stream"] = True
    return JobRequest(task=Task.GENERATE, model=request.model, input=job_input)


def completion_job(request: CompletionRequest, limits: InputLimits, streaming: bool) -> JobRequest:
    """A completion is a `generate` job on the raw prompt (no chat template)."""
    request.check_supported()
    job_input = {"prompt": request.text, "raw": True, **_sampling(request, request.max_tokens, limits)}
    if streaming:
        job_input["stream"] = True
    return JobRequest(task=Task.GENERATE, model=request.model, input=job_input)


def embedding_job(request: EmbeddingRequest, limits: InputLimits) -> JobRequest:
    request.check_supported()
    if len(request.texts) > limits.embed_texts:
        raise InvalidRequest(f"input: at most {limits.embed_texts} texts per request", field="input")
    return JobRequest(task=Task.EMBED, model=request.model, input={"texts": request.texts})


# --- answers ---------------------------------------------------------------------------------------

def created_of(job: Job) -> int:
    try:
        return int(datetime.fromisoformat(job.created_at.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return int(time.time())


def text_of(output: Any) -> dict[str, Any]:
    """A generate job's output as one result: a streaming worker's output is the list of its chunks."""
    if isinstance(output, list):
        chunks = [c for c in output if isinstance(c, dict)]
        last = dict(chunks[-1]) if chunks else {}
        last["text"] = "".join(str(c.get("text") or "") for c in chunks)
        return last
    return output if isinstance(output, dict) else {"text": "" if output is None else str(output)}


def usage_of(result: dict[str, Any]) -> Usage:
    prompt = int(result.get("prompt_tokens") or 0)
    completion = int(result.get("completion_tokens") or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def finish_reason_of(result: dict[str, Any]) -> str:
    return "length" if result.get("finish_reason") == "length" else "stop"


def council_result(output: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A council's output as (the chair's answer, the members' part for the extension). Members' token
    counts are not kept on the council's output, so its usage is zero."""
    result = {"text": str(output.get("final") or ""), "finish_reason": "stop"}
    members = {k: output[k] for k in ("chair", "answers", "rankings", "failed_models") if k in output}
    return result, members


def extension(job: Job, council: dict[str, Any] | None = None) -> dict[str, Any]:
    ext: dict[str, Any] = {"job_id": job.id, "endpoint": job.endpoint, "attempts": job.attempts}
    if council is not None:
        ext["council"] = council
    return ext


def generation_of(job: Job) -> tuple[dict[str, Any], dict[str, Any] | None]:
    if job.task is Task.COUNCIL:
        return council_result(job.output if isinstance(job.output, dict) else {})
    return text_of(job.output), None


def chat_completion(job: Job, model: str) -> ChatCompletion:
    result, council = generation_of(job)
    return ChatCompletion(
        id=f"chatcmpl-{job.id}", created=created_of(job), model=model,
        choices=[ChatChoice(message=AssistantMessage(content=str(result.get("text") or "")),
                            finish_reason=finish_reason_of(result))],
        usage=usage_of(result), stillhouse=extension(job, council))


def completion(job: Job, model: str) -> Completion:
    result, _ = generation_of(job)
    return Completion(
        id=f"cmpl-{job.id}", created=created_of(job), model=model,
        choices=[CompletionChoice(text=str(result.get("text") or ""), finish_reason=finish_reason_of(result))],
        usage=usage_of(result), stillhouse=extension(job))


def encode_base64(vector: list[float]) -> str:
    """OpenAI's `encoding_format: base64`: little-endian float32s, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def embedding_list(job: Job, model: str, encoding_format: str) -> EmbeddingList:
    output = job.output if isinstance(job.output, dict) else {}
    vectors = output.get("embeddings") or []
    data = [Embedding(index=i, embedding=encode_base64(v) if encoding_format == "base64" else [float(x) for x in v])
            for i, v in enumerate(vectors)]
    tokens = int(output.get("prompt_tokens") or 0)
    return EmbeddingList(data=data, model=model, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
                         stillhouse=extension(job))
