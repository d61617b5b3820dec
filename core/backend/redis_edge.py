"""The redis-py calls below its documented client API, in one place.

The node's pub/sub links read replies themselves (one reader task per link that
confirms (un)subscriptions and dispatches messages in order, with no per-message
task or polling), which redis-py's documented ``PubSub`` object cannot do. They use
a bare :class:`redis.asyncio.connection.AbstractConnection` built from the client's
own connection settings. :class:`RawConnection` wraps exactly those calls, and
:data:`CONNECTION_CALLS` lists them; ``tests/unit/test_private_names.py`` checks that
each still exists, so a redis-py upgrade that changes one fails loudly with its name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection

__all__ = ["CONNECTION_CALLS", "RawConnection"]

#: (class, attribute) of every redis-py name used here beyond the documented client API
CONNECTION_CALLS: tuple[tuple[str, str], ...] = (
    ("redis.asyncio.connection.AbstractConnection", "connect"),
    ("redis.asyncio.connection.AbstractConnection", "disconnect"),
    ("redis.asyncio.connection.AbstractConnection", "pack_commands"),
    ("redis.asyncio.connection.AbstractConnection", "send_packed_command"),
    ("redis.asyncio.connection.AbstractConnection", "read_response"),
    ("redis.asyncio.connection.AbstractConnection", "send_command"),
    ("redis.asyncio.connection.ConnectionPool", "connection_class"),
    ("redis.asyncio.connection.ConnectionPool", "connection_kwargs"),
    ("redis.asyncio.cluster.ClusterNode", "connection_class"),
    ("redis.asyncio.cluster.ClusterNode", "connection_kwargs"),
)


class RawConnection:
    """One dedicated Redis connection outside any pool, read by its owner alone."""

    __slots__ = ("_conn",)

    def __init__(self, conn: AbstractConnection) -> None:
        self._conn = conn

    @classmethod
    def like(cls, source: Redis | ClusterNode, client_name: str) -> RawConnection:
        """A new connection with the settings (address, auth, TLS) of ``source``."""
        factory: Any
        kwargs: dict[str, Any]
        if isinstance(source, ClusterNode):
            factory, kwargs = source.connection_class, source.connection_kwargs
        else:
            pool = source.connection_pool
            factory, kwargs = pool.connection_class, pool.connection_kwargs
        conn: AbstractConnection = factory(**kwargs)
        conn.client_name = client_name
        return cls(conn)

    async def connect(self) -> None:
        await self._conn.connect()  # type: ignore[no-untyped-call]

    async def disconnect(self) -> None:
        await self._conn.disconnect(nowait=True)

    async def send(self, commands: Sequence[tuple[bytes, bytes]]) -> None:
        """Write ``commands`` in one packet; no reply is read here."""
        packed = self._conn.pack_commands(commands)
        try:
            await self._conn.send_packed_command(packed, check_health=False)
        except AttributeError:
            # redis-py drops the writer when the connection breaks under us
            raise ConnectionError("redis connection lost") from None

    async def command(self, *args: bytes) -> Any:
        """Send one command and read its reply (for a connection that is not subscribed)."""
        await self._conn.send_command(*args)
        return await self._conn.read_response()

    async def read(self) -> Any:
        """The next reply (push messages included), waiting as long as it takes."""
        return await self._conn.read_response(timeout=math.inf)
