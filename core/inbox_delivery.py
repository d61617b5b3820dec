"""The offline inbox as a connection sees it: delivery in pages paced by acks, and
who may queue what for whom.

Guarantees:

* **A recipient is never cut for its own backlog.** Admission fetches one page of
  the inbox (:func:`page_bytes`: half of ``limits.outbound_buffer_bytes`` of
  :func:`~core.backend.base.inbox_size`); after ``welcome`` the messages are
  written while the connection's outbound buffer holds less than half its limit
  (at least one when none is waiting for its ack). The next messages, and then the
  next page, follow only once every message written so far is acked. So the
  inbox adds at most half the buffer to it, whatever its size (a slow-consumer cut,
  4011, needs the client itself to stop reading).
* Messages delivered live and not yet acked may come again as ``offline`` ones
  when a later page is fetched (clients de-duplicate by ``mid``); a client that
  never acks receives one page per connection.
* **Senders are bounded.** ``offline.max_per_sender`` unacked messages of one
  sender per recipient (enforced atomically by the backend); beyond, the sender
  gets ``err`` 429 saying so and nothing is queued or delivered.
* **Recipients.** With ``offline.recipients: known`` a ``send`` to a user who has
  not connected within ``offline.ttl_s`` gets ``err`` 404 (users are marked at
  admission); with ``any`` (the default) every user id is accepted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from core.backend.base import DirectMessage
from core.outbound import Outbound
from core.protocol import ErrCode, RequestError, encode_dm

if TYPE_CHECKING:
    from core.connection import Connection
    from core.node import Node

__all__ = [
    "QUOTA_REASON",
    "InboxPaging",
    "admission_page",
    "check_recipient",
    "inbox_acked",
    "page_bytes",
    "start_inbox",
]

QUOTA_REASON = (
    "offline quota reached: this user has not read your earlier messages yet "
    "(offline.max_per_sender)"
)


@dataclass(slots=True)
class InboxPaging:
    """Per connection: inbox messages still to write, and those written but unacked."""

    queue: deque[DirectMessage] = field(default_factory=deque)
    unacked: set[str] = field(default_factory=set)
    more: bool = True  # the backend may hold messages beyond what was fetched


def page_bytes(outbound_buffer_bytes: int) -> int:
    """The size of one inbox page: half the outbound buffer."""
    return max(1, outbound_buffer_bytes // 2)


async def admission_page(node: Node, uid: str) -> list[DirectMessage]:
    """What an admission fetches: marks ``uid`` as seen (``recipients: known``) and
    returns the first inbox page. Raises ``BackendUnavailable``."""
    offline = node.settings.offline
    if offline.recipients == "known":
        await node.backend.mark_seen(uid, offline.ttl_s)
    return await node.backend.inbox_list(
        uid, page_bytes(node.settings.limits.outbound_buffer_bytes)
    )


def start_inbox(node: Node, conn: Connection, page: list[DirectMessage]) -> None:
    """Begin delivering ``page`` (right after ``welcome``)."""
    conn.paging = InboxPaging(deque(page))
    _pump(node, conn)


def _pump(node: Node, conn: Connection) -> None:
    paging = conn.paging
    if paging is None:
        return
    half = conn.outbound_limit // 2
    written = 0
    while paging.queue:
        if (paging.unacked or written) and conn.transport.buffered() >= half:
            break
        dm = paging.queue.popleft()
        if not conn.send(Outbound(partial(encode_dm, dm, True))):
            break
        paging.unacked.add(dm.mid)
        written += 1
    if written:
        node.metrics.frames_out.labels("dm").inc(written)


async def inbox_acked(node: Node, conn: Connection, mids: Sequence[str]) -> None:
    """An ``ack`` frame: remove the messages, then write more once all are acked."""
    assert conn.uid is not None
    await node.backend.inbox_ack(conn.uid, mids)
    paging = conn.paging
    if paging is None:
        return
    paging.unacked.difference_update(mids)
    if paging.unacked or conn.closed:
        return
    if not paging.queue:
        if not paging.more:
            conn.paging = None
            return
        limit = page_bytes(node.settings.limits.outbound_buffer_bytes)
        page = await node.backend.inbox_list(conn.uid, limit)
        paging.more = bool(page)
        paging.queue.extend(page)
    _pump(node, conn)


async def check_recipient(node: Node, sender: str, to: str, request_id: int) -> None:
    """``offline.recipients: known``: refuse (404) a user never seen connected."""
    if node.settings.offline.recipients != "known" or to == sender:
        return
    if not await node.backend.was_seen(to):
        raise RequestError(ErrCode.NOT_FOUND, "unknown user", request_id)
