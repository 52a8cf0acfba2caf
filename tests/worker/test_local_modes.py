"""RunPod's local modes run the unchanged worker: `--test_input` with the real packaged model, and
`--rp_serve_api` (the SDK's FastAPI test server) answering /runsync."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
HANDLER = REPO / "gpu_handler" / "handler.py"


def worker_env() -> dict[str, str]:
    env = {**os.environ, "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true"}
    for name in ("RUNPOD_WEBHOOK_GET_JOB", "MODEL_ID", "EMBED_MODEL_ID"):
        env.pop(name, None)  # the packaged defaults, not whatever a stack left behind
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_test_input_generates_with_the_packaged_model() -> None:
    job = {"input": {"task": "generate", "prompt": "What is the capital of France?", "max_new_tokens": 8}}
    done = subprocess.run([sys.executable, str(HANDLER), "--test_input", json.dumps(job)], capture_output=True,
                          text=True, timeout=240, env=worker_env(), cwd=REPO)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "'finish_reason'" in out and "'completion_tokens'" in out


def test_rp_serve_api_answers_runsync() -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, str(HANDLER), "--rp_serve_api", "--rp_api_port", str(port),
                               "--rp_api_host", "127.0.0.1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=worker_env(), cwd=REPO)
    try:
        deadline, answer = time.monotonic() + 60, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                answer = requests.post(f"http://127.0.0.1:{port}/runsync", timeout=30,
                                       json={"input": {"task": "echo", "text": "served"}})
                break
            except requests.ConnectionError:
                time.sleep(0.5)
        assert answer is not None, "the test server never came up"
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "COMPLETED" and body["output"]["text"] == "served"
    finally:
        server.terminate()
        server.wait(timeout=20)
