"""`stillhouse chat`: one chat completion through the OpenAI-compatible route of the embedded stack, streamed
or not, as a person (or a script with --json) sees it. The `echo-*` models answer "<model> says: <message>"."""
import json
import re

import pytest
from stillhouse_local.cli import app
from typer.testing import CliRunner


@pytest.fixture
def chat(stack):
    """Run `stillhouse chat ARGS...` configured by the environment; returns the result (stdout and stderr apart)."""
    runner = CliRunner()
    env = {"STILLHOUSE_API_URL": stack.url, "STILLHOUSE_API_KEY": stack.dev_api_key, "COLUMNS": "200"}
    return lambda *args, **kw: runner.invoke(app, ["chat", *args], env={**env, **kw.pop("env", {})}, **kw)


def job_id_on_stderr(result) -> str:
    found = re.search(r"job ([0-9a-f]{32})", result.stderr)
    assert found, result.stderr
    return found.group(1)


def test_a_streamed_answer_is_printed_and_its_job_named_on_stderr(chat, api):
    result = chat("hello chat", "--model", "echo-a")
    assert result.exit_code == 0, result.output
    assert result.stdout == "echo-a says: hello chat\n"
    assert "finish stop" in result.stderr
    job = api.wait(job_id_on_stderr(result))
    assert job["status"] == "COMPLETED" and job["task"] == "generate" and job["model"] == "echo-a"


def test_no_stream_json_is_the_chat_completion_with_its_job(chat, api):
    result = chat("for scripts", "--model", "echo-b", "--no-stream", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "echo-b says: for scripts"
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] == 4
    assert api.wait(answer["stillhouse"]["job_id"])["status"] == "COMPLETED"


def test_streamed_json_reads_like_the_non_streamed_answer(chat):
    result = chat("same shape", "--model", "echo-a", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["choices"][0]["message"]["content"] == "echo-a says: same shape"
    assert answer["usage"]["prompt_tokens"] == 2  # stream_options.include_usage was asked for
    assert re.fullmatch(r"[0-9a-f]{32}", answer["stillhouse"]["job_id"])


def test_options_become_the_jobs_sampling_and_messages(chat, api):
    result = chat("one two three", "--model", "echo-a", "--system", "be brief", "--max-tokens", "2",
                  "--temperature", "0", "--seed", "7", "--no-stream")
    assert result.exit_code == 0, result.output
    assert result.stdout == "echo-a says:\n"
    assert "finish length" in result.stderr
    job = api.wait(job_id_on_stderr(result))
    sent = job["input"]
    assert sent["messages"] == [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "one two three"}]
    assert (sent["max_new_tokens"], sent["temperature"], sent["seed"]) == (2, 0, 7)


def test_the_message_from_stdin(chat):
    result = chat("-", "--model", "echo-c", "--no-stream", input="piped in\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "echo-c says: piped in\n"


def test_refusals_exit_1_naming_the_parameter(chat):
    # `local` serves any model name ("*"), so the worker is the one that refuses it: 400, not retried.
    unknown = chat("hi", "--model", "no-such-model")
    assert unknown.exit_code == 1
    assert "400 job_failed" in unknown.stderr and "ModelNotServed" in unknown.stderr

    too_many = chat("hi", "--model", "echo-a", "--max-tokens", "100000000", "--no-stream")
    assert too_many.exit_code == 1
    assert "400" in too_many.stderr and "field: max_tokens" in too_many.stderr


def test_usage_errors_exit_2_and_an_unreachable_api_exits_3(chat):
    out_of_range = chat("hi", "--model", "echo-a", "--temperature", "3")
    assert out_of_range.exit_code == 2

    no_key = chat("hi", "--model", "echo-a", env={"STILLHOUSE_API_KEY": None, "STILLHOUSE_DEV_API_KEY": None})
    assert no_key.exit_code == 2
    assert "field: --key" in no_key.stderr

    unreachable = chat("hi", "--model", "echo-a", "--url", "http://127.0.0.1:9")
    assert unreachable.exit_code == 3
    assert "cannot reach the API" in unreachable.stderr


def test_a_bad_key_is_refused(chat):
    result = chat("hi", "--model", "echo-a", "--key", "sk-not-a-key")
    assert result.exit_code == 1
    assert "401" in result.stderr



def test_a_council_answers_with_its_chair_and_names_its_members(chat):
    result = chat("Name a metal.", "--model", "council:echo-a,echo-b", "--no-stream")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()  # the chair's answer
    members = re.search(r"council of 2: (.*)", result.stderr)
    assert members and sorted(members.group(1).strip().split(", ")) == ["echo-a", "echo-b"], result.stderr
