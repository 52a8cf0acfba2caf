"""OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`, with the statuses its SDKs map to
their exception classes. The status itself is chosen where every status is (http.resolver)."""
from __future__ import annotations

from typing import Any

from stillhouse.openai_compat.schemas import OpenAIError, OpenAIErrorDetail

#: OpenAI's `type` for each status; SDKs choose their exception class by status alone.
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error",
          415: "invalid_request_error", 422: "invalid_request_error", 429: "requests"}
#: Our domain codes that OpenAI spells its own way.
_CODES = {"unauthorized": "invalid_api_key", "quota_exceeded": "rate_limit_exceeded"}
#: Where a native job's field is, in the OpenAI request it came from.
_PARAMS = {"input.messages": "messages", "input.prompt": "prompt", "input.max_new_tokens": "max_tokens",
           "input.stop": "stop", "input.texts": "input", "input.text": "input", "input.models": "model",
           "input.max_new_tokens_council": "max_tokens"}


def openai_status(status: int) -> int:
    """OpenAI answers invalid values with 400 where our native API says 422."""
    return 400 if status == 422 else status


def error_detail(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    param = _PARAMS.get(field, field) if field else None
    if code == "quota_exceeded":
        param = None  # our quota's name is in the message; OpenAI's param is a request parameter
    detail = OpenAIErrorDetail(message=message, type=kind, param=param, code=_CODES.get(code, code))
    return detail.model_dump()


def error_body(status: int, code: str, message: str, field: str | None) -> str:
    return OpenAIError.model_validate({"error": error_detail(status, code, message, field)}).model_dump_json()
