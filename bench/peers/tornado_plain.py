"""The baseline: the plainest Tornado room fan-out, a ``write_message`` loop.

    python -m bench.peers.tornado_plain --port N [--host 127.0.0.1]

Every upgraded connection joins one in-process room on open (no auth, no join
frame). Any binary message is taken as a ``pub``: the server builds the same
``msg`` map Squall sends (same keys, same order, ``data`` last), packs it once and
calls ``write_message(payload, binary=True)`` for every member, the sender included.
The room is a dict used as an insertion-ordered set, so the publisher, which
connects last, gets its echo after every other member was written to, as in Squall.

Deliberately nothing more: no history, no metrics, no rate limit, no validation.
This is the cost floor of "Tornado + msgpack, written the obvious way".
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import Any

import msgpack
import tornado.web
import tornado.websocket

__all__ = ["Room", "RoomSocket", "main"]


class Room:
    def __init__(self) -> None:
        self.members: dict[RoomSocket, None] = {}
        self.seq = 0


class RoomSocket(tornado.websocket.WebSocketHandler):
    def initialize(self, room: Room) -> None:
        self.room = room

    def check_origin(self, origin: str) -> bool:
        return True

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return subprotocols[0] if subprotocols else None

    def open(self, *args: str, **kwargs: str) -> None:
        self.set_nodelay(True)
        self.room.members[self] = None

    def on_message(self, message: str | bytes) -> None:
        frame: Any = msgpack.unpackb(message)
        if not isinstance(frame, dict) or frame.get("t") != "pub":
            return
        room = self.room
        room.seq += 1
        payload = msgpack.packb(
            {
                "t": "msg",
                "room": frame["room"],
                "seq": room.seq,
                "from": "publisher",
                "ts": int(time.time() * 1000),
                "data": frame["data"],
            }
        )
        for member in list(room.members):
            try:
                member.write_message(payload, binary=True)
            except tornado.websocket.WebSocketClosedError:
                room.members.pop(member, None)

    def on_close(self) -> None:
        self.room.members.pop(self, None)


async def serve(host: str, port: int) -> None:
    app = tornado.web.Application([("/ws", RoomSocket, {"room": Room()})])
    server = app.listen(port, host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.peers.tornado_plain")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
