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

from typing import TYPE_CHECKING, Any

from core.auth import Claims, room_allowed
from core.backend.base import BackendUnavailable, Membership
from core.connection import Connection

if TYPE_CHECKING:
    from core.node import Node

__all__ = ["LEFT_REASON", "leave_disallowed", "left_frame"]

LEFT_REASON = "room not allowed by the refreshed token"


def left_frame(room: str, reason: str = LEFT_REASON) -> dict[str, Any]:
    """The server frame telling a client it is no longer a member of ``room``."""
    return {"t": "left", "room": room, "code": 403, "reason": reason}


async def leave_disallowed(node: Node, conn: Connection, claims: Claims) -> list[str]:
    """Leave every room of ``conn`` that ``claims`` do not allow; returns them."""
    rooms = sorted(room for room in conn.rooms if not room_allowed(claims, room))
    if not rooms or conn.uid is None:
        return rooms
    for room in rooms:  # local first: nothing more is delivered for these rooms
        node.hub.remove_member(room, conn)
        conn.joining.pop(room, None)
        conn.send_frame(left_frame(room))
    node.metrics.frames_out.labels("left").inc(len(rooms))
    node.metrics.rooms.set(node.hub.room_count())
    announce = node.settings.rooms.presence_events
    for room in rooms:
        try:
            await node.backend.presence_leave(Membership(room, conn.uid, conn.conn_id), announce)
            await node.subs.sync(room)
        except BackendUnavailable:
            # The membership expires with its next missed refresh; the room is left here.
            node.metrics.backend_errors.inc()
    return rooms
