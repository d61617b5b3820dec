"""Calls made within one event-loop iteration, run together in one Redis round trip.

A reconnect storm brings hundreds of handshakes into the same loop iteration; each
needs the same few Redis calls (access state, admission, offline inbox). An
:class:`IterationBatch` collects the calls submitted during one iteration and, at its
end, hands them all to one ``run`` coroutine, which answers them from one pipeline.

Guarantees:

* Every call submitted gets exactly one outcome: its own result, or its own
  exception (``run`` returns a per-call exception for a call Redis refused); when
  ``run`` itself raises (the round trip failed: outcome unknown), every call of the
  batch gets that exception.
* Calls run in submission order within a batch (each call's atomicity is its own:
  a Lua script stays one atomic step inside the pipeline).
* A call whose caller went away (its future was cancelled) is still run; its
  result goes to ``abandoned`` (e.g. to undo an admission nobody will use).
* At most ``max_batch`` calls go into one round trip; more make further batches.
* :meth:`IterationBatch.drain` waits for the batches in flight (backend close).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["IterationBatch"]

T = TypeVar("T")
R = TypeVar("R")

#: most calls per round trip (bounds one pipeline's size and Redis's time on it)
MAX_BATCH = 512


class IterationBatch(Generic[T, R]):
    """Collects calls of one kind per loop iteration; see the module docstring."""

    def __init__(
        self,
        run: Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]],
        abandoned: Callable[[T, R], Awaitable[None]] | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._run = run
        self._abandoned = abandoned
        self._max = max_batch
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: round trips made and calls answered so far (observability, tests)
        self.batches = 0
        self.calls = 0

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue ``item``; the future resolves once its batch was answered."""
        loop = asyncio.get_running_loop()
        if not self._items:
            loop.call_soon(self._flush)
        future: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        return future

    async def call(self, item: T) -> R:
        """``await submit(item)``."""
        return await self.submit(item)

    def _flush(self) -> None:
        items, futures = self._items, self._futures
        self._items, self._futures = [], []
        for start in range(0, len(items), self._max):
            task = asyncio.ensure_future(
                self._answer(items[start : start + self._max], futures[start : start + self._max])
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        self.batches += 1
        self.calls += len(items)
        try:
            results = await self._run(items)
        except Exception as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for item, future, result in zip(items, futures, results, strict=True):
            if future.cancelled():
                if self._abandoned is not None and not isinstance(result, BaseException):
                    await self._abandoned(item, result)
            elif isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def drain(self) -> None:
        """Wait until every batch handed over so far was answered."""
        while self._tasks or self._items:
            if self._tasks:
                await asyncio.wait(list(self._tasks))
            else:
                await asyncio.sleep(0)
