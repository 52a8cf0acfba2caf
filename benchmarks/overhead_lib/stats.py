"""Small statistics helpers for the report."""
from __future__ import annotations

import math


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, float | None]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return {"p50": r(quantile(values, 0.5)), "p95": r(quantile(values, 0.95)), "p99": r(quantile(values, 0.99)),
            "mean": r(sum(values) / len(values)) if values else None, "min": r(min(values, default=None)),
            "max": r(max(values, default=None)), "n": len(values)}
