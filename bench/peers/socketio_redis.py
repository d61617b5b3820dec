"""Peer: python-socketio ``AsyncServer`` with ``AsyncRedisManager`` on aiohttp.

    python -m bench.peers.socketio_redis --port N --redis redis://127.0.0.1:P/0 --channel C

Several processes started with the same ``--redis`` and ``--channel`` form one cluster:
``emit(..., room=...)`` publishes through Redis and every node emits to its own
members of the room. Clients speak Engine.IO 4 / Socket.IO 5 over WebSocket only
(``/socket.io/?EIO=4&transport=websocket``): ``42["join","room"]`` is answered with
``42["joined","room"]``; ``42["pub",{"room":R,"data":"<hex ts + padding>"}]`` emits
``42["msg",{"room","seq","from","ts","data"}]`` to the room. ``seq`` is per node
(no shared counter: cheaper than Squall's). Pings every 300 s (out of the way).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import socketio
from aiohttp import web

__all__ = ["main"]


def build(redis_url: str, channel: str) -> web.Application:
    mgr = socketio.AsyncRedisManager(redis_url, channel=channel)
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=mgr,
        ping_interval=300,
        ping_timeout=300,
        cors_allowed_origins="*",
        logger=False,
        engineio_logger=False,
    )
    seq: dict[str, int] = {}

    @sio.event  # type: ignore[untyped-decorator]
    async def join(sid: str, room: str) -> None:
        await sio.enter_room(sid, room)
        await sio.emit("joined", room, to=sid)

    @sio.event  # type: ignore[untyped-decorator]
    async def pub(sid: str, frame: dict[str, Any]) -> None:
        room = frame["room"]
        seq[room] = seq.get(room, 0) + 1
        msg = {
            "room": room,
            "seq": seq[room],
            "from": "publisher",
            "ts": int(time.time() * 1000),
            "data": frame["data"],
        }
        await sio.emit("msg", msg, room=room)

    app = web.Application()
    sio.attach(app)
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.peers.socketio_redis")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--channel", default="bench")
    args = p.parse_args(argv)
    web.run_app(
        build(args.redis, args.channel),
        host=args.host,
        port=args.port,
        print=None,
        backlog=4096,
        access_log=None,
    )


if __name__ == "__main__":
    main()
