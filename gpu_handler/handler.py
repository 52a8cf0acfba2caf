"""RunPod serverless entry point. Runs unchanged on RunPod and under the local stand-in."""
from __future__ import annotations

import time

import runpod

MAX_SLEEP_S = 60.0


def handler(job: dict) -> dict:
    inp = job.get("input") or {}
    task = inp.get("task", "echo")
    if task == "echo":
        return {"echo": inp, "text": inp.get("text")}
    if task == "sleep":
        seconds = float(inp.get("seconds", 0))
        if not 0 <= seconds <= MAX_SLEEP_S:
            return {"error": f"input.seconds must be between 0 and {MAX_SLEEP_S}"}
        time.sleep(seconds)
        return {"slept": seconds}
    return {"error": f"unknown task {task!r}"}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
