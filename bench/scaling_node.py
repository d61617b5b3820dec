"""One simulated Squall node of ``bench.scaling``: a real ``RedisBackend``, no WebSockets.

In-process (``bench.scaling`` builds K of them with :func:`start_node`) or as its own
OS process (``python -m bench.scaling_node --url U --node n3 --prefix P --rooms 50``),
which speaks JSON lines (see :class:`bench.Child`):

* on start it subscribes every room, then emits ``ready``;
* ``{"cmd": "arm", "messages": m}``: emits ``armed``, then ``done`` once ``m`` more
  room publications arrived;
* ``{"cmd": "publish", "messages": m, "window": w}``: publishes ``m`` 64-byte
  messages over the rooms, ``w`` in flight (the production publish script);
* ``exit`` (or end of input): closes the backend and exits.

The process does nothing else, so its CPU time (read by the parent from ``/proc``)
is what one node spends receiving (and, for the publisher, publishing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from core.backend.base import BackendOptions, NodeCommand, PresenceEvent, Publication
from core.backend.redis import RedisBackend
from core.clock import SystemClock

__all__ = ["Counter", "main", "publish_all", "rooms", "start_node"]


class Counter:
    """A listener that counts room publications and wakes a waiter at a target."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = asyncio.Event()

    def arm(self, messages: int) -> None:
        """Wake :attr:`done` once ``messages`` more publications arrived."""
        self.target = self.count + messages
        self.done.clear()

    def on_publication(self, pub: Publication) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()

    def on_presence(self, event: PresenceEvent) -> None:
        pass

    def on_command(self, command: NodeCommand) -> None:
        pass

    def on_availability(self, available: bool) -> None:
        pass


def rooms(n: int) -> list[str]:
    return [f"room{i}" for i in range(n)]


async def start_node(
    url: str, node: str, prefix: str, room_count: int
) -> tuple[RedisBackend, Counter]:
    """A started backend with its counter, subscribed to every room (Redis confirmed)."""
    backend = RedisBackend(node, BackendOptions(key_prefix=prefix), SystemClock(), url)
    listener = Counter()
    await backend.start(listener)
    try:
        for room in rooms(room_count):
            await backend.subscribe_room(room)
    except BaseException:
        await backend.close()
        raise
    return backend, listener


async def publish_all(backend: RedisBackend, room_count: int, messages: int, window: int) -> None:
    """``messages`` 64-byte publications round-robin over the rooms, ``window`` in flight."""
    names = rooms(room_count)
    sent = 0

    async def pump() -> None:
        nonlocal sent
        while sent < messages:
            i = sent
            sent += 1
            await backend.publish(names[i % len(names)], b"\0" * 64, "u", 0)

    await asyncio.gather(*(pump() for _ in range(window)))


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def serve(a: argparse.Namespace) -> None:
    backend, counter = await start_node(a.url, a.node, a.prefix, a.rooms)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()

    async def report_done() -> None:
        await counter.done.wait()
        emit("done", count=counter.count)

    async def publish(messages: int, window: int) -> None:
        try:
            await publish_all(backend, a.rooms, messages, window)
        except Exception as exc:  # reported: the parent then fails instead of timing out
            emit("error", detail=repr(exc))

    emit("ready")
    try:
        while line := await reader.readline():
            msg = json.loads(line)
            task: asyncio.Task[None] | None = None
            if msg["cmd"] == "arm":
                counter.arm(int(msg["messages"]))
                emit("armed")
                task = asyncio.create_task(report_done())
            elif msg["cmd"] == "publish":
                task = asyncio.create_task(publish(int(msg["messages"]), int(msg["window"])))
            elif msg["cmd"] == "exit":
                break
            if task is not None:
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        for task in list(tasks):
            task.cancel()
        await backend.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaling_node")
    p.add_argument("--url", required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--rooms", type=int, required=True)
    asyncio.run(serve(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
