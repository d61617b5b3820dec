"""Peer: the floor. A ``selectors`` loop that ``socket.send``s one pre-built frame per member.

    python -m bench.peers.raw_floor --port N [--host 127.0.0.1]

No framework: it does the HTTP upgrade itself (room from ``/ws?room=NAME``), parses
client frames, and on a binary ``pub`` builds the same ``msg`` map as Squall
(``t, room, seq, from, ts, epoch, data``), packs it and frames it ONCE, then calls
``sock.send(frame)`` for every member of the room (the publisher, joined last, last).
A member whose socket does not take the whole frame gets the rest queued and sent
when writable (never happens on loopback at these rates, but keeps it correct).

It is the cost of "one send system call per delivery" in Python: one message, one
``send`` per member, also when several pubs arrive in one read (no coalescing).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import selectors
import signal
import socket
import struct
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgpack

from bench.wire import scan

__all__ = ["main"]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B87"
EPOCH = "0123456789abcdef"


def server_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + payload
    if n <= 0xFFFF:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def unmask(payload: bytes, key: bytes) -> bytes:
    if key == b"\x00\x00\x00\x00":
        return payload
    n = len(payload)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


class Conn:
    __slots__ = ("buf", "out", "room", "sock", "upgraded")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.out = b""
        self.upgraded = False
        self.room = "bench"


class Server:
    def __init__(self, host: str, port: int) -> None:
        self.sel = selectors.DefaultSelector()
        self.listener = socket.create_server((host, port), backlog=4096)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.rooms: dict[str, dict[Conn, None]] = {}
        self.seq: dict[str, int] = {}
        self.running = True

    def serve(self) -> None:
        while self.running:
            for key, events in self.sel.select(0.5):
                conn: Conn | None = key.data
                if conn is None:
                    self.accept()
                    continue
                if events & selectors.EVENT_WRITE:
                    self.flush(conn)
                if events & selectors.EVENT_READ:
                    self.read(conn)

    def accept(self) -> None:
        while True:
            try:
                sock, _addr = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sel.register(sock, selectors.EVENT_READ, Conn(sock))

    def close(self, conn: Conn) -> None:
        self.rooms.get(conn.room, {}).pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn.sock)
        conn.sock.close()

    def read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(conn)
            return
        if not data:
            self.close(conn)
            return
        data = conn.buf + data if conn.buf else data
        if not conn.upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                conn.buf = data
                return
            self.upgrade(conn, data[:end])
            data = data[end + 4 :]
        frames, pos = scan(data)
        for opcode, start, end in frames:
            payload = unmask(data[start:end], data[start - 4 : start])
            if opcode == 2:
                self.on_message(payload)
            elif opcode == 8:
                self.close(conn)
                return
        conn.buf = data[pos:]

    def upgrade(self, conn: Conn, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[1]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        key = headers["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        reply = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n"
        )
        if "sec-websocket-protocol" in headers:
            proto = headers["sec-websocket-protocol"].split(",")[0].strip()
            reply += f"Sec-WebSocket-Protocol: {proto}\r\n".encode()
        conn.sock.sendall(reply + b"\r\n")
        conn.upgraded = True
        conn.room = parse_qs(urlsplit(target).query).get("room", ["bench"])[0]
        self.rooms.setdefault(conn.room, {})[conn] = None

    def on_message(self, message: bytes) -> None:
        frame: Any = msgpack.unpackb(message)
        if not isinstance(frame, dict) or frame.get("t") != "pub":
            return
        room = frame["room"]
        seq = self.seq[room] = self.seq.get(room, 0) + 1
        payload = msgpack.packb(
            {
                "t": "msg",
                "room": room,
                "seq": seq,
                "from": "publisher",
                "ts": int(time.time() * 1000),
                "epoch": EPOCH,
                "data": frame["data"],
            }
        )
        out = server_frame(payload)
        for member in list(self.rooms.get(room, {})):
            if member.out:
                member.out += out
                continue
            try:
                sent = member.sock.send(out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.close(member)
                continue
            if sent < len(out):
                member.out = out[sent:]
                self.sel.modify(member.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, member)

    def flush(self, conn: Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(conn)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self.sel.modify(conn.sock, selectors.EVENT_READ, conn)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.peers.raw_floor")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    server = Server(args.host, args.port)

    def stop(*_a: Any) -> None:
        server.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve()


if __name__ == "__main__":
    main()
