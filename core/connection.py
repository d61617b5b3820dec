"""One client connection as the core sees it, independent of the I/O framework.

The I/O layer (``handlers/``) implements :class:`Transport`; the core writes frames
through :meth:`Connection.send` and never touches a socket. The slow-consumer
policy lives here: after every write the outbound buffer is compared with the
limit and a connection over it is cut with 4011, so a reader that stopped reading
costs at most ``outbound_buffer_bytes`` plus one frame.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from core.auth import Claims
from core.backend.base import DirectMessage, Membership, Publication, SessionRecord
from core.outbound import Outbound
from core.protocol import CloseCode, Encoding, bye, encode

if TYPE_CHECKING:
    from core.inbox_delivery import InboxPaging

__all__ = ["Connection", "Transport"]


class Transport(Protocol):
    """What the core needs from a WebSocket connection."""

    def send(self, out: Outbound, encoding: Encoding) -> None:
        """Queue one frame for writing; never blocks, never raises on a closed socket."""

    def buffered(self) -> int:
        """Bytes queued and not yet accepted by the kernel."""

    def ping(self) -> None:
        """Queue a WebSocket ping control frame."""

    def close(self, code: int, reason: str) -> None:
        """Send a close frame with ``code`` and close the connection."""

    def abort(self) -> None:
        """Drop the connection now, discarding whatever is still buffered."""


class Connection:
    """State of one WebSocket connection on this node.

    ``uid`` is ``None`` until the connection is authenticated. ``joining`` holds, per
    room whose ``join`` is being answered, the live publications that arrived while
    history was being fetched, so the member sees history, then ``ok``, then live
    messages, without gaps or duplicates.
    """

    __slots__ = (
        "claims",
        "closed",
        "conn_id",
        "connected_at",
        "encoding",
        "inbox",
        "ip",
        "joining",
        "kicked",
        "last_seen",
        "memberships",
        "on_closed",
        "outbound_limit",
        "paging",
        "pending_pubs",
        "record",
        "rooms",
        "strike_window_end",
        "strikes",
        "transport",
        "uid",
    )

    def __init__(
        self,
        conn_id: str,
        ip: str,
        encoding: Encoding,
        transport: Transport,
        outbound_limit: int,
        now: float,
        connected_at: int,
    ) -> None:
        self.conn_id = conn_id
        self.ip = ip
        self.encoding = encoding
        self.transport = transport
        self.outbound_limit = outbound_limit
        self.last_seen = now
        self.connected_at = connected_at
        self.uid: str | None = None
        self.claims: Claims | None = None
        self.record: SessionRecord | None = None
        self.rooms: set[str] = set()
        #: the backend memberships of joined rooms, kept for the heartbeat refresh
        self.memberships: dict[str, Membership] = {}
        self.joining: dict[str, list[Publication]] = {}
        # request ids of pubs whose ok is not yet sent (a dict: smaller than a set)
        self.pending_pubs: dict[int, None] = {}
        self.strikes = 0
        self.strike_window_end = 0.0
        self.closed = False
        #: offline messages fetched at admission, written right after ``welcome``
        self.inbox: list[DirectMessage] | None = None
        #: inbox delivery in progress (core/inbox_delivery.py)
        self.paging: InboxPaging | None = None
        #: (code, reason) of an eviction that arrived before the connection opened
        self.kicked: tuple[int, str] | None = None
        #: called once with the close code when the core closes the connection
        self.on_closed: Callable[[int], None] | None = None

    def send(self, out: Outbound) -> bool:
        """Write ``out``; cut the connection with 4011 when its buffer is over the limit.

        Returns False when the connection is closed (or was just cut).
        """
        if self.closed:
            return False
        self.transport.send(out, self.encoding)
        if self.transport.buffered() > self.outbound_limit:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer")
            return False
        return True

    def send_frame(self, frame: Mapping[str, Any]) -> bool:
        """Encode and write one frame meant for this connection only."""
        payload = encode(frame, self.encoding)
        return self.send(Outbound(lambda _enc: payload))

    def close(self, code: int, reason: str) -> None:
        """Send ``bye`` then a close frame with the same code. Idempotent."""
        if self.closed:
            return
        # bye precedes the close frame; a slow consumer cannot read it anyway, so it
        # is skipped there to keep the buffer bounded.
        if (code >= 4000 or code == CloseCode.RESTART) and code != CloseCode.SLOW_CONSUMER:
            payload = encode(bye(CloseCode(code), reason), self.encoding)
            self.transport.send(Outbound(lambda _enc: payload), self.encoding)
        self.closed = True
        self.transport.close(code, reason)
        if code == CloseCode.SLOW_CONSUMER:
            # It is not reading: waiting for its close handshake would keep the full
            # buffer alive for the protocol's grace period. Free it now.
            self.transport.abort()
        if self.on_closed is not None:
            self.on_closed(code)
