"""The baseline of the connection benchmarks: a plain Tornado ``WebSocketHandler``.

    python -m bench.peers.conn_tornado --port N [--ping-interval S] [--host 127.0.0.1]

Accepts every upgrade (no auth), keeps each open connection in a set (its only
"session state") and ignores what clients send. With ``--ping-interval S`` > 0 the
application setting ``websocket_ping_interval=S`` makes Tornado ping every connection
from its own per-connection coroutine (``websocket_ping_timeout`` left at its
default, the interval): the heartbeat Squall replaces with one sweeper. Runs on
uvloop when installed, like ``server.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import tornado.web
import tornado.websocket

__all__ = ["PlainSocket", "main"]


class PlainSocket(tornado.websocket.WebSocketHandler):
    def initialize(self, conns: set[PlainSocket]) -> None:
        self.conns = conns

    def check_origin(self, origin: str) -> bool:
        return True

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return subprotocols[0] if subprotocols else None

    def open(self, *args: str, **kwargs: str) -> None:
        self.set_nodelay(True)
        self.conns.add(self)

    def on_message(self, message: str | bytes) -> None:
        pass

    def on_close(self) -> None:
        self.conns.discard(self)


async def serve(host: str, port: int, ping_interval: float) -> None:
    settings: dict[str, Any] = {}
    if ping_interval > 0:
        settings["websocket_ping_interval"] = ping_interval
    conns: set[PlainSocket] = set()
    app = tornado.web.Application([("/ws", PlainSocket, {"conns": conns})], **settings)
    server = app.listen(port, host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.peers.conn_tornado")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ping-interval", type=float, default=0.0)
    args = p.parse_args(argv)
    try:  # the same event loop as server.py's run_loop: uvloop when installed
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, args.ping_interval))
    else:
        uvloop.run(serve(args.host, args.port, args.ping_interval))


if __name__ == "__main__":
    main()
