"""`stillhouse chat "..." --model M`: one chat completion through the OpenAI-compatible route (docs/openai.md).

It posts to /v1/chat/completions as any OpenAI client would (with plain `requests`: the openai SDK is only a
dev dependency) and prints the answer: token by token as the server-sent events arrive (`--stream`, the
default), or at once (`--no-stream`). The job behind the answer is printed on stderr at the end (or is
`stillhouse.job_id` in the `--json` output), so `stillhouse trace JOB_ID` follows up on it.

Behind API Gateway's HTTP API a stream arrives all at once; the streaming Function URL
(`OpenAIStreamUrl`) sends it as it is made (docs/openai.md).
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import requests
import typer
from rich.markup import escape

from stillhouse_local.cli_common import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    JsonOption,
    KeyOption,
    UrlOption,
    api_client,
    errors,
    fail,
    print_json,
)

app = typer.Typer()

#: The header that names the job behind an answer (http.resolver.JOB_ID_HEADER).
JOB_ID_HEADER = "x-stillhouse-job-id"


@app.command(epilog="""Examples:

  stillhouse chat "Name three uses of copper." --model HuggingFaceTB/SmolLM2-135M-Instruct

  stillhouse chat "hi" --model echo-a --no-stream --json | jq -r '.choices[0].message.content'

  stillhouse chat "Is P = NP?" --model council:echo-a,echo-b,echo-c --no-stream

  stillhouse chat "Summarise:" --system "Be brief." --max-tokens 64 --temperature 0 --seed 7""")
def chat(
    ctx: typer.Context,
    message: Annotated[str, typer.Argument(help="the user's message (- reads it from stdin)", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help="a model of GET /v1/models, or council[:a,b,c]")],
    system: Annotated[str | None, typer.Option(help="a system message before the user's")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="at most this many tokens")] = None,
    temperature: Annotated[float | None, typer.Option(min=0.0, max=2.0,
                                                      help="0 = greedy; OpenAI's default (1.0) when not given")]
    = None,
    seed: Annotated[int | None, typer.Option(min=0, help="a sampling seed, for repeatable answers")] = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="print tokens as they arrive")] = True,
    idempotency_key: Annotated[str | None, typer.Option(help="ask once per key: a retry after a timeout gets the "
                                                             "same job (and its answer once it has one)")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the answer")] = 120.0,
    url: UrlOption = None, key: KeyOption = None, as_json: JsonOption = False,
) -> None:
    """Ask a model (or a council) one question through the OpenAI-compatible route; print its answer.

    The job behind the answer is printed on stderr at the end (in --json: stillhouse.job_id).

    Exit codes: 0 answered; 1 refused or failed (the error and its parameter are printed; past the
    server's wait bound, the job named goes on); 2 bad usage; 3 API unreachable."""
    text = sys.stdin.read().rstrip("\n") if message == "-" else message
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    body: dict[str, Any] = {"model": model, "messages": messages}
    for name, value in (("max_tokens", max_tokens), ("temperature", temperature), ("seed", seed)):
        if value is not None:
            body[name] = value
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    api = api_client(ctx, url, key)
    if not api.key:
        fail("an API key is needed: --key or STILLHOUSE_API_KEY (`stillhouse up` prints one)", code=EXIT_USAGE,
             field="--key")
    headers = {"Authorization": f"Bearer {api.key}"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    target = api.url + "/v1/chat/completions"
    try:
        response = requests.post(target, json=body, headers=headers, stream=stream, timeout=(10.0, timeout))
    except requests.RequestException as err:
        fail(f"cannot reach the API at {api.url}: {err.__class__.__name__} (is `stillhouse up` running? "
             "--url or STILLHOUSE_API_URL)", code=EXIT_UNREACHABLE)
    with response:
        job_id = response.headers.get(JOB_ID_HEADER)
        if not response.ok:
            refused(response, job_id)
        if stream and response.headers.get("content-type", "").startswith("text/event-stream"):
            answer = _streamed(response, echo=not as_json)
        else:
            answer = _json(response)
            if not as_json:
                _print_text(_content(answer))
    job_id = job_id or (answer.get("stillhouse") or {}).get("job_id")
    if as_json:
        print_json(answer)
        return
    errors.print(f"[dim]{escape(_footer(answer, job_id))}[/]", highlight=False, soft_wrap=True)


def refused(response: requests.Response, job_id: str | None) -> None:
    """An error answer in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`): exit 1."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        fail(f"{response.status_code} from POST /v1/chat/completions: {response.text[:300]}")
    where = f" (job {job_id})" if job_id and job_id not in str(error.get("message")) else ""
    retry = response.headers.get("retry-after")
    after = f"; retry after {retry} s" if retry else ""
    fail(f"{response.status_code} {error.get('code') or error.get('type') or ''}: {error.get('message', '')}"
         f"{where}{after}", code=EXIT_REFUSED, field=error.get("param"))


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        fail(f"not JSON from POST /v1/chat/completions: {response.text[:300]}")
    if not isinstance(data, dict):
        fail(f"unexpected answer from POST /v1/chat/completions: {str(data)[:300]}")
    return data


def events(response: requests.Response) -> Iterator[Any]:
    """The `data:` payloads of a server-sent event stream, decoded, until `[DONE]`."""
    for line in response.iter_lines(decode_unicode=True):
        if not line or not line.startswith("data:"):
            continue  # blank separators, comments (": keep-alive"), other fields
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            return
        try:
            yield json.loads(data)
        except json.JSONDecodeError:
            fail(f"not JSON in the event stream: {data[:300]}")
    fail("the event stream ended without [DONE]: the answer may be incomplete")


def _streamed(response: requests.Response, *, echo: bool) -> dict[str, Any]:
    """Reads the chunks (printing each delta's text as it comes when `echo`); returns the whole answer in
    the shape of a chat.completion, so that --json reads the same streamed or not."""
    parts: list[str] = []
    first: dict[str, Any] = {}
    finish_reason = None
    usage = None
    ended_line = True
    for chunk in events(response):
        if isinstance(chunk, dict) and isinstance(chunk.get("error"), dict):
            if echo and not ended_line:
                sys.stdout.write("\n")
            error = chunk["error"]
            fail(f"the stream broke off: {error.get('code') or error.get('type') or ''}: {error.get('message', '')}",
                 field=error.get("param"))
        if not isinstance(chunk, dict):
            continue
        first = first or chunk
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if text := delta.get("content"):
                parts.append(text)
                if echo:
                    sys.stdout.write(text)
                    sys.stdout.flush()
                    ended_line = text.endswith("\n")
            finish_reason = choice.get("finish_reason") or finish_reason
    if echo and not ended_line:
        sys.stdout.write("\n")
        sys.stdout.flush()
    answer: dict[str, Any] = {
        "id": first.get("id"), "object": "chat.completion", "created": first.get("created"),
        "model": first.get("model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(parts)},
                     "finish_reason": finish_reason}],
        "usage": usage,
    }
    job_id = response.headers.get(JOB_ID_HEADER)
    if job_id:
        answer["stillhouse"] = {"job_id": job_id}
    return answer


def _content(answer: dict[str, Any]) -> str:
    choices = answer.get("choices") or [{}]
    return str((choices[0].get("message") or {}).get("content") or "")


def _print_text(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _footer(answer: dict[str, Any], job_id: str | None) -> str:
    """One line on stderr: the job, the model, why it stopped, the tokens, a council's members."""
    parts = [f"job {job_id or '?'}", str(answer.get("model") or "")]
    choices = answer.get("choices") or [{}]
    if reason := choices[0].get("finish_reason"):
        parts.append(f"finish {reason}")
    if usage := answer.get("usage"):
        parts.append(f"tokens {usage.get('prompt_tokens', 0)} in, {usage.get('completion_tokens', 0)} out")
    extension = answer.get("stillhouse") or {}
    if endpoint := extension.get("endpoint"):
        parts.append(f"endpoint {endpoint} (attempt {extension.get('attempts')})")
    council = extension.get("council")
    if isinstance(council, dict) and council.get("answers"):
        parts.append(f"council of {len(council['answers'])}: " + ", ".join(str(a.get("model")) for a in
                                                                          council["answers"]))
    return " · ".join(p for p in parts if p)
