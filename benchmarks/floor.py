"""The moto floor: the fewest AWS calls a fast-path job can make, back to back, one thread.

    .venv/bin/python benchmarks/floor.py [--jobs 200] [--quick]

Per job: PutItem (the job), SendMessage, ReceiveMessage, DeleteMessage (the queue hop), and two
conditional UpdateItems (start, finish), against moto's server in this process on 127.0.0.1 (the
same server class the embedded stack runs, DynamoDB calls one at a time). No Lambdas, no HTTP API, no
RunPod: what a job would cost here if the router added nothing but its state changes. The overhead
benchmark runs `measure_floor` against its own stack's moto server in the same run and reports its
figures as ratios to it (`floor_ratio`).

Prints ONE JSON object on stdout.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
for _part in ("layers/core", "local"):  # run from a checkout without an install, too
    if str(_ROOT / _part) not in sys.path:
        sys.path.append(str(_ROOT / _part))

# A job item of the size the fast path writes (an echo job: ids, tenant, status, one timeline event).
_INPUT = json.dumps({"text": "x"})


def measure_floor(endpoint_url: str, jobs: int = 200, warmup: int = 10) -> dict[str, Any]:
    """ms per job of the six calls against the moto server at `endpoint_url` (its own table and queue)."""
    import boto3

    kw = {"endpoint_url": endpoint_url, "region_name": "us-east-1"}
    ddb, sqs = boto3.client("dynamodb", **kw), boto3.client("sqs", **kw)
    name = f"floor-{uuid.uuid4().hex[:8]}"
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    try:
        for _ in range(warmup):
            _one_job(ddb, sqs, name, queue)
        per_job = []
        t0 = time.perf_counter()
        for _ in range(jobs):
            t = time.perf_counter()
            _one_job(ddb, sqs, name, queue)
            per_job.append((time.perf_counter() - t) * 1000)
        wall = time.perf_counter() - t0
    finally:
        ddb.delete_table(TableName=name)
        sqs.delete_queue(QueueUrl=queue)
    ms = wall * 1000 / jobs
    return {"floor_ms_per_job": round(ms, 2), "floor_jobs_per_s": round(1000 / ms, 2),
            "floor_ms_p50": round(statistics.median(per_job), 2), "floor_jobs": jobs,
            "floor_calls_per_job": 6}


def _one_job(ddb: Any, sqs: Any, table: str, queue: str) -> None:
    job_id = uuid.uuid4().hex
    now = "2026-11-30T00:00:00.000Z"
    ddb.put_item(TableName=table, ConditionExpression="attribute_not_exists(id)", Item={
        "id": {"S": job_id}, "tenant_id": {"S": "tenant-1"}, "status": {"S": "IN_QUEUE"},
        "task": {"S": "echo"}, "input": {"S": _INPUT}, "attempts": {"N": "0"},
        "created_at": {"S": now}, "updated_at": {"S": now},
        "events": {"L": [{"M": {"at": {"S": now}, "status": {"S": "IN_QUEUE"}, "actor": {"S": "api"}}}]}})
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"job_id": job_id}))
    (message,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1)["Messages"]
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    for source, target in (("IN_QUEUE", "IN_PROGRESS"), ("IN_PROGRESS", "COMPLETED")):
        ddb.update_item(
            TableName=table, Key={"id": {"S": job_id}},
            UpdateExpression="SET #s = :t, updated_at = :now, events = list_append(events, :ev)",
            ConditionExpression="#s = :src", ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":t": {"S": target}, ":src": {"S": source}, ":now": {"S": now},
                                       ":ev": {"L": [{"M": {"at": {"S": now}, "status": {"S": target}}}]}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="20 jobs: a smoke run for CI")
    args = parser.parse_args(argv)
    from stillhouse_local.moto_env import FAKE_CREDENTIALS, free_port, moto_server

    for key, value in FAKE_CREDENTIALS.items():
        os.environ.setdefault(key, value)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per call otherwise
    port = free_port()
    server = moto_server("127.0.0.1", port)
    server.start()
    try:
        result = measure_floor(f"http://127.0.0.1:{port}", jobs=20 if args.quick else args.jobs,
                               warmup=2 if args.quick else 10)
    finally:
        server.stop()
    result |= {"benchmark": "floor", "loadavg": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
