"""What the OpenAI-compatible front door costs a caller, on the embedded stack (docs/openai.md).

    .venv/bin/python benchmarks/openai_overhead.py [--calls 100] [--concurrency 1 8] [--ttft-calls 30]
    .venv/bin/python benchmarks/openai_overhead.py --quick     # CI's smoke run: a few calls of each

Prints ONE JSON object on stdout; progress goes to stderr. Everything runs in this process on 127.0.0.1: moto,
the in-process Lambdas, the HTTP shim, the RunPod stand-in with the real gpu_handler worker, two endpoints:
`local` (a plain worker) and `localstream` (WORKER_STREAMING=true, so it takes the `stream: true` jobs).

1. **Answer latency**, the same job three ways, `--calls` each at each `--concurrency` (closed-loop callers):
   `openai`          POST /v1/chat/completions {"model": "echo-a", "messages": [...], "temperature": 0}
                     -> the 200 with the answer. The route submits a native job and waits for it, looking at
                     it after 20, 50, 100, 150, 200 ms and then every `openai.poll_s` (250 ms).
   `native_poll`     POST /v1/jobs {"task": "generate", "model": "echo-a", "input": <the same input>} -> GET
                     /v1/jobs/{id} every `--poll-ms` (10 ms) until it is terminal.
   `native_webhook`  the same POST with a `webhook` -> the signed webhook's arrival on 127.0.0.1.
   The three are interleaved in `--blocks` rounds so that the machine's load drifts over all of them alike.
   `openai_minus_*_p50_ms` is the front door's overhead over each native way of waiting.
2. **Time to first token** at concurrency 1, `--ttft-calls` each:
   `openai_stream`   POST /v1/chat/completions with `stream: true` -> the first SSE chunk with text.
   `runpod_stream`   the same input straight to the stand-in's RunPod API: POST /v2/localstream/run, then
                     GET /v2/localstream/stream/{id} every `--stream-poll-ms` (100 ms, as the front door's own
                     reads of RunPod's /stream) -> the first chunk. No router at all: queue, dispatch, DynamoDB.
   The echo models answer in ONE chunk, with no model weights (so no `sleep` and nothing to download): the
   first token is the whole answer here, and `ttft` measures the path, not a model's decoding.

Counts and time are bounded (`--max-run-s` per measured set); only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script, this directory is on sys.path: the parts shared with overhead.py live beside it.
from overhead_lib.load import Receiver
from overhead_lib.stats import summary

MODEL = "echo-a"
MESSAGES = [{"role": "user", "content": "x"}]
EXPECTED = f"{MODEL} says: x"
#: The job a chat completion runs as (translate.chat_job): the same input for the native calls.
JOB_INPUT = {"messages": MESSAGES, "temperature": 0.0, "top_p": 1.0}
CHAT = {"model": MODEL, "messages": MESSAGES, "temperature": 0}
NATIVE = {"task": "generate", "model": MODEL, "input": JOB_INPUT}
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
MODES = ("openai", "native_poll", "native_webhook")


def log(message: str) -> None:
    print(f"[openai_overhead] {message}", file=sys.stderr, flush=True)


class Failed(Exception):
    pass


# --------------------------------------------------------------------------------------------------------- #
#  One call of each kind: returns its latency in ms (or, for the streams, {"ttft_ms", "total_ms"})           #
# --------------------------------------------------------------------------------------------------------- #
def openai_call(session: Any, url: str, **_: Any) -> float:
    t0 = time.perf_counter()
    response = session.post(url + "/v1/chat/completions", json=CHAT, timeout=30)
    ms = (time.perf_counter() - t0) * 1000
    if response.status_code != 200:
        raise Failed(f"openai {response.status_code}: {response.text[:120]}")
    if response.json()["choices"][0]["message"]["content"] != EXPECTED:
        raise Failed("openai: wrong answer")
    return ms


def native_poll_call(session: Any, url: str, poll_ms: float, **_: Any) -> float:
    t0 = time.perf_counter()
    response = session.post(url + "/v1/jobs", json=NATIVE, timeout=30)
    if response.status_code != 202:
        raise Failed(f"submit {response.status_code}: {response.text[:120]}")
    job_id = response.json()["id"]
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        job = session.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
        if job.get("status") in TERMINAL:
            ms = (time.perf_counter() - t0) * 1000
            if job["status"] != "COMPLETED" or job["output"].get("text") != EXPECTED:
                raise Failed(f"native job {job['status']}")
            return ms
        time.sleep(poll_ms / 1000)
    raise Failed("native job not terminal in 30 s")


def native_webhook_call(session: Any, url: str, receiver: Receiver, **_: Any) -> float:
    t0 = time.perf_counter()
    response = session.post(url + "/v1/jobs", json={**NATIVE, "webhook": receiver.url}, timeout=30)
    if response.status_code != 202:
        raise Failed(f"submit {response.status_code}: {response.text[:120]}")
    arrival = receiver.wait(response.json()["id"], 30)
    if arrival is None:
        raise Failed("no webhook in 30 s")
    t_arrived, _, body = arrival  # perf_counter time, taken as the request arrived
    if body.get("status") != "COMPLETED":
        raise Failed(f"webhook says {body.get('status')}")
    return (t_arrived - t0) * 1000


def openai_stream_call(session: Any, url: str, **_: Any) -> dict[str, float]:
    t0 = time.perf_counter()
    first = None
    text = ""
    with session.post(url + "/v1/chat/completions", json={**CHAT, "stream": True}, stream=True, timeout=30) as r:
        if r.status_code != 200:
            raise Failed(f"openai stream {r.status_code}: {r.text[:120]}")
        job_id = r.headers.get("x-stillhouse-job-id")
        for line in r.iter_lines(decode_unicode=True):
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise Failed(f"stream error: {chunk['error']}")
            for choice in chunk.get("choices") or []:
                if content := (choice.get("delta") or {}).get("content"):
                    first = first or time.perf_counter()
                    text += content
    total = time.perf_counter()
    if text != EXPECTED or first is None:
        raise Failed(f"openai stream: wrong text {text!r}")
    return {"ttft_ms": (first - t0) * 1000, "total_ms": (total - t0) * 1000, "job_id": job_id}


def runpod_stream_call(session: Any, standin_api: str, runpod_key: str, stream_poll_ms: float,
                       **_: Any) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {runpod_key}"}
    base = f"{standin_api}/localstream"
    payload = {"input": {**JOB_INPUT, "task": "generate", "model": MODEL, "stream": True}}
    t0 = time.perf_counter()
    response = session.post(base + "/run", json=payload, headers=headers, timeout=30)
    if response.status_code != 200:
        raise Failed(f"runpod /run {response.status_code}: {response.text[:120]}")
    job_id = response.json()["id"]
    first = None
    text = ""
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        page = session.get(f"{base}/stream/{job_id}", headers=headers, timeout=30).json()
        for item in page.get("stream") or []:
            out = item.get("output")
            piece = out.get("text") if isinstance(out, dict) else out
            if piece:
                first = first or time.perf_counter()
                text += str(piece)
        if page.get("status") in TERMINAL:
            break
        time.sleep(stream_poll_ms / 1000)
    total = time.perf_counter()
    if text != EXPECTED or first is None:
        raise Failed(f"runpod stream: wrong text {text!r} ({page.get('status')})")
    return {"ttft_ms": (first - t0) * 1000, "total_ms": (total - t0) * 1000}


CALLS: dict[str, Callable[..., Any]] = {"openai": openai_call, "native_poll": native_poll_call,
                                        "native_webhook": native_webhook_call}


def closed_loop(call: Callable[..., Any], n: int, concurrency: int, deadline_s: float, api_key: str,
                **kw: Any) -> tuple[list[Any], Counter[str], float]:
    """`concurrency` callers, each calling again as soon as its last call ended, until `n` calls or the deadline."""
    import requests

    results: list[Any] = []
    failures: Counter[str] = Counter()
    lock = threading.Lock()
    issued = [0]
    stop_at = time.monotonic() + deadline_s

    def caller() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {api_key}"
        while True:
            with lock:
                if issued[0] >= n or time.monotonic() > stop_at:
                    return
                issued[0] += 1
            try:
                value = call(session, **kw)
            except (Failed, requests.RequestException, ValueError, KeyError) as err:
                with lock:
                    failures[str(err)[:160]] += 1
                continue
            with lock:
                results.append(value)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=caller, name=f"openai-bench-{i}", daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, failures, time.perf_counter() - t0


def _p50(s: dict[str, Any]) -> float | None:
    return s.get("p50")


def measure_answers(args: argparse.Namespace, env: dict[str, Any], concurrency: int) -> dict[str, Any]:
    """The three ways of waiting, `args.calls` each, interleaved in `args.blocks` rounds."""
    latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
    failures: dict[str, Counter[str]] = {mode: Counter() for mode in MODES}
    walls: dict[str, float] = dict.fromkeys(MODES, 0.0)
    per_block = [args.calls // args.blocks + (1 if b < args.calls % args.blocks else 0) for b in range(args.blocks)]
    for b, n in enumerate(per_block):
        for mode in MODES:
            got, failed, wall = closed_loop(CALLS[mode], n, concurrency, args.max_run_s / args.blocks, **env)
            latencies[mode] += got
            failures[mode] += failed
            walls[mode] += wall
        log(f"  concurrency {concurrency}: round {b + 1}/{args.blocks} done")
    out: dict[str, Any] = {}
    for mode in MODES:
        out[mode] = {**summary(latencies[mode]),
                     "calls_per_s": round(len(latencies[mode]) / walls[mode], 2) if walls[mode] else None}
        if failures[mode]:
            out[mode]["failures"] = dict(failures[mode])
    for native in ("native_poll", "native_webhook"):
        a, b = _p50(out["openai"]), _p50(out[native])
        out[f"openai_minus_{native}_p50_ms"] = None if a is None or b is None else round(a - b, 1)
    return out


def measure_ttft(args: argparse.Namespace, env: dict[str, Any], session: Any, url: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, call in (("openai_stream", openai_stream_call), ("runpod_stream", runpod_stream_call)):
        got, failed, _ = closed_loop(call, args.ttft_calls, 1, args.max_run_s, **env)
        out[name] = {"ttft_ms": summary([g["ttft_ms"] for g in got]),
                     "total_ms": summary([g["total_ms"] for g in got])}
        if failed:
            out[name]["failures"] = dict(failed)
        if name == "openai_stream":  # where the streamed jobs ran (read after the window)
            where = Counter(session.get(f"{url}/v1/jobs/{g['job_id']}", timeout=10).json().get("endpoint")
                            for g in got if g.get("job_id"))
            out[name]["endpoints"] = dict(where)
    a, b = out["openai_stream"]["ttft_ms"]["p50"], out["runpod_stream"]["ttft_ms"]["p50"]
    out["openai_minus_runpod_ttft_p50_ms"] = None if a is None or b is None else round(a - b, 1)
    out["note"] = ("echo models answer in one chunk: the first token is the whole answer, so ttft measures the "
                   "path (router, queue, stream reads), not a model's decoding")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100, help="calls of each way of waiting, at each concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--blocks", type=int, default=4, help="rounds the ways of waiting are interleaved in")
    parser.add_argument("--ttft-calls", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured calls of each kind first")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="native_poll's interval")
    parser.add_argument("--stream-poll-ms", type=float, default=100.0, help="runpod_stream's interval")
    parser.add_argument("--max-run-s", type=float, default=120.0, help="a bound on each measured set")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 6 calls each at 1 and 2, 3 streams")
    parser.add_argument("--verbose", action="store_true", help="pass the functions' logs to stderr")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.concurrency, args.blocks, args.ttft_calls, args.warmup = 6, [1, 2], 1, 3, 1
        args.max_run_s = 60.0
    args.blocks = max(1, min(args.blocks, args.calls))

    real_stdout = os.dup(1)
    os.dup2(2, 1)  # the functions' JSON logs (and worker processes) go to stderr: stdout is the result alone
    sys.stdout = sys.stderr
    try:
        result = run(args)
    finally:
        sys.stdout = sys.__stdout__
        os.dup2(real_stdout, 1)
        os.close(real_stdout)
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    import requests
    from stillhouse_local.stack import EmbeddedStack, StackOptions

    if not args.verbose:
        logging.disable(logging.INFO)
    load_start = os.getloadavg()
    t_start = time.monotonic()
    log("starting the embedded stack (endpoints local, localstream) ...")
    options = StackOptions(port=0, endpoints=["local", "localstream"],
                           endpoint_env={"localstream": {"WORKER_STREAMING": "true"}},
                           environment={"STILLHOUSE_WEBHOOK_RESOLVER": "loopback-only"},  # no DNS lookups
                           log_dir=Path(tempfile.mkdtemp(prefix="stillhouse-openai-bench-")))
    stack = EmbeddedStack(options).start()
    receiver = Receiver()
    try:
        startup_s = time.monotonic() - t_start
        log(f"stack up in {startup_s:.1f} s at {stack.url}")
        env = {"url": stack.url, "api_key": stack.dev_api_key, "receiver": receiver, "poll_ms": args.poll_ms,
               "standin_api": stack.standin.api_base(), "runpod_key": stack.runpod_api_key,
               "stream_poll_ms": args.stream_poll_ms}
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {stack.dev_api_key}"
        log(f"warm-up: {args.warmup} calls of each kind")
        for call in (*CALLS.values(), openai_stream_call, runpod_stream_call):
            _, failed, _ = closed_loop(call, args.warmup, 1, 120, **env)
            if failed:
                raise RuntimeError(f"warm-up of {call.__name__} failed: {dict(failed)}")
        answers = {}
        for concurrency in args.concurrency:
            log(f"answers: {args.calls} calls of each way at concurrency {concurrency}")
            answers[str(concurrency)] = measure_answers(args, env, concurrency)
        log(f"time to first token: {args.ttft_calls} streams each, one at a time")
        ttft = measure_ttft(args, env, session, stack.url)
        load_end = os.getloadavg()
    finally:
        receiver.stop()
        log("stopping the stack")
        stack.stop()
    return {
        "benchmark": "openai_overhead",
        "model": MODEL,
        "calls_per_mode": args.calls,
        "concurrency": args.concurrency,
        "poll_ms": args.poll_ms,
        "stream_poll_ms": args.stream_poll_ms,
        "answers_ms": answers,
        "ttft": ttft,
        "startup_s": round(startup_s, 1),
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in load_end],
        "quick": args.quick,
    }


if __name__ == "__main__":
    sys.exit(main())
