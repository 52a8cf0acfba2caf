"""Real models end to end: HTTP API -> dispatch -> RunPod stand-in -> the real gpu_handler (SmolLM2-135M
and MiniLM from the packages, on CPU) -> webhook; and streaming through GET /v1/jobs/{id}/stream.

Its own embedded stack with two endpoints: `gen` (a default worker) and `genstream` (a worker started
with WORKER_STREAMING=true through StackOptions.endpoint_env, hence registered with streaming=True), so
`stream: true` jobs go to `genstream` and the others to `gen`.

The stack runs in a child process: an embedded stack configures its whole process (moto's in-memory
backends are process-global — a second stack's CreateSecret/CreateStack collide with the session
stack's — and so are os.environ, moto's Lambda hook and the container), so two cannot share one.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.stack import TERMINAL_NAMES as TERMINAL
from tests.support.stack import Api

pytestmark = pytest.mark.slow

PROMPT = "What is the capital of France?"
MAX_NEW_TOKENS = 12
JOB_TIMEOUT_S = 180.0  # model load on a busy 2-core machine; no test asserts on timings
REPO_ROOT = Path(__file__).resolve().parents[2]
# Taken at import (collection), before any stack in this process has set its variables.
_CLEAN_ENV = dict(os.environ)

_STACK_PROCESS = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from stillhouse_local.stack import EmbeddedStack, StackOptions

    options = StackOptions(
        port=0,
        endpoints=["gen", "genstream"],
        endpoint_env={"genstream": {"WORKER_STREAMING": "true"}},
        parameters={"QueueVisibilityTimeout": "5", "MaxReceiveCount": "3"},
        webhook_retry_delay_s=0.2,
        environment={"STILLHOUSE_WEBHOOK_RESOLVER": "loopback-only"},  # webhook names: no DNS lookups
        log_dir=Path(sys.argv[1]),
    )
    with EmbeddedStack(options) as stack:
        other = stack.create_api_key("other-tenant")
        print(json.dumps({"url": stack.url, "key": stack.dev_api_key, "other_key": other}), flush=True)
        sys.stdin.read()  # runs until the test closes our stdin
""")


def _drain(stream, path: Path) -> None:
    with path.open("w") as out:
        for line in stream:
            out.write(line)


@pytest.fixture(scope="module")
def gen_stack(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("gen-logs")
    log_path = log_dir / "stack.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-c", _STACK_PROCESS, str(log_dir)], cwd=REPO_ROOT,
                                env=_CLEAN_ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                text=True)
    try:
        line = proc.stdout.readline()  # the stack's address once it is up (pytest-timeout bounds this)
        if not line:
            proc.wait(timeout=10)
            pytest.fail(f"the stack process exited ({proc.returncode}):\n{log_path.read_text()[-4000:]}")
        info = json.loads(line)
        # The stack's functions log to stdout as on Lambda; read it all the time, or a full pipe blocks them.
        threading.Thread(target=_drain, args=(proc.stdout, log_dir / "stdout.log"), daemon=True).start()
        yield SimpleNamespace(url=info["url"], dev_api_key=info["key"], other_key=info["other_key"])
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def gen_api(gen_stack):
    return Api(gen_stack.url, gen_stack.dev_api_key)


@pytest.fixture(scope="module")
def plain_generation(gen_api):
    """One non-streamed greedy generation, shared: its text is what the stream must add up to."""
    job_id = gen_api.submit("generate", {"prompt": PROMPT, "max_new_tokens": MAX_NEW_TOKENS})
    return gen_api.wait(job_id, timeout=JOB_TIMEOUT_S)


def stream_until_done(api: Api, job_id: str) -> tuple[list[dict], list[dict]]:
    """Poll the stream like a client: every answer until a terminal status (which carries the rest)."""
    pages, chunks = [], []
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        response = api.get(f"/v1/jobs/{job_id}/stream")
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        chunks += page["stream"]
        if page["status"] in TERMINAL:
            break
        time.sleep(0.1)
    return pages, chunks


def test_endpoints_are_registered_by_kind(gen_api):
    rows = {row["name"]: row for row in gen_api.get("/v1/endpoints").json()}
    assert (rows["gen"]["streaming"], rows["genstream"]["streaming"]) == (False, True)


def test_a_generate_job_completes_with_text_token_counts_and_finish_reason(plain_generation):
    job = plain_generation
    assert job["status"] == "COMPLETED", job.get("error")
    assert job["endpoint"] == "gen"  # plain jobs stay off the streaming endpoint
    out = job["output"]
    assert isinstance(out["text"], str) and out["text"].strip()
    assert out["finish_reason"] in ("stop", "length")
    assert out["prompt_tokens"] > 0 and 1 <= out["completion_tokens"] <= MAX_NEW_TOKENS
    assert out["model"] == "SmolLM2-135M-Instruct"


def test_an_embed_job_returns_normalised_vectors(gen_api):
    texts = ["the cat sat on the mat", "stillhouse routes GPU jobs"]
    job = gen_api.wait(gen_api.submit("embed", {"texts": texts}), timeout=JOB_TIMEOUT_S)
    assert job["status"] == "COMPLETED", job.get("error")
    out = job["output"]
    assert out["count"] == len(texts) and len(out["embeddings"]) == len(texts)
    assert out["dims"] == 384 and all(len(v) == out["dims"] for v in out["embeddings"])
    for vector in out["embeddings"]:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, abs_tol=1e-3)


def test_a_streamed_generation_adds_up_to_the_plain_text(gen_api, plain_generation):
    assert plain_generation["status"] == "COMPLETED"
    job_id = gen_api.submit("generate", {"prompt": PROMPT, "max_new_tokens": MAX_NEW_TOKENS, "stream": True})
    pages, chunks = stream_until_done(gen_api, job_id)
    assert pages[-1]["status"] == "COMPLETED", pages[-1]
    assert {p["id"] for p in pages} == {job_id}
    assert len(chunks) >= 2  # really streamed, not one final blob
    texts = [c["output"]["text"] for c in chunks]
    assert "".join(texts) == plain_generation["output"]["text"]  # greedy: same text either way
    last = chunks[-1]["output"]
    assert last["finish_reason"] == plain_generation["output"]["finish_reason"]
    assert last["completion_tokens"] == plain_generation["output"]["completion_tokens"]

    job = gen_api.get(f"/v1/jobs/{job_id}").json()
    assert job["endpoint"] == "genstream"
    # A streaming worker's result is RunPod's aggregate: the list of every chunk.
    assert [c["text"] for c in job["output"]] == texts
    # Polling after the end: the status, nothing new.
    after = gen_api.get(f"/v1/jobs/{job_id}/stream").json()
    assert (after["status"], after["stream"]) == ("COMPLETED", [])


def test_the_stream_of_a_plain_job_is_its_status_and_no_chunks(gen_api, plain_generation):
    page = gen_api.get(f"/v1/jobs/{plain_generation['id']}/stream").json()
    assert page == {"id": plain_generation["id"], "status": "COMPLETED", "attempt": 1, "stream": []}


def test_another_tenants_stream_is_not_found(gen_api, gen_stack, plain_generation):
    other = Api(gen_stack.url, gen_stack.other_key)
    for job_id in (plain_generation["id"], "no-such-job"):
        response = other.get(f"/v1/jobs/{job_id}/stream")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert Api(gen_stack.url, None).get(f"/v1/jobs/{plain_generation['id']}/stream").status_code == 401


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
def test_a_bad_generate_parameter_fails_the_job_naming_the_field(gen_api, stream):
    # Within the API's bounds (it checks sizes, not every sampling knob); the worker refuses it.
    job_id = gen_api.submit("generate", {"prompt": PROMPT, "top_p": 0, "stream": stream})
    job = gen_api.wait(job_id, timeout=JOB_TIMEOUT_S)
    assert job["status"] == "FAILED"
    assert job["endpoint"] == ("genstream" if stream else "gen")
    assert job["error_class"] == "terminal"
    assert "top_p" in job["error"]


def test_the_cli_streams_a_generation_as_it_is_made(gen_stack, plain_generation):
    from stillhouse_local.cli import app
    from typer.testing import CliRunner

    env = {"STILLHOUSE_API_URL": gen_stack.url, "STILLHOUSE_API_KEY": gen_stack.dev_api_key, "COLUMNS": "200"}
    job_input = json.dumps({"prompt": PROMPT, "max_new_tokens": MAX_NEW_TOKENS})
    result = CliRunner().invoke(app, ["submit", "--task", "generate", "--input", job_input, "--stream",
                                      "--timeout", str(JOB_TIMEOUT_S)], env=env)
    assert result.exit_code == 0, result.output
    assert "COMPLETED" in result.output
    streamed = next(line for line in result.output.splitlines() if line.startswith("tokens streamed"))
    assert int(streamed.split()[-1]) >= 2  # chunk by chunk, not one final blob
    assert plain_generation["output"]["text"].strip().splitlines()[0][:20] in result.output  # greedy: same text


# --- the OpenAI-compatible routes on the real models (the official SDK as the client) ---------------

CHAT = [{"role": "user", "content": PROMPT}]


@pytest.fixture(scope="module")
def openai_client(gen_stack):
    import openai

    return openai.OpenAI(base_url=f"{gen_stack.url}/v1", api_key=gen_stack.dev_api_key, max_retries=0,
                         timeout=JOB_TIMEOUT_S)


def test_a_greedy_openai_chat_completion_equals_the_native_job(gen_api, openai_client):
    native = gen_api.wait(gen_api.submit("generate", {"messages": CHAT, "max_new_tokens": MAX_NEW_TOKENS,
                                                      "temperature": 0}), timeout=JOB_TIMEOUT_S)
    assert native["status"] == "COMPLETED", native.get("error")
    completion = openai_client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=CHAT, temperature=0,
                                                       max_tokens=MAX_NEW_TOKENS)
    assert completion.choices[0].message.content == native["output"]["text"]
    assert completion.choices[0].finish_reason == native["output"]["finish_reason"]
    assert completion.usage.prompt_tokens == native["output"]["prompt_tokens"] > 0
    assert completion.usage.completion_tokens == native["output"]["completion_tokens"]


def test_an_openai_stream_arrives_in_chunks_and_adds_up_to_the_answer(gen_api, openai_client):
    answer = openai_client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=CHAT, temperature=0,
                                                   max_tokens=MAX_NEW_TOKENS)
    stream = openai_client.chat.completions.with_raw_response.create(
        model="SmolLM2-135M-Instruct", messages=CHAT, temperature=0, max_tokens=MAX_NEW_TOKENS, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream.parse())
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2  # token by token from the streaming endpoint, not one final blob
    assert "".join(pieces) == answer.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens
    job = gen_api.get(f"/v1/jobs/{stream.headers['x-stillhouse-job-id']}").json()
    assert job["endpoint"] == "genstream"


def test_openai_embeddings_have_the_count_and_dimension_of_minilm(openai_client):
    import base64
    import struct

    texts = ["the cat sat on the mat", "stillhouse routes GPU jobs", "copper conducts"]
    result = openai_client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    assert [e.index for e in result.data] == [0, 1, 2]
    assert all(len(e.embedding) == 384 for e in result.data)
    assert result.usage.prompt_tokens > 0
    one = openai_client.embeddings.with_raw_response.create(model="all-MiniLM-L6-v2", input=texts[0],
                                                            encoding_format="base64")
    packed = one.http_response.json()["data"][0]["embedding"]
    vector = struct.unpack("<384f", base64.b64decode(packed))
    assert math.isclose(sum(x * x for x in vector), 1.0, abs_tol=1e-3)
    assert all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(vector, result.data[0].embedding, strict=True))
