"""EventBridge schedules, emulated: invoke a function with a real 'Scheduled Event' every period."""
from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from stillhouse_local.lambdas import FunctionRegistry

log = logging.getLogger(__name__)


def scheduled_event(rule: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"arn:aws:events:us-east-1:123456789012:rule/{rule}"],
        "detail": {},
    }


class ScheduleRunner:
    def __init__(self, function: str, period_s: float, functions: FunctionRegistry) -> None:
        self.function = function
        self.period_s = period_s
        self.functions = functions
        self._stop = threading.Event()
        self._paused = False
        self._running = threading.Lock()  # held by a run: pausing waits for the run in progress to end
        self._thread = threading.Thread(target=self._run, name=f"schedule-{function}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def pause(self, paused: bool = True) -> None:
        """No scheduled run from now until `pause(False)`: a run in progress ends first (a test that must
        see another path than the schedule's own win a race)."""
        with self._running:
            self._paused = paused

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            with self._running:
                if self._paused:
                    continue
                try:
                    self.functions.get(self.function).invoke(scheduled_event(self.function))
                except Exception:  # noqa: BLE001 - a failed run is logged; the next one comes anyway
                    log.exception("scheduled run of %s failed", self.function)
