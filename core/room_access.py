"""Room access follows the token: after an in-band ``refresh`` the connection keeps
only the rooms its new claims allow.

Guarantees of :func:`leave_disallowed`:

* Every joined room that the new claims' ``rooms`` patterns no longer match
  (:func:`core.auth.room_allowed`) is left exactly as a ``leave`` would leave it
  (local membership dropped first, then the presence record and the node's
  subscription), so no publication, API publish included, reaches the
  connection for that room once the function has started.
* The client is told with a server frame ``{"t": "left", "room", "code": 403,
  "reason"}`` per room (an extension of PROTOCOL.md, see docs/protocol.md), sent
  before the ``ok`` of the refresh.
"""

from __future__ import annotations

from typing import Any

from core.auth import Claims, room_allowed
from core.backend.base import Backend, Membership
from core.connection import Connection
from core.errors import BackendUnavailable
from core.hub import Hub
from core.metrics import Metrics
from core.subscriptions import Subscriptions

__all__ = ["LEFT_REASON", "leave_disallowed", "left_frame"]

LEFT_REASON = "room not allowed by the refreshed token"


def left_frame(room: str, reason: str = LEFT_REASON) -> dict[str, Any]:
    """The server frame telling a client it is no longer a member of ``room``."""
    return {"t": "left", "room": room, "code": 403, "reason": reason}


async def leave_disallowed(
    conn: Connection,
    claims: Claims,
    *,
    hub: Hub,
    backend: Backend,
    subs: Subscriptions,
    metrics: Metrics,
    announce: bool,
) -> list[str]:
    """Leave every room of ``conn`` that ``claims`` do not allow; returns them."""
    rooms = sorted(room for room in conn.rooms if not room_allowed(claims, room))
    if not rooms or conn.uid is None:
        return rooms
    for room in rooms:  # local first: nothing more is delivered for these rooms
        hub.remove_member(room, conn)
        conn.joining.pop(room, None)
        conn.send_frame(left_frame(room))
    metrics.frames_out.labels("left").inc(len(rooms))
    metrics.rooms.set(hub.room_count())
    for room in rooms:
        try:
            await backend.presence_leave(Membership(room, conn.uid, conn.conn_id), announce)
            await subs.sync(room)
        except BackendUnavailable:
            # The membership expires with its next missed refresh; the room is left here.
            metrics.backend_errors.inc()
    return rooms
