"""Lambda handlers run in-process, with a Lambda-like context.

A function takes up to `concurrency` invocations at once, as Lambda runs that many instances side by
side: the HTTP-facing functions serve concurrent requests, so races between twins (the same
Idempotency-Key, two callbacks of one job) happen here as they do on AWS. Unlike Lambda the instances
share one process; what a handler keeps per request must be per thread (http.resolver.JsonResolver).
A function built with `per_instance` loads its module once per instance instead (each with its own
cold start), for handlers that keep an invocation's state at module level, as Powertools' batch
processors do: a queue's function runs one instance per batch its event source mappings process at once
(stack.StackOptions.mapping_concurrency), and each batch takes an idle instance, as Lambda's execution
environments are never shared by two invocations at once."""
from __future__ import annotations

import importlib.util
import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stillhouse.crash_points import CrashPointHit
from stillhouse_local.template import FunctionSpec

Handler = Callable[[Any, Any], Any]
#: wrapper(function, handler, init_s) -> the handler to call, applied to each function's handler when it is
#: loaded (init_s: seconds the import took): how benchmarks time and attribute invocations (later, metrics).
HandlerWrapper = Callable[["InProcessFunction", Handler, float], Handler]
handler_wrappers: list[HandlerWrapper] = []
#: The error name a function that died reports to Step Functions (a timeout's, on AWS Lambda): the state
#: machines retry it (statemachines/*.asl.json), as they must for a function killed between two calls.
DIED = "Sandbox.Timedout"


class FunctionDied(Exception):
    """The invocation died at a crash point (stillhouse.crash_points): it failed as a whole, as a Lambda
    killed mid-step fails: its SQS batch comes back, its HTTP caller gets a 5xx, its task fails."""


@dataclass
class LambdaContext:
    function_name: str
    memory_limit_in_mb: int = 512
    timeout_s: float = 30.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    @property
    def function_version(self) -> str:
        return "$LATEST"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


class InProcessFunction:
    def __init__(self, spec: FunctionSpec, physical_name: str, concurrency: int = 1, *,
                 per_instance: bool = False) -> None:
        self.spec = spec
        self.physical_name = physical_name
        self.concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)  # Lambda's concurrency: instances at once
        self._load_lock = threading.Lock()
        self._handler: Callable[[Any, Any], Any] | None = None
        self._per_instance = per_instance
        self._idle: list[Callable[[Any, Any], Any]] = []  # per_instance: loaded instances not invoked now
        self._instances = 0

    def _load(self, suffix: str = "") -> Callable[[Any, Any], Any]:
        module_name, _, attr = self.spec.handler.rpartition(".")
        path = self.spec.code_dir / f"{module_name.replace('.', '/')}.py"
        # Every function's module is called `app`: import each under its own name.
        spec = importlib.util.spec_from_file_location(f"stillhouse_fn_{self.spec.logical_id}{suffix}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, attr)

    def _cold_start(self, suffix: str = "") -> Callable[[Any, Any], Any]:
        started = time.perf_counter()
        handler = self._load(suffix)
        init_s = time.perf_counter() - started
        for wrap in handler_wrappers:
            handler = wrap(self, handler, init_s)
        return handler

    def _loaded(self) -> Callable[[Any, Any], Any]:
        with self._load_lock:  # the cold start: once, whoever comes first
            if self._handler is None:
                self._handler = self._cold_start()
            return self._handler

    def invoke(self, event: Any) -> Any:
        try:
            return self._invoke(event)
        except CrashPointHit as hit:
            raise FunctionDied(f"{self.spec.logical_id} died: {hit}") from hit

    def _invoke(self, event: Any) -> Any:
        with self._slots:
            if not self._per_instance:
                return self._loaded()(event, LambdaContext(self.physical_name))
            with self._load_lock:
                handler = self._idle.pop() if self._idle else None
                if handler is None:
                    self._instances += 1
                    suffix = f"_{self._instances}" if self._instances > 1 else ""
            if handler is None:
                handler = self._cold_start(suffix)  # a new instance's own cold start
            try:
                return handler(event, LambdaContext(self.physical_name))
            finally:
                with self._load_lock:
                    self._idle.append(handler)


class FunctionRegistry:
    """Logical id / physical name -> in-process function."""

    def __init__(self) -> None:
        self._by_name: dict[str, InProcessFunction] = {}

    def add(self, fn: InProcessFunction) -> None:
        self._by_name[fn.spec.logical_id] = fn
        self._by_name[fn.physical_name] = fn

    def get(self, name: str) -> InProcessFunction:
        return self._by_name[name.rsplit(":", 1)[-1] if name.startswith("arn:") else name]

    def invoke_for_moto(self, function_name: str, event: Any) -> tuple[str, bool, str]:
        """moto's `_invoke_lambda` contract: (payload, errored, logs). The exception's type name
        becomes the error name, so Step Functions `Retry.ErrorEquals` can match our classes."""
        try:
            result = self.get(function_name).invoke(event)
        except Exception as exc:  # noqa: BLE001 - reported to the caller as a Lambda error
            body = {"errorType": DIED if isinstance(exc, FunctionDied) else type(exc).__name__, "errorMessage": str(exc),
                    "stackTrace": traceback.format_exc().splitlines()[-5:]}
            return json.dumps(body), True, ""
        return json.dumps(result), False, ""
