"""Fault knobs of the RunPod stand-in: their names, ranges and defaults, and the check of a knob set.

Set at run time with ``RunPodStandIn.set_faults`` or ``PUT /_faults/{endpoint_id}``.
"""
from __future__ import annotations

from typing import Any

# name -> (kind, lo, hi); rates are shares in [0, 1]
FAULT_KNOBS: dict[str, tuple[str, float, float]] = {
    "error_rate": ("rate", 0.0, 1.0),
    "rate_limit_rate": ("rate", 0.0, 1.0),
    "latency_ms": ("number", 0.0, 600_000.0),
    "down": ("bool", 0, 0),
    "drop_webhook_rate": ("rate", 0.0, 1.0),
    "duplicate_webhook_rate": ("rate", 0.0, 1.0),
    "crash_rate": ("rate", 0.0, 1.0),
    "crash_mode": ("choice", 0, 0),
    "retry_after_s": ("number", 0.0, 3600.0),
    "seed": ("seed", 0, 0),
}
CRASH_MODES = ("hang", "fail", "requeue")
DEFAULT_FAULTS: dict[str, Any] = {
    "error_rate": 0.0,
    "rate_limit_rate": 0.0,
    "latency_ms": 0,
    "down": False,
    "drop_webhook_rate": 0.0,
    "duplicate_webhook_rate": 0.0,
    "crash_rate": 0.0,
    "crash_mode": "hang",
    "retry_after_s": 1,
}


class FaultError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def validate_faults(knobs: dict[str, Any]) -> dict[str, Any]:
    """Check a knob dict; returns it normalised. Raises FaultError naming the offending field."""
    if not isinstance(knobs, dict):
        raise FaultError("", "body must be a JSON object of fault knobs")
    out: dict[str, Any] = {}
    for name, value in knobs.items():
        spec = FAULT_KNOBS.get(name)
        if spec is None:
            raise FaultError(name, f"unknown fault knob {name!r}; known: {', '.join(sorted(FAULT_KNOBS))}")
        kind, lo, hi = spec
        if kind == "bool":
            if not isinstance(value, bool):
                raise FaultError(name, f"{name} must be true or false")
        elif kind == "choice":
            if value not in CRASH_MODES:
                raise FaultError(name, f"{name} must be one of {', '.join(CRASH_MODES)}")
        elif kind == "seed":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise FaultError(name, f"{name} must be an integer or null")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # noqa: PLR0124
                raise FaultError(name, f"{name} must be a number")
            if not lo <= value <= hi:
                raise FaultError(name, f"{name} must be between {lo:g} and {hi:g}")
        out[name] = value
    return out
