"""Faults in AWS itself: throttles and 5xx answers of DynamoDB, SQS, S3 and Step Functions, on a share of calls.

Installed through the clients factory's hook (`stillhouse.aws.add_client_hook`, as the benchmarks' metering
is), so every client the code uses (the API's, every function's, Powertools' idempotency table) sees the
same faults; the stack's own pollers and tests' moto clients are not the factory's and see none.

    faults = AwsFaults({("dynamodb", "*"): 0.05, ("sqs", "SendMessage"): 0.1}, seed=7).install()
    ...
    faults.counts()      # {"dynamodb.PutItem/ProvisionedThroughputExceededException": 3, ...}
    faults.uninstall()   # or: with AwsFaults(...) as faults: ...

Where a fault happens: a handler of botocore's `before-call.<service>.<Operation>` event answers the call
with an error response of its own (the status and the `Error.Code` AWS would send), before botocore's
retry loop. `before-call` is emitted once per API call, and botocore's retries (standard mode, 3 attempts,
in `_make_request`) happen below it, so a fault injected here is never retried by botocore: it is what our
code sees once botocore has given up on a throttle. Injected per attempt (at `before-send`), a share `p` of
retryable faults would reach our code as about `p**3`; this module tests the harder case, our code's
own handling. botocore raises the modelled exception class for the code (e.g. the DynamoDB client's
`ProvisionedThroughputExceededException`), a `botocore.exceptions.ClientError`, as for a real answer.

Off by default: nothing is registered until `install()`, and `uninstall()` takes every handler off again.
Seeded: each (service, operation) draws from a random generator of its own (seeded by `seed` and its
name), so the n-th call of an operation faults or not whatever the other operations did.
"""
from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any, Self

from botocore.awsrequest import AWSResponse

from stillhouse import aws

#: The errors injected for a service: (Error.Code, HTTP status), one drawn at random for each fault.
ERRORS: dict[str, tuple[tuple[str, int], ...]] = {
    "dynamodb": (("ProvisionedThroughputExceededException", 400), ("ThrottlingException", 400)),
    "sqs": (("ServiceUnavailable", 503), ("ThrottlingException", 400)),
    "s3": (("SlowDown", 503), ("ServiceUnavailable", 503)),
    "stepfunctions": (("ThrottlingException", 400),),
}

#: Issue 23's set: every DynamoDB call, SQS SendMessage/DeleteMessage, S3 PutObject, StartExecution.
STANDARD_OPERATIONS: tuple[tuple[str, str], ...] = (
    ("dynamodb", "*"), ("sqs", "SendMessage"), ("sqs", "DeleteMessage"), ("s3", "PutObject"),
    ("stepfunctions", "StartExecution"),
)

Rates = Mapping[tuple[str, str], float]


class _NoBody:
    """The raw stream of an injected answer (after-call handlers may read the body)."""

    def stream(self, **_: Any):
        yield b""


class AwsFaults:
    """Per-(service, operation) fault rates (0..1; operation "*" for every operation of the service),
    seeded, counted per kind. `errors` overrides ERRORS per service."""

    def __init__(self, rates: Rates | None = None, *, seed: int = 0,
                 errors: Mapping[str, tuple[tuple[str, int], ...]] | None = None) -> None:
        self.seed = seed
        self._errors = {**ERRORS, **(errors or {})}
        self._rates: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._rngs: dict[tuple[str, str], random.Random] = {}
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._calls: Counter[tuple[str, str]] = Counter()
        self._registered: list[tuple[Any, str, str]] = []  # (client, event, unique id)
        self._remove_hook: Any = None
        self.set_rates(rates or {})

    @classmethod
    def standard(cls, rate: float, *, seed: int = 0) -> AwsFaults:
        """Issue 23's faults, each at `rate`: DynamoDB throttles on every call, SQS SendMessage and
        DeleteMessage failures, S3 PutObject 503s, Step Functions StartExecution throttles."""
        return cls(dict.fromkeys(STANDARD_OPERATIONS, rate), seed=seed)

    # --- rates --------------------------------------------------------------------------------------
    def set_rates(self, rates: Rates) -> None:
        """Set these rates (others are kept); a rate of 0 turns its operation off."""
        for (service, operation), rate in rates.items():
            if service not in self._errors:
                raise ValueError(f"no faults are known for service {service!r}; known: {sorted(self._errors)}")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate for {service}.{operation} must be within 0..1, not {rate}")
            with self._lock:
                if rate:
                    self._rates[(service, operation)] = float(rate)
                else:
                    self._rates.pop((service, operation), None)

    def clear(self) -> None:
        """No faults from now on (the handlers stay registered until uninstall; counts are kept)."""
        with self._lock:
            self._rates.clear()

    def rate(self, service: str, operation: str) -> float:
        rates = self._rates
        return rates.get((service, operation), rates.get((service, "*"), 0.0))

    # --- install ------------------------------------------------------------------------------------
    @property
    def installed(self) -> bool:
        return self._remove_hook is not None

    def install(self) -> AwsFaults:
        """Register on every client the factory has made and will make, until uninstall()."""
        if self._remove_hook is None:
            self._remove_hook = aws.add_client_hook(self._instrument)
        return self

    def uninstall(self) -> None:
        if self._remove_hook is None:
            return
        self._remove_hook()
        self._remove_hook = None
        with self._lock:
            registered, self._registered = self._registered, []
        for client, event, unique_id in registered:
            client.meta.events.unregister(event, unique_id=unique_id)

    def __enter__(self) -> Self:
        return self.install()

    def __exit__(self, *_: object) -> None:
        self.uninstall()

    def _instrument(self, client: Any, service: str) -> None:
        """The factory's hook (called under its lock: it must not call the factory)."""
        if service not in self._errors:
            return
        event = f"before-call.{client.meta.service_model.service_id.hyphenize()}"
        unique_id = f"stillhouse-aws-faults-{id(self)}"
        client.meta.events.register(event, self._handler(service), unique_id=unique_id)
        with self._lock:
            self._registered.append((client, event, unique_id))

    def _handler(self, service: str):
        def before_call(model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
            operation = model.name
            rate = self.rate(service, operation)
            if not rate:
                return None
            fault = self.draw(service, operation, rate)
            if fault is None:
                return None
            code, status = fault
            return _answer(code, status, f"injected fault: {service}.{operation} {code}")

        return before_call

    def draw(self, service: str, operation: str, rate: float | None = None) -> tuple[str, int] | None:
        """Whether this call of `operation` faults, and with which (code, status); counts it when it does."""
        rate = self.rate(service, operation) if rate is None else rate
        key = (service, operation)
        with self._lock:
            rng = self._rngs.get(key)
            if rng is None:
                rng = self._rngs[key] = random.Random(f"{self.seed}:{service}:{operation}")
            self._calls[key] += 1
            if rng.random() >= rate:
                return None
            code, status = rng.choice(self._errors[service])
            self._counts[(service, operation, code)] += 1
            return code, status

    # --- what was injected --------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Faults injected so far, per kind: `"<service>.<Operation>/<Error.Code>"` -> how many."""
        with self._lock:
            return {f"{s}.{o}/{c}": n for (s, o, c), n in sorted(self._counts.items())}

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def calls(self) -> dict[str, int]:
        """Calls seen by operations that had a rate (faulted or not): `"<service>.<Operation>"` -> how many."""
        with self._lock:
            return {f"{s}.{o}": n for (s, o), n in sorted(self._calls.items())}

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self._calls.clear()


def _answer(code: str, status: int, message: str) -> tuple[AWSResponse, dict[str, Any]]:
    """What botocore makes of an AWS error answer: the HTTP response and its parsed body."""
    headers = {"x-amzn-errortype": code} if status < 500 else {}
    http = AWSResponse("", status, headers, _NoBody())
    parsed = {"Error": {"Code": code, "Message": message},
              "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers, "RetryAttempts": 0}}
    return http, parsed
