"""The parts of `benchmarks/fault_soak.py`: the stack's parameters and the fault mix with its timeline
(`chaos`), the caller's side: submitters, webhook receiver, duplicate queue messages (`callers`), waiting
for every job to end while the sweeper is invoked (`drain`), and the JSON report (`report`)."""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable


def log(message: str) -> None:
    print(f"[fault_soak] {message}", file=sys.stderr, flush=True)


class Ticker:
    """Runs `tick(elapsed_s)` every `period_s` on a daemon thread until stopped or `limit_s` has passed."""

    def __init__(self, name: str, period_s: float, tick: Callable[[float], None], limit_s: float) -> None:
        self.period_s, self.tick, self.limit_s = period_s, tick, limit_s
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"soak-{name}", daemon=True)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.period_s):
            elapsed = time.monotonic() - started
            if elapsed > self.limit_s:
                return
            try:
                self.tick(elapsed)
            except Exception as exc:  # noqa: BLE001 - a failed tick is recorded; the next one comes anyway
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
