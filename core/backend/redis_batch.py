"""Calls of one kind made close together, run together in one Redis round trip.

A reconnect storm brings hundreds of handshakes to a node at once; each needs the
same few Redis calls (access state, admission, offline inbox). An
:class:`IterationBatch` collects the calls submitted during one loop iteration and,
at its end, hands them all to one ``run`` coroutine, which answers them from one
pipeline. At most one batch of a kind is in flight: calls submitted while it is
travelling wait for it and then leave together in the next batch. An idle node thus
sends a lone call at once (no added latency), and a loaded one sends one round trip
per kind per round-trip time, however many handshakes arrive.

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
  At most one batch is in flight at a time; a call waits at most for the batch in
  flight and its own.
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
        self._scheduled = False
        #: round trips made and calls answered so far (observability, tests)
        self.batches = 0
        self.calls = 0

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue ``item``; the future resolves once its batch was answered."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        self._schedule()
        return future

    def _schedule(self) -> None:
        if not self._scheduled and not self._tasks and self._items:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def call(self, item: T) -> R:
        """``await submit(item)``."""
        return await self.submit(item)

    def _flush(self) -> None:
        self._scheduled = False
        if self._tasks or not self._items:
            return
        items, futures = self._items[: self._max], self._futures[: self._max]
        del self._items[: self._max], self._futures[: self._max]
        task = asyncio.ensure_future(self._answer(items, futures))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._schedule()  # the calls that arrived meanwhile leave together

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
