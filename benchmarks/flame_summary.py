"""Summarise a py-spy profile (`py-spy record --format raw`, collapsed stacks) by who spends the CPU.

    .venv/bin/py-spy record -r 50 --subprocesses --format raw -o prof.txt -- \\
        .venv/bin/python benchmarks/overhead.py --jobs 120 --workflow-jobs 0 --floor-jobs 0
    .venv/bin/python benchmarks/flame_summary.py prof.txt

Each sample is charged to an owner (the outermost frame that says whose work it is: a Lambda
function's handler, moto's server, the RunPod stand-in or its worker process, the HTTP shim, the
benchmark's callers) and to a library (the innermost frame's package: botocore, pydantic, json, ...).
Prints ONE JSON object: the shares of all samples, per owner, per library, and per owner x library.
"""
from __future__ import annotations

import json
import re
import sys
from collections import Counter

OWNERS = [  # the first pattern found anywhere in the stack wins (py-spy names files without their folder,
    # so a function is told by the core module its handler runs)
    ("worker process (RunPod stand-in's worker, gpu_handler)", re.compile(r"worker_process\.py|gpu_handler|runpod/serverless|rp_job|worker_loop")),
    ("Lambda: ApiFunction", re.compile(r"http/public_api\.py|jobs/service\.py|stillhouse/auth\.py")),
    ("Lambda: WebhookFunction", re.compile(r"http/runpod_callbacks\.py|runpod/callbacks\.py")),
    ("Lambda: DispatchFunction", re.compile(r"jobs/dispatch\.py|routing/placement\.py")),
    ("Lambda: DeliveryFunction", re.compile(r"delivery/webhooks\.py")),
    ("moto server (DynamoDB, SQS)", re.compile(r"moto_env\.py|werkzeug_app\.py|moto/")),
    ("RunPod stand-in (API, scheduler, webhooks)", re.compile(r"runpod_standin/")),
    ("SQS pollers (event source mapping)", re.compile(r"stillhouse_local/pollers\.py")),
    ("HTTP shim (API Gateway)", re.compile(r"stillhouse_local/http_gateway\.py")),
    ("benchmark (callers, receiver, meter)", re.compile(r"overhead_lib/|webhook_receiver")),
]
LIBS = [("botocore/boto3 (client side)", "botocore/"), ("boto3", "boto3/"), ("moto", "moto/"),
        ("pydantic", "pydantic"), ("powertools", "aws_lambda_powertools/"), ("json", "json/"),
        ("requests/urllib3/http.client", ("requests/", "urllib3/", "http/client.py")),
        ("werkzeug/socketserver", ("werkzeug/", "socketserver.py")), ("stillhouse core", "stillhouse/"),
        ("logging", "logging/"), ("threading/queue", ("threading.py", "queue.py")), ("ssl/socket", ("socket.py", "ssl.py"))]


def owner_of(frames: list[str]) -> str:
    stack = ";".join(frames)
    for name, pattern in OWNERS:
        if pattern.search(stack):
            return name
    return "other (server loops, startup, imports, GC)"


# A sampled thread sitting in one of these is waiting, not computing (py-spy's idle detection misses some).
WAITING = re.compile(r"^(SocketIO\.readinto|socket\.\w+|_socket|select|poll|BaseSelector|PollSelector\.select|"
                     r"Condition\.wait|Event\.wait|Semaphore\.acquire|Queue\.get|_wait_for_tstate_lock|"
                     r"BaseServer\.serve_forever|sleep) ")


def lib_of(frames: list[str]) -> str:
    if frames and WAITING.search(frames[-1]):
        return "waiting (socket, lock, queue)"
    for frame in reversed(frames):  # innermost first
        for name, marks in LIBS:
            if any(m in frame for m in ((marks,) if isinstance(marks, str) else marks)):
                return name
    return "other"


def main(path: str) -> int:
    owners, libs, both, cpu = Counter(), Counter(), Counter(), Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as profile:
        lines = profile.readlines()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")[1:]  # the first is the process (its command line)
        n = int(count)
        total += n
        o, lib = owner_of(frames), lib_of(frames)
        owners[o] += n
        libs[lib] += n
        both[(o, lib)] += n
        if not lib.startswith("waiting"):
            cpu[o] += n
    share = lambda c: {k: round(v / total, 3) for k, v in c.most_common()}
    busy = sum(cpu.values())
    print(json.dumps({"samples": total, "waiting_share": round(1 - busy / total, 3) if total else None,
                      "cpu_by_owner": {k: round(v / busy, 3) for k, v in cpu.most_common()},
                      "by_owner": share(owners), "by_library": share(libs),
                      "by_owner_library": {f"{o} / {lib}": round(v / total, 3) for (o, lib), v in both.most_common(25)}},
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
