"""The client's requests in flight: ids, and the one outcome each gets.

Guarantees of :class:`PendingRequests`:

* Ids are 1, 2, 3... in the order :meth:`PendingRequests.open` is called.
* Each request's future gets at most one outcome: its ``ok``/``pong`` frame (after
  its ``on_ok`` ran, so state it updates is current before any later frame is
  handled), :class:`~client.errors.RequestFailed` for its ``err``, or the error
  passed to :meth:`PendingRequests.fail_all`. Answers to unknown ids, to requests
  already settled, and ``err`` frames without an id are ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from client.errors import RequestFailed, SquallError
from client.frames import Frame

__all__ = ["PendingRequests"]


@dataclass
class _Pending:
    future: asyncio.Future[Frame]
    on_ok: Callable[[Frame], None] | None


class PendingRequests:
    """Requests sent and not yet answered, by id."""

    def __init__(self) -> None:
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1

    def open(self, on_ok: Callable[[Frame], None] | None) -> tuple[int, asyncio.Future[Frame]]:
        """A fresh request id and the future its answer settles."""
        rid = self._next_id
        self._next_id += 1
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[rid] = _Pending(fut, on_ok)
        return rid, fut

    def discard(self, rid: int) -> None:
        """Forget request ``rid`` (answered, timed out or cancelled)."""
        self._pending.pop(rid, None)

    def answer(self, frame: Frame) -> None:
        """Settle the request an ``ok``, ``err`` or ``pong`` frame answers."""
        rid = frame.get("id")
        pending = self._pending.pop(rid, None) if isinstance(rid, int) else None
        if pending is None or pending.future.done():
            return  # timed out already, or an err without id
        if frame["t"] == "err":
            retry_after = frame.get("retry_after")
            pending.future.set_exception(
                RequestFailed(
                    int(frame.get("code", 0)),
                    str(frame.get("reason", "")),
                    float(retry_after) if retry_after is not None else None,
                )
            )
            return
        if pending.on_ok is not None:
            pending.on_ok(frame)
        pending.future.set_result(frame)

    def fail_all(self, error: SquallError) -> None:
        """Fail every request in flight with ``error``; later ids keep counting up."""
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(error)
