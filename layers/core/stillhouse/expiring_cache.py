"""What a function keeps of a table between invocations, for a while: API keys, tenants' limits, their
webhook secrets. cachetools' TTLCache does the expiry and the size bound; this adds the lock (the
embedded gateway and the delivery function call in from several threads) and the "nothing yet" answer."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from cachetools import TTLCache

V = TypeVar("V")
#: Entries kept at once (the least recently used go first): enough for every tenant or key in use.
MAX_ENTRIES = 10_000


class ExpiringCache(Generic[V]):
    def __init__(self, ttl_s: float, *, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.time) -> None:
        # ttl 0: nothing is ever fresh, every lookup reads (cachetools wants a positive ttl).
        self._entries: TTLCache[str, V] | None = (
            TTLCache(maxsize=max_entries, ttl=ttl_s, timer=clock) if ttl_s > 0 else None)
        self._lock = threading.Lock()

    def get(self, key: str) -> V | None:
        """The value kept for `key` while it is fresh, else None."""
        if self._entries is None:
            return None
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, value: V) -> None:
        if self._entries is not None:
            with self._lock:
                self._entries[key] = value

    def forget(self, key: str) -> None:
        if self._entries is not None:
            with self._lock:
                self._entries.pop(key, None)
