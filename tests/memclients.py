"""A client process for the memory test: N authenticated connections, each joined.

    python -m tests.memclients PORT COUNT FIRST GROUP

Opens COUNT raw WebSocket connections to 127.0.0.1:PORT (users u<FIRST> ...), each
with a bearer token, waits for ``welcome``, joins room ``m<index // GROUP>`` and waits
for its ``ok``; prints ``ready <n>`` (n connections that got there), then holds them
until stdin closes. Kept in its own process so the test's tracemalloc counts only the
node's bytes.
"""

from __future__ import annotations

import asyncio
import sys

import msgpack

from core.wsframe import OP_BINARY, OP_PING, OP_PONG, client_frame
from tests.harness import token
from tests.rawws import RawClient


async def _one(port: int, index: int, group: int) -> RawClient | None:
    hdr = {
        "Authorization": f"Bearer {token(f'u{index}')}",
        "Sec-WebSocket-Protocol": "squall.v1.msgpack",
    }
    raw, status, _ = await RawClient.connect(port, headers=hdr)
    if status != 101:
        return None
    raw.send_raw(
        client_frame(OP_BINARY, msgpack.packb({"t": "join", "id": 1, "room": f"m{index // group}"}))
    )
    while True:
        frame = await raw.next_frame(30.0)
        if frame is None:
            return None
        if frame[0] == OP_PING:
            raw.send(OP_PONG, frame[2])
        elif frame[0] == OP_BINARY and msgpack.unpackb(frame[2]).get("t") == "ok":
            return raw


async def main(port: int, count: int, first: int, group: int) -> None:
    sem = asyncio.Semaphore(32)

    async def limited(i: int) -> RawClient | None:
        async with sem:
            return await _one(port, i, group)

    held = [c for c in await asyncio.gather(*(limited(first + i) for i in range(count))) if c]
    sys.stdout.write(f"ready {len(held)}\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for c in held:
        c.close()


if __name__ == "__main__":
    asyncio.run(main(*(int(a) for a in sys.argv[1:5])))
