"""The hosted-API routes of the stand-in (``/v2/{endpoint_id}/...``, as api.runpod.ai) and the fault
knob routes (``/_faults/{endpoint_id}``); both want the API key as a Bearer token."""
from __future__ import annotations

import time

from stillhouse_local.runpod_standin.engine import JobEngine
from stillhouse_local.runpod_standin.faults import FaultError, validate_faults
from stillhouse_local.runpod_standin.http_base import MAX_RUN_BODY, BaseHandler, Reply, err
from stillhouse_local.runpod_standin.state import IN_QUEUE, Endpoint, Job

RUNSYNC_WAIT_DEFAULT_MS, RUNSYNC_WAIT_MIN_MS, RUNSYNC_WAIT_MAX_MS = 90_000, 1_000, 300_000

_UNAUTHORIZED = "Unauthorized: Authorization: Bearer <api key> required"


class HostedRoutes(BaseHandler):
    def _hosted(self, engine: JobEngine, method: str, parts: list[str]) -> None:
        if not self._bearer_ok(engine):
            raise Reply(401, {"error": _UNAUTHORIZED}, {"WWW-Authenticate": "Bearer"})
        ep = self._endpoint(engine, parts)
        action, rest = (parts[1] if len(parts) > 1 else ""), parts[2:]
        engine.count(ep, f"api:{action}")  # every call that reached the endpoint, faults included
        latency = ep.faults["latency_ms"]
        if latency:
            time.sleep(latency / 1000)

        def need(methods: tuple[str, ...], nargs: int) -> None:
            if method not in methods:
                raise Reply(405, {"error": f"{method} not allowed on {action}"}, {"Allow": ", ".join(methods)})
            if len(rest) != nargs:
                raise err(404, f"no route for {method} {self.path}")

        if action in ("run", "runsync"):
            need(("POST",), 0)
            self._submit(engine, ep, sync=action == "runsync")
        elif action == "status":
            need(("GET", "POST"), 1)
            raise Reply(200, self._job(engine, ep, rest[0]).status_body())
        elif action == "stream":
            need(("GET", "POST"), 1)
            raise Reply(200, engine.read_stream(self._job(engine, ep, rest[0])))
        elif action == "cancel":
            need(("POST",), 1)
            job = self._job(engine, ep, rest[0])
            engine.cancel(job)
            raise Reply(200, {"id": job.id, "status": job.status})
        elif action == "retry":
            need(("POST",), 1)
            job = self._job(engine, ep, rest[0])
            if not engine.retry(job):
                raise err(400, f"only FAILED or TIMED_OUT jobs can be retried; job {job.id} is {job.status}")
            raise Reply(200, {"id": job.id, "status": job.status})
        elif action == "purge-queue":
            need(("POST",), 0)
            raise Reply(200, {"removed": engine.purge(ep), "status": "completed"})
        elif action == "health":
            need(("GET",), 0)
            raise Reply(200, engine.health(ep))
        raise err(404, f"no route for {method} {self.path}")

    @staticmethod
    def _job(engine: JobEngine, ep: Endpoint, job_id: str) -> Job:
        job = engine.find_job(job_id)
        if job is None or job.endpoint_id != ep.id:
            raise err(404, f"job {job_id!r} not found (unknown, purged, or its result expired)")
        return job

    def _submit(self, engine: JobEngine, ep: Endpoint, *, sync: bool) -> None:
        if not sync and len(self.raw_body) > MAX_RUN_BODY:
            raise err(413, f"payload too large for /run ({len(self.raw_body)} bytes; limit {MAX_RUN_BODY})")
        faults = ep.faults
        if faults["down"]:
            raise err(503, f"endpoint {ep.id} is unavailable (stand-in fault: down)")
        if ep.roll(faults["rate_limit_rate"]):
            raise Reply(429, {"error": "Too Many Requests (stand-in fault: rate_limit_rate)"},
                        {"Retry-After": f"{faults['retry_after_s']:g}"})
        if ep.roll(faults["error_rate"]):
            raise err(500, "Internal Server Error (stand-in fault: error_rate)")
        body = self._json_body()
        if not isinstance(body, dict):
            raise err(400, "body must be a JSON object with an 'input' field")
        if body.get("input") is None:
            raise err(400, "missing required field 'input'", field="input")
        webhook = body.get("webhook")
        if webhook is not None and (not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))):
            raise err(400, "webhook must be an http(s) URL", field="webhook")
        policy = body.get("policy")
        if policy is not None:
            if not isinstance(policy, dict):
                raise err(400, "policy must be an object", field="policy")
            for key in ("executionTimeout", "ttl"):
                v = policy.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
                    raise err(400, f"policy.{key} must be a positive number of milliseconds", field=f"policy.{key}")
            body["policy"] = {k: v for k, v in policy.items() if v is not None}
        wait_ms = RUNSYNC_WAIT_DEFAULT_MS
        if sync and "wait" in self.query:
            try:
                wait_ms = int(float(self.query["wait"]))
            except ValueError as error:
                raise err(400, "wait must be a number of milliseconds", field="wait") from error
            wait_ms = max(RUNSYNC_WAIT_MIN_MS, min(RUNSYNC_WAIT_MAX_MS, wait_ms))
        job = engine.create_job(ep, body, sync=sync)
        if not sync:
            raise Reply(200, {"id": job.id, "status": IN_QUEUE})
        deadline = time.monotonic() + wait_ms / 1000
        while not job.done.is_set() and not engine.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            job.done.wait(min(remaining, 0.5))
        raise Reply(200, engine.status_body(job))

    # -------------------------------------------------------------------------------- faults
    def _faults(self, engine: JobEngine, method: str, parts: list[str]) -> None:
        if not self._bearer_ok(engine):
            raise Reply(401, {"error": _UNAUTHORIZED}, {"WWW-Authenticate": "Bearer"})
        ep = self._endpoint(engine, parts)
        if len(parts) != 1:
            raise err(404, f"no route for {method} {self.path}")
        if method == "PUT":
            try:
                knobs = validate_faults(self._json_body() or {})
            except FaultError as error:
                raise err(400, str(error), field=error.field) from error
            engine.set_faults(ep.id, knobs)
        elif method == "DELETE":
            engine.reset_faults(ep.id)
        elif method != "GET":
            raise Reply(405, {"error": f"{method} not allowed"}, {"Allow": "GET, PUT, DELETE"})
        raise Reply(200, engine.get_faults(ep.id))
