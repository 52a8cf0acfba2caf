"""Per-task bounds on a job's input, checked at the API before anything is written or billed.

The GPU worker checks the same fields again (gpu_handler/schemas.py); here only what is cheap and decides
the cost of a job is bounded: tokens to generate, prompt and text sizes, texts per job, seconds asleep,
the size of `params`. The worker receives `{**params, **input}` (jobs/dispatch.py), so a field is checked
where it will be read from, and named where the caller wrote it.
"""
from __future__ import annotations

import json
import math
from typing import Any

from stillhouse.config import InputLimits
from stillhouse.errors import Unprocessable
from stillhouse.jobs.model import Task


def check_input(task: Task, input: dict[str, Any], params: dict[str, Any], limits: InputLimits) -> None:
    """Raise Unprocessable naming the first field of the request that is over its bound."""
    size = len(json.dumps(params, separators=(",", ":")))
    if size > limits.params_bytes:
        raise Unprocessable(f"params: {size} bytes; at most {limits.params_bytes}", field="params")
    fields = _Fields(input, params)
    if task is Task.GENERATE:
        fields.integer("max_new_tokens", 1, limits.max_new_tokens)
        fields.text("prompt", limits.prompt_chars)
        fields.chat("messages", limits.messages, limits.prompt_chars)
        fields.strings("stop", limits.stop_strings, limits.prompt_chars)
    elif task is Task.EMBED:
        fields.text("text", limits.text_chars)
        fields.strings("texts", limits.embed_texts, limits.text_chars)
    elif task is Task.SLEEP:
        fields.number("seconds", 0, limits.sleep_s)
    # council: its input has a schema of its own (CouncilInput), bounded in JobService._council_input


class _Fields:
    def __init__(self, input: dict[str, Any], params: dict[str, Any]) -> None:
        self._input = input
        self._params = params

    def _get(self, name: str) -> tuple[str, Any] | None:
        """(where, value) of a field as the worker will see it (input over params); None when it is absent or
        null: nothing to check."""
        if name in self._input:
            found = f"input.{name}", self._input[name]
        elif name in self._params:
            found = f"params.{name}", self._params[name]
        else:
            return None
        return found if found[1] is not None else None

    def integer(self, name: str, low: int, high: int) -> None:
        found = self._get(name)
        if found is None:
            return
        where, value = found
        if isinstance(value, bool) or not isinstance(value, int):
            raise Unprocessable(f"{where}: must be an integer", field=where)
        if not low <= value <= high:
            raise Unprocessable(f"{where}: must be between {low} and {high} (got {value})", field=where)

    def number(self, name: str, low: float, high: float) -> None:
        found = self._get(name)
        if found is None:
            return
        where, value = found
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise Unprocessable(f"{where}: must be a number", field=where)
        if not low <= value <= high:
            raise Unprocessable(f"{where}: must be between {low:g} and {high:g} (got {value:g})", field=where)

    def text(self, name: str, max_chars: int) -> None:
        found = self._get(name)
        if found is None:
            return
        where, value = found
        if not isinstance(value, str):
            raise Unprocessable(f"{where}: must be a string", field=where)
        if len(value) > max_chars:
            raise Unprocessable(f"{where}: {len(value)} characters; at most {max_chars}", field=where)

    def strings(self, name: str, max_items: int, max_chars: int) -> None:
        found = self._get(name)
        if found is None:
            return
        where, value = found
        if isinstance(value, str):  # `stop` may be one string
            return self.text(name, max_chars)
        if not isinstance(value, list):
            raise Unprocessable(f"{where}: must be a list of strings", field=where)
        if len(value) > max_items:
            raise Unprocessable(f"{where}: {len(value)} items; at most {max_items}", field=where)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise Unprocessable(f"{where}.{i}: must be a string", field=f"{where}.{i}")
            if len(item) > max_chars:
                raise Unprocessable(f"{where}.{i}: {len(item)} characters; at most {max_chars}",
                                    field=f"{where}.{i}")

    def chat(self, name: str, max_messages: int, max_chars: int) -> None:
        found = self._get(name)
        if found is None:
            return
        where, value = found
        if not isinstance(value, list):
            raise Unprocessable(f"{where}: must be a list of messages", field=where)
        if len(value) > max_messages:
            raise Unprocessable(f"{where}: {len(value)} messages; at most {max_messages}", field=where)
        total = 0
        for i, message in enumerate(value):
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, str):
                raise Unprocessable(f"{where}.{i}.content: must be a string", field=f"{where}.{i}.content")
            total += len(content)
        if total > max_chars:
            raise Unprocessable(f"{where}: {total} characters in all; at most {max_chars}", field=where)
