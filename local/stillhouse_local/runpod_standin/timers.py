"""The stand-in's clock: timers on one thread, plus a small pool for slow work such as webhooks."""
from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("stillhouse_local.runpod_standin")


class Scheduler:
    """Timers on one thread (inline callbacks must be quick) + a pool for slow work (webhooks)."""

    def __init__(self, pool_size: int = 8) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="standin-bg")
        self._thread = threading.Thread(target=self._run, name="standin-timers", daemon=True)
        self._thread.start()

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._heap, (when, next(self._seq), fn))
            self._cond.notify()

    def submit(self, fn: Callable[[], None]) -> None:
        try:
            self.pool.submit(_logged(fn))
        except RuntimeError:  # shut down
            pass

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = None if not self._heap else self._heap[0][0] - time.monotonic()
                    self._cond.wait(timeout)
                if self._closed:
                    return
                _, _, fn = heapq.heappop(self._heap)
            _logged(fn)()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        self.pool.shutdown(wait=False, cancel_futures=True)


def _logged(fn: Callable[[], None]) -> Callable[[], None]:
    def _call() -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - a background task must never kill its thread
            log.exception("stand-in background task failed")

    return _call
