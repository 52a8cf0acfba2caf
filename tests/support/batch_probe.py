"""What tests/support/slow_batch_handler.py's instances did, shared between them: each loaded instance of
that handler is a module of its own, this one is loaded once. Batches wait at a gate the test opens."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class BatchProbe:
    active: int = 0  # batches inside the handler now
    most_active: int = 0  # the most at once
    started: list[tuple[str, list[str]]] = field(default_factory=list)  # (instance, bodies) per invocation
    done: list[tuple[str, list[str]]] = field(default_factory=list)  # (instance, bodies the processor handled)
    active_instances: set[str] = field(default_factory=set)
    instances_at_most_active: set[str] = field(default_factory=set)  # the instances busy at the peak
    releases: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        self.__init__()

    def enter(self, instance: str, bodies: list[str]) -> None:
        with self.lock:
            self.active += 1
            self.active_instances.add(instance)
            self.started.append((instance, bodies))
            if self.active > self.most_active:
                self.most_active = self.active
                self.instances_at_most_active = set(self.active_instances)

    def leave(self, instance: str, handled: list[str]) -> None:
        with self.lock:
            self.active -= 1
            self.active_instances.discard(instance)
            self.done.append((instance, handled))

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.releases.release()


PROBE = BatchProbe()
