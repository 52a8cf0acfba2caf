"""Placement: walk the router's plan until an endpoint's RunPod /run accepts the job.

Shared by the fast path (dispatch), the recovery workflow and council members, so every refusal is
reported to the router (breaker, statistics) the same way.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stillhouse.errors import ErrorClass
from stillhouse.runpod.client import RunPodClient, RunPodError


class Endpoint(Protocol):
    name: str
    endpoint_id: str
    base_url: str
    secret_ref: str | None


class Routing(Protocol):
    """What dispatch needs of the router (stillhouse.routing.router.Router): a plan, breaker claims, outcomes."""

    def plan(self, model: str | None, *, streaming: bool = False) -> Sequence[Endpoint]: ...

    def allow(self, name: str, plan: Any = None) -> bool: ...

    def submitted(self, name: str) -> None: ...

    def refused(self, name: str, error: RunPodError) -> None: ...

    def released(self, name: str) -> None: ...


@dataclass
class Refused:
    """No endpoint took the work this time, and why (the most telling error class)."""

    error_class: ErrorClass | None  # None: no endpoint was available at all
    reason: str
    endpoint: str | None = None  # the endpoint that refused terminally, if one did


@dataclass
class Placed:
    endpoint: Endpoint
    accepted: dict[str, Any]  # RunPod's /run answer: {"id", "status"}


# A capacity refusal says "later, same place"; anything else says "something is broken".
_TELLING = [ErrorClass.TERMINAL, ErrorClass.TRANSIENT, ErrorClass.WORKER_LOST, ErrorClass.CAPACITY]


def nothing_available(model: str | None) -> str:
    return f"no endpoint available for model {model or '(default)'}"


def place(router: Routing, client_for: Callable[[Endpoint], RunPodClient], model: str | None,
          payload: dict[str, Any], webhook_for: Callable[[Endpoint], str], policy: dict[str, Any],
          *, avoid: str | None = None, plan: Sequence[Endpoint] | None = None) -> Placed | Refused:
    """Walk the router's plan (or the one the caller just asked for): the first endpoint that accepts
    /run wins; every refusal is reported to the router (breaker, statistics); a terminal refusal stops
    the walk (the input is at fault). `avoid` is tried last, only when every other endpoint refused."""
    errors: list[str] = []
    classes: list[ErrorClass] = []
    if plan is None:
        plan = router.plan(model, streaming=bool(payload.get("stream")))
    # A stable sort keeps the policy's order among the others.
    for endpoint in sorted(plan, key=lambda e: e.name == avoid):
        if not router.allow(endpoint.name, plan):
            errors.append(f"{endpoint.name}: breaker open")
            continue  # another instance took the last recovery probe
        try:
            accepted = client_for(endpoint).run(endpoint.base_url, endpoint.endpoint_id, payload,
                                                webhook=webhook_for(endpoint), policy=policy)
        except RunPodError as err:
            router.refused(endpoint.name, err)
            errors.append(f"{endpoint.name}: {err.message}")
            if err.error_class is ErrorClass.TERMINAL:
                return Refused(ErrorClass.TERMINAL, err.message, endpoint.name)
            classes.append(err.error_class)
            continue
        return Placed(endpoint, accepted)
    reason = "; ".join(errors) or nothing_available(model)
    return Refused(min(classes, key=_TELLING.index) if classes else None, reason)
