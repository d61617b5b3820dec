"""The offline inbox as a connection sees it: delivery in pages paced by acks, and
who may queue what for whom.

Guarantees:

* **A recipient is never cut for its own backlog.** Admission fetches one page of
  the inbox (:func:`page_bytes`: half of ``limits.outbound_buffer_bytes`` of
  :func:`~core.backend.base.inbox_size`); after ``welcome`` messages are written
  up to half the outbound buffer (a quarter on the JSON subprotocol, whose frames
  may be larger; at least one). The next messages, and then the next page, follow
  only once every message written so far is acked. So the inbox adds at most half
  the buffer to it, whatever its size (a slow-consumer cut, 4011, needs the client
  itself to stop reading).
* Messages delivered live and not yet acked may come again as ``offline`` ones
  when a later page is fetched (clients de-duplicate by ``mid``); a client that
  never acks receives one page per connection.
* Acks of paged messages are not charged to the rate limit (:func:`acks_owed`):
  a client acking one frame per message keeps up with any backlog.
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

from core.backend.base import Backend, DirectMessage, InboxPage, inbox_size
from core.codes import ErrCode
from core.config import Settings
from core.errors import RequestError
from core.metrics import Metrics
from core.outbound import Outbound
from core.protocol import Encoding, encode_dm

if TYPE_CHECKING:
    from core.connection import Connection

__all__ = [
    "QUOTA_REASON",
    "InboxPaging",
    "acks_owed",
    "admission_inbox",
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


def admission_inbox(settings: Settings) -> InboxPage:
    """What an admission asks of the inbox in its own step (:class:`InboxPage`): the
    first page, after marking the user seen with ``offline.recipients: known``."""
    offline = settings.offline
    seen = offline.ttl_s if offline.recipients == "known" else None
    return InboxPage(page_bytes(settings.limits.outbound_buffer_bytes), seen)


async def admission_page(backend: Backend, page: InboxPage, uid: str) -> list[DirectMessage]:
    """``page`` (:func:`admission_inbox`) done by separate calls, for a backend whose
    admission could not do it in its own step: marks ``uid`` as seen when asked and
    returns the first inbox page. Raises ``BackendUnavailable``."""
    if page.seen_ttl_s:
        await backend.mark_seen(uid, page.seen_ttl_s)
    return await backend.inbox_list(uid, page.max_bytes)


def start_inbox(conn: Connection, page: list[DirectMessage], metrics: Metrics) -> None:
    """Begin delivering ``page`` (right after ``welcome``)."""
    conn.paging = InboxPaging(deque(page))
    _pump(conn, metrics)


def _pump(conn: Connection, metrics: Metrics) -> None:
    """Write queued messages until half the outbound buffer is used by this round
    (JSON may inflate data: a quarter there); at least one when none is unacked."""
    paging = conn.paging
    if paging is None:
        return
    budget = conn.outbound_limit // (2 if conn.encoding == Encoding.MSGPACK else 4)
    used = written = 0
    while paging.queue:
        size = inbox_size(paging.queue[0])
        if (paging.unacked or written) and used + size > budget:
            break
        dm = paging.queue.popleft()
        if not conn.send(Outbound(partial(encode_dm, dm, True))):
            break
        paging.unacked.add(dm.mid)
        used += size
        written += 1
    if written:
        metrics.frames_out.labels("dm").inc(written)


def acks_owed(conn: Connection, mids: Sequence[str]) -> bool:
    """True when every mid acks an inbox message this connection was paged.

    Such acks are not charged to the rate limit: the server chose to send those
    messages, and a client acking them one frame each must not be cut (4008) for
    keeping up with its own backlog. Their number is bounded by what was sent.
    """
    paging = conn.paging
    return paging is not None and bool(mids) and all(m in paging.unacked for m in mids)


async def inbox_acked(
    backend: Backend, settings: Settings, metrics: Metrics, conn: Connection, mids: Sequence[str]
) -> None:
    """An ``ack`` frame: remove the messages, then write more once all are acked."""
    assert conn.uid is not None
    await backend.inbox_ack(conn.uid, mids)
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
        page = await backend.inbox_list(conn.uid, page_bytes(settings.limits.outbound_buffer_bytes))
        paging.more = bool(page)
        paging.queue.extend(page)
    _pump(conn, metrics)


async def check_recipient(
    backend: Backend, settings: Settings, sender: str, to: str, request_id: int
) -> None:
    """``offline.recipients: known``: refuse (404) a user never seen connected."""
    if settings.offline.recipients != "known" or to == sender:
        return
    if not await backend.was_seen(to):
        raise RequestError(ErrCode.NOT_FOUND, "unknown user", request_id)
