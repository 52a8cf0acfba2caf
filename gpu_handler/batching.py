"""A small asyncio micro-batcher: concurrent requests that arrive within a short window (or until the
batch is full) and share a batch key are run together by one call on the inference thread.

One batch runs at a time. Requests arriving while it runs wait, and form the next batch as soon as it
ends (their window has already passed), so under load batches fill up without adding latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")


@dataclass
class _Pending(Generic[Req, Res]):
    item: Req
    key: Hashable
    future: asyncio.Future[Res]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[Req, Res]):
    def __init__(
        self,
        run_batch: Callable[[list[Req]], Sequence[Res]],
        *,
        key: Callable[[Req], Hashable],
        executor: Executor,
        window_s: float,
        max_size: int,
        on_cancel: Callable[[Req], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._key = key
        self._executor = executor
        self.window_s = window_s
        self.max_size = max_size
        self._on_cancel = on_cancel
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Pending[Req, Res]] = []
        self._arrived = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self.batch_sizes: list[int] = []  # sizes of the batches run so far (observability, tests)

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # asyncio primitives belong to one loop; a new loop (tests, a restarted worker) gets new ones.
            self._loop, self._pending, self._arrived, self._runner = loop, [], asyncio.Event(), None
        return loop

    async def submit(self, item: Req) -> Res:
        loop = self._bind()
        pending: _Pending[Req, Res] = _Pending(item, self._key(item), loop.create_future())
        self._pending.append(pending)
        self._arrived.set()
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        try:
            return await pending.future
        except asyncio.CancelledError:
            if self._on_cancel is not None:
                self._on_cancel(item)  # e.g. stop decoding this row if its batch is already running
            raise

    def _compatible(self, key: Hashable) -> list[_Pending[Req, Res]]:
        return [p for p in self._pending if p.key == key and not p.future.done()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._pending = [p for p in self._pending if not p.future.done()]  # drop cancelled ones
            if not self._pending:
                return
            oldest = self._pending[0]  # FIFO: the oldest request decides which kind of batch runs next
            deadline = oldest.enqueued + self.window_s
            while len(self._compatible(oldest.key)) < self.max_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._compatible(oldest.key)[: self.max_size]
            if not batch:
                continue
            taken = {id(p) for p in batch}
            self._pending = [p for p in self._pending if id(p) not in taken]
            self.batch_sizes.append(len(batch))
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, [p.item for p in batch])
            except Exception as exc:  # any failure goes to each waiting caller, who classifies it
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            for p, result in zip(batch, results):
                if not p.future.done():
                    p.future.set_result(result)
