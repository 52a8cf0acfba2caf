"""Input limits at the edge: a job over a per-task bound is refused at the API with 422 naming the field,
before it is stored or billed; the bounds never exceed what the GPU worker itself accepts."""
import json

import pytest

from gpu_handler.schemas import MAX_SLEEP_S, GenerateInput
from gpu_handler.settings import WorkerSettings
from stillhouse.config import InputLimits
from stillhouse.errors import Unprocessable
from stillhouse.http.resolver import nests_deeper
from stillhouse.jobs.input_limits import check_input
from stillhouse.jobs.model import Task

LIMITS = InputLimits()


def test_the_edge_never_accepts_more_than_the_worker_does():
    worker = WorkerSettings()
    assert LIMITS.max_new_tokens <= worker.max_new_tokens_limit
    assert LIMITS.embed_texts <= worker.max_embed_texts
    assert LIMITS.sleep_s <= MAX_SLEEP_S
    assert LIMITS.stop_strings <= GenerateInput.model_fields["stop"].metadata[0].max_length


@pytest.mark.parametrize(("task", "input", "params", "field"), [
    (Task.GENERATE, {"prompt": "hi", "max_new_tokens": LIMITS.max_new_tokens + 1}, {}, "input.max_new_tokens"),
    (Task.GENERATE, {"prompt": "hi"}, {"max_new_tokens": 0}, "params.max_new_tokens"),
    (Task.GENERATE, {"prompt": "hi", "max_new_tokens": "many"}, {}, "input.max_new_tokens"),
    (Task.GENERATE, {"prompt": "x" * (LIMITS.prompt_chars + 1)}, {}, "input.prompt"),
    (Task.GENERATE, {"messages": [{"role": "user", "content": "x"}] * (LIMITS.messages + 1)}, {}, "input.messages"),
    (Task.GENERATE, {"messages": [{"role": "user", "content": "x" * LIMITS.prompt_chars}] * 2}, {},
     "input.messages"),
    (Task.GENERATE, {"prompt": "hi", "stop": ["."] * (LIMITS.stop_strings + 1)}, {}, "input.stop"),
    (Task.EMBED, {"texts": ["a"] * (LIMITS.embed_texts + 1)}, {}, "input.texts"),
    (Task.EMBED, {"texts": ["a", "x" * (LIMITS.text_chars + 1)]}, {}, "input.texts.1"),
    (Task.EMBED, {"text": "x" * (LIMITS.text_chars + 1)}, {}, "input.text"),
    (Task.SLEEP, {"seconds": LIMITS.sleep_s + 1}, {}, "input.seconds"),
    (Task.SLEEP, {"seconds": -1}, {}, "input.seconds"),
    (Task.ECHO, {}, {"blob": "x" * LIMITS.params_bytes}, "params"),
])
def test_a_job_over_a_bound_is_refused_naming_the_field(task, input, params, field):
    with pytest.raises(Unprocessable) as refused:
        check_input(task, input, params, LIMITS)
    assert refused.value.field == field


@pytest.mark.parametrize(("task", "input", "params"), [
    (Task.GENERATE, {"prompt": "hi", "max_new_tokens": LIMITS.max_new_tokens, "stop": "."}, {}),
    (Task.GENERATE, {"messages": [{"role": "user", "content": "hi"}]}, {"max_new_tokens": 8}),
    (Task.EMBED, {"texts": ["a"] * LIMITS.embed_texts}, {}),
    (Task.SLEEP, {"seconds": LIMITS.sleep_s}, {}),
    (Task.ECHO, {"anything": [1, 2, 3]}, {}),
])
def test_a_job_within_its_bounds_passes(task, input, params):
    check_input(task, input, params, LIMITS)


def test_nesting_is_measured_outside_strings_only():
    deep = "[" * 30 + "]" * 30
    assert nests_deeper(deep, 24)
    assert not nests_deeper(deep, 30)
    quoted = json.dumps({"text": "[" * 100 + "{" * 100})
    assert not nests_deeper(quoted, 24)
    assert nests_deeper(json.dumps({"a": "\\\"[", "b": [[[[[]]]]]}), 5)
    assert not nests_deeper(json.dumps({"a": "\\\"[", "b": [[[[]]]]}), 5)
