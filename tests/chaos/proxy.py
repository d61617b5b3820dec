"""A TCP fault proxy between nodes and Redis, in its own thread and event loop.

Modes (switch at any time with :meth:`FaultProxy.set_mode`):

* ``pass``: bytes flow both ways untouched.
* ``blackhole``: connections stay open but nothing is forwarded either way (bytes
  wait, as TCP would retransmit them), and new connections are accepted and left
  silent: a partitioned network. Back in ``pass``, held bytes flow again.
* ``delay``: every chunk is held ``delay_s`` before it is forwarded (order kept).
* ``reset``: every open connection is reset (RST) and new ones are reset on accept.

The proxy runs on its own thread so a busy test loop cannot add latency of its own;
it listens on 127.0.0.1 only. Connections accepted silently in ``blackhole`` stay
silent forever (their client must give up on them).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Literal

__all__ = ["FaultProxy", "Mode"]

Mode = Literal["pass", "blackhole", "delay", "reset"]


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """``FaultProxy(upstream_port).start()``; nodes connect to ``proxy.port``."""

    def __init__(self, upstream_port: int, delay_s: float = 0.2) -> None:
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self.mode: Mode = "pass"
        self.port = 0
        self.accepted = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._silent: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._flowing = asyncio.Event()
            self._flowing.set()
            self._server = loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("fault proxy did not start")
        return self

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(5)

    def set_mode(self, mode: Mode) -> None:
        """Switch mode; ``reset`` resets every open connection before returning."""
        self._call(self._set_mode(mode))

    async def _set_mode(self, mode: Mode) -> None:
        self.mode = mode
        assert self._flowing is not None
        if mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode == "reset":
            for a, b in list(self._pairs):
                _rst(a)
                _rst(b)
            self._pairs.clear()
            for w in list(self._silent):
                _rst(w)
            self._silent.clear()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        pairs = list(self._pairs)
        self._pairs.clear()  # every pipe sees its pair gone and returns
        assert self._flowing is not None
        self._flowing.set()
        for a, b in pairs:
            a.transport.abort()
            b.transport.abort()
        for w in list(self._silent):
            w.transport.abort()
        # Let every connection's task end by itself (cancelling a stream server's
        # handler task makes Python 3.11 log a CancelledError traceback).
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "reset":
            _rst(writer)
            return
        if self.mode == "blackhole":
            self._silent.add(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            _rst(writer)
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, pair), self._pipe(up_reader, writer, pair)
            )
        finally:
            self._pairs.discard(pair)
            for w in pair:
                w.transport.abort()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                data = await reader.read(65536)
                if not data or pair not in self._pairs:
                    return
                assert self._flowing is not None
                await self._flowing.wait()  # held while blackholed
                if self.mode == "delay":
                    await asyncio.sleep(self.delay_s)
                if pair not in self._pairs:
                    return
                writer.write(data)
                await writer.drain()
