"""Peer: the ``websockets`` library's own fan-out, ``websockets.asyncio.server.broadcast``.

    python -m bench.peers.websockets_broadcast --port N [--host 127.0.0.1]

A connection joins the room named by its query string (``/ws?room=NAME``) on open,
no auth, no join frame. A binary ``pub`` frame builds the same ``msg`` map as Squall
(``t, room, seq, from, ts, epoch, data``), packs it once with msgpack, and hands it to
``broadcast(members, payload)``, which for every open connection frames it
(``protocol.send_binary``) and writes it without waiting (the library's recommended
fan-out; the payload is encoded once, the frame header is built per connection). Members are an
insertion-ordered dict, so the publisher (joined last) gets its echo last.
No compression (the load generator does not offer it), no history, no metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgpack
from websockets.asyncio.server import ServerConnection, broadcast, serve

__all__ = ["main"]

EPOCH = "0123456789abcdef"


class Rooms:
    def __init__(self) -> None:
        self.members: dict[str, dict[ServerConnection, None]] = {}
        self.seq: dict[str, int] = {}


async def handler(ws: ServerConnection, rooms: Rooms) -> None:
    path = ws.request.path if ws.request is not None else "/ws"
    room = parse_qs(urlsplit(path).query).get("room", ["bench"])[0]
    members = rooms.members.setdefault(room, {})
    members[ws] = None
    try:
        async for message in ws:
            frame: Any = msgpack.unpackb(message)
            if not isinstance(frame, dict) or frame.get("t") != "pub":
                continue
            target = frame["room"]
            seq = rooms.seq[target] = rooms.seq.get(target, 0) + 1
            payload = msgpack.packb(
                {
                    "t": "msg",
                    "room": target,
                    "seq": seq,
                    "from": "publisher",
                    "ts": int(time.time() * 1000),
                    "epoch": EPOCH,
                    "data": frame["data"],
                }
            )
            broadcast(rooms.members.get(target, {}), payload)
    finally:
        members.pop(ws, None)


async def serve_forever(host: str, port: int) -> None:
    rooms = Rooms()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        lambda ws: handler(ws, rooms),
        host,
        port,
        subprotocols=["squall.v1.msgpack"],  # type: ignore[list-item]
        compression=None,
        max_queue=None,
        ping_interval=None,
        write_limit=64 * 1024 * 1024,
        backlog=4096,
    ):
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.peers.websockets_broadcast")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    asyncio.run(serve_forever(args.host, args.port))


if __name__ == "__main__":
    main()
