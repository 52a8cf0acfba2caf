"""A settable clock: pass it where the code under test takes `now` / `clock` (a callable returning seconds)."""
from __future__ import annotations

T0 = 1_700_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
