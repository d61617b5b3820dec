"""One client connection as the core sees it, independent of the I/O framework.

The connection owns its outgoing frames: :meth:`Connection.send` queues a frame (it
never writes, never raises), the node's :class:`~core.writer.WriteBatcher` calls
:meth:`Connection.flush` once at the end of the loop iteration, and the I/O layer's
:class:`Transport` offers the batch to the kernel and reports how many bytes the
kernel has not taken.

Slow-consumer policy (close 4011): only bytes that were offered to the kernel and
refused count, i.e. still buffered after a write attempt. Frames queued within one
iteration are not counted before they are offered, so a reader that keeps up is never
cut, whatever the burst. A reader that stopped reading takes nothing: its refused
bytes grow by one batch per write attempt, and it is cut on the first attempt that
leaves more than ``outbound_limit`` refused, so it costs at most the limit plus one
batch (one frame, when frames come one per iteration).

Failure containment: a transport that fails while writing (closed stream, ``OSError``,
any exception) drops this connection only; the failure never reaches the caller, so a
fan-out goes on to every other member.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from core.auth import Claims
from core.backend.base import (
    DirectMessage,
    Membership,
    Publication,
    PublishRequest,
    SessionRecord,
)
from core.outbound import PING, Outbound
from core.protocol import CloseCode, Encoding, bye, encode
from core.writer import WriteBatcher

if TYPE_CHECKING:
    from core.inbox_delivery import InboxPaging

__all__ = ["Connection", "Transport"]

log = logging.getLogger("squall.connection")


class Transport(Protocol):
    """The I/O edge of one WebSocket connection: writes bytes, reports the refused."""

    def write(self, batch: Sequence[Outbound], encoding: Encoding) -> int:
        """Offer ``batch`` to the kernel, in order, after everything offered before.

        Returns the bytes offered so far (by this call and earlier ones) that the
        kernel has not taken yet; 0 when it took everything. Never blocks. On a
        connection that is already closed it writes nothing and returns 0. May raise
        on an unexpected failure: the caller contains it.
        """

    def close(self, code: int, reason: str) -> None:
        """Send a close frame with ``code`` (after what was written) and close."""

    def abort(self) -> None:
        """Drop the connection now, discarding whatever the kernel has not taken."""


class Connection:
    """State of one WebSocket connection on this node.

    ``uid`` is ``None`` until the connection is authenticated. ``joining`` holds, per
    room whose ``join`` is being answered, the live publications that arrived while
    history was being fetched, so the member sees history, then ``ok``, then live
    messages, without gaps or duplicates.
    """

    __slots__ = (
        "auto_rooms",
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
        "meta",
        "on_closed",
        "out",
        "outbound_limit",
        "paging",
        "pending_pubs",
        "pubq",
        "record",
        "rooms",
        "strike_window_end",
        "strikes",
        "transport",
        "uid",
        "writer",
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
        writer: WriteBatcher,
    ) -> None:
        self.conn_id = conn_id
        self.ip = ip
        self.encoding = encoding
        self.transport = transport
        self.outbound_limit = outbound_limit
        self.writer = writer
        #: frames queued in this loop iteration, not yet offered to the transport
        self.out: list[Outbound] | None = None
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
        #: pubs waiting for the connection's publisher (None: no publisher running)
        self.pubq: list[tuple[int, PublishRequest]] | None = None
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
        #: metadata the application attached (connect / refresh hooks), sent with hooks
        self.meta: dict[str, Any] | None = None
        #: server-side rooms joined right after ``welcome`` (``rooms_auto``, connect hook)
        self.auto_rooms: tuple[str, ...] = ()

    def send(self, out: Outbound) -> bool:
        """Queue ``out``; it is offered to the transport at the end of the iteration.

        Returns False (and queues nothing) when the connection is closed.
        """
        if self.closed:
            return False
        queued = self.out
        if queued is None:
            self.out = [out]
            self.writer.mark(self)
        else:
            queued.append(out)
        return True

    def send_frame(self, frame: Mapping[str, Any]) -> bool:
        """Encode and queue one frame meant for this connection only."""
        payload = encode(frame, self.encoding)
        return self.send(Outbound(lambda _enc: payload))

    def ping(self) -> None:
        """Queue a WebSocket ping control frame."""
        self.send(PING)

    def flush(self) -> None:
        """Offer the queued frames to the transport; apply the slow-consumer policy.

        Never raises: a transport failure drops this connection (close code 1011 is
        counted) and nothing else.
        """
        batch = self.out
        if batch is None:
            return
        self.out = None
        if self.closed:
            return
        try:
            refused = self.transport.write(batch, self.encoding)
        except Exception as e:
            log.warning("connection %s: write failed (%s); dropping it", self.conn_id, repr(e))
            self._drop(CloseCode.INTERNAL)
            return
        if refused > self.outbound_limit:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer")

    def close(self, code: int, reason: str) -> None:
        """Send ``bye`` then a close frame with the same code. Idempotent, never raises."""
        if self.closed:
            return
        # bye precedes the close frame; a slow consumer cannot read it anyway, so it
        # is skipped there to keep the buffer bounded.
        if code == CloseCode.SLOW_CONSUMER:
            self.out = None
            self._drop(code)
            return
        if code >= 4000 or code == CloseCode.RESTART:
            self.send_frame(bye(CloseCode(code), reason))
        self.flush()  # what was queued, bye included, precedes the close frame
        if self.closed:  # the flush failed and dropped the connection
            return
        self.closed = True
        try:
            self.transport.close(code, reason)
        except Exception as e:
            log.warning("connection %s: close failed (%s); dropping it", self.conn_id, repr(e))
            self._abort()
        self._closed_with(code)

    def _drop(self, code: int) -> None:
        """Close without a handshake, freeing what the kernel has not taken at once."""
        self.closed = True
        self.out = None
        if code == CloseCode.SLOW_CONSUMER:
            # It is not reading: a close handshake would keep the full buffer alive
            # for the protocol's grace period. Send the close frame, then free it now.
            try:
                self.transport.close(code, "slow consumer")
            except Exception as e:
                log.warning("connection %s: close failed (%s)", self.conn_id, repr(e))
        self._abort()
        self._closed_with(code)

    def _abort(self) -> None:
        try:
            self.transport.abort()
        except Exception as e:
            log.warning("connection %s: abort failed (%s)", self.conn_id, repr(e))

    def _closed_with(self, code: int) -> None:
        if self.on_closed is not None:
            self.on_closed(code)
