"""The worker-facing routes of the stand-in (``/_worker/{endpoint_id}/...``), the ones the real
``runpod.serverless.start`` loop polls: job-take(-batch), job-stop, job-done, job-stream, ping."""
from __future__ import annotations

import hmac
import time

from stillhouse_local.runpod_standin.engine import JobEngine
from stillhouse_local.runpod_standin.http_base import BaseHandler, Reply, err


class WorkerRoutes(BaseHandler):
    def _worker(self, engine: JobEngine, method: str, parts: list[str]) -> None:
        face = self.server.worker_face
        settings = engine.settings
        auth = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        token_ok = hmac.compare_digest(self.query.get("token", "").encode(), settings.worker_token.encode())
        if not token_ok and not hmac.compare_digest(auth.encode(), settings.api_key.encode()):
            raise err(401, "Unauthorized worker")
        ep = self._endpoint(engine, parts)
        action, rest = (parts[1] if len(parts) > 1 else ""), parts[2:]
        engine.count(ep, f"route:{action}")
        if action in ("job-take", "job-take-batch") and method == "GET" and len(rest) == 1:
            pod = rest[0]
            n = 1
            if action == "job-take-batch":
                try:
                    n = max(1, min(256, int(self.query.get("batch_size", "1"))))
                except ValueError:
                    n = 1
            jobs = face.take_jobs(ep, pod, n, self._peer_gone)
            if not jobs:
                raise Reply(204)
            payload = [{"id": j.id, "input": j.input} for j in jobs]
            if not self._send(200, payload if action == "job-take-batch" else payload[0]):
                face.requeue_undelivered(ep, jobs, pod)  # the write failed: nobody got the jobs
            return
        if action == "job-stop" and method == "GET" and len(rest) == 1:
            ids = face.take_stop_signals(ep, rest[0])
            raise Reply(200, {"jobsToStop": ids}) if ids else Reply(204)
        if action in ("job-done", "job-stream") and method == "POST" and len(rest) == 2:
            pod, job_id = rest
            body = self._json_body()
            if action == "job-done":
                latency = ep.faults["latency_ms"]
                if latency:  # latency_ms also lengthens execution: the result lands this much later
                    time.sleep(latency / 1000)
                ignored = face.job_done(ep, pod, job_id, body)
            else:
                ignored = face.job_stream(ep, pod, job_id, body)
            # 200 even when ignored: the SDK retries non-2xx answers, which would only repeat the noise.
            raise Reply(200, {"ok": True} if ignored is None else {"ok": True, "ignored": ignored})
        if action == "ping" and method == "GET" and len(rest) == 1:
            face.ping(ep, rest[0])
            raise Reply(200, {"ok": True})
        raise err(404, f"no worker route for {method} {self.path}")
