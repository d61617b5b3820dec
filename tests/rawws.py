"""A raw-socket WebSocket client for tests that must misbehave on purpose.

Tornado's client always answers pings and always masks; this one does neither
unless told to, so tests can play a dead peer, send unmasked or fragmented
frames, or stop reading.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct

from core.wsframe import OP_CLOSE, client_frame, parse_frames

__all__ = ["RawClient"]


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.frames: list[tuple[int, bool, bytes]] = []

    @classmethod
    async def connect(
        cls,
        port: int,
        path: str = "/ws",
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
    ) -> tuple[RawClient, int, bytes]:
        """Open and upgrade; returns (client, HTTP status, response head)."""
        sock_opts = {}
        if rcvbuf is not None:
            import socket

            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.connect(("127.0.0.1", port))
            s.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=s)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, **sock_opts)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status = int(head.split(b" ", 2)[1])
        return cls(reader, writer), status, head

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def send(self, opcode: int, payload: bytes, **kw: object) -> None:
        self.writer.write(client_frame(opcode, payload, **kw))  # type: ignore[arg-type]

    async def next_frame(self, timeout: float = 5.0) -> tuple[int, bool, bytes] | None:
        """Next complete frame, or None at EOF."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.frames:
            chunk = await asyncio.wait_for(
                self.reader.read(65536), max(0.01, deadline - loop.time())
            )
            if not chunk:
                return None
            self.buf += chunk
            self.frames.extend(parse_frames(self.buf))
        return self.frames.pop(0)

    async def close_code(self, timeout: float = 5.0) -> int | None:
        """Read frames until a close frame; returns its code (None at EOF without one)."""
        while True:
            frame = await self.next_frame(timeout)
            if frame is None:
                return None
            opcode, _fin, payload = frame
            if opcode == OP_CLOSE:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005

    def close(self) -> None:
        self.writer.close()
