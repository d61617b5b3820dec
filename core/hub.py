"""The node's local state: its connections, the rooms they joined, their users.

The hub only indexes and fans out; it does not talk to the backend. Fan-out writes
one already-encoded :class:`~core.outbound.Outbound` to every local member, so a
room message costs one encode per subprotocol in use whatever the member count.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from core.backend.base import Publication
from core.connection import Connection
from core.outbound import Outbound

__all__ = ["Hub"]


class Hub:
    """Indexes of this node's connections. All methods are O(1) except fan-out."""

    def __init__(self) -> None:
        self._conns: dict[str, Connection] = {}
        self._users: dict[str, dict[str, Connection]] = {}
        self._rooms: dict[str, dict[str, Connection]] = {}
        #: connections admitted (or being admitted) but not yet open, by conn id: a
        #: kick_oldest eviction can reach one in this window and must not be lost
        self.admitting: dict[str, Connection] = {}

    # -- connections -----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._conns)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._conns.values()))

    def get(self, conn_id: str) -> Connection | None:
        return self._conns.get(conn_id)

    def first(self) -> Connection | None:
        """The connection tracked longest (connections are kept in the order added)."""
        return next(iter(self._conns.values()), None)

    def add(self, conn: Connection) -> None:
        """Track a connection (authenticated or not yet)."""
        self._conns[conn.conn_id] = conn

    def bind_user(self, conn: Connection) -> None:
        """Index an authenticated connection under its user."""
        assert conn.uid is not None
        self._users.setdefault(conn.uid, {})[conn.conn_id] = conn

    def remove(self, conn: Connection) -> list[str]:
        """Forget a connection; returns the rooms it was still a member of."""
        self._conns.pop(conn.conn_id, None)
        if conn.uid is not None:
            user = self._users.get(conn.uid)
            if user is not None:
                user.pop(conn.conn_id, None)
                if not user:
                    del self._users[conn.uid]
        rooms = list(conn.rooms)
        for room in rooms:
            self.remove_member(room, conn)
        return rooms

    def of_user(self, uid: str) -> list[Connection]:
        return list(self._users.get(uid, {}).values())

    def user_count(self) -> int:
        return len(self._users)

    # -- rooms -----------------------------------------------------------------

    def add_member(self, room: str, conn: Connection) -> None:
        conn.rooms.add(room)
        self._rooms.setdefault(room, {})[conn.conn_id] = conn

    def remove_member(self, room: str, conn: Connection) -> None:
        conn.rooms.discard(room)
        conn.joining.pop(room, None)
        conn.memberships.pop(room, None)
        members = self._rooms.get(room)
        if members is not None:
            members.pop(conn.conn_id, None)
            if not members:
                del self._rooms[room]

    def has_members(self, room: str) -> bool:
        return room in self._rooms

    def members(self, room: str) -> Iterable[Connection]:
        return list(self._rooms.get(room, {}).values())

    def room_count(self) -> int:
        return len(self._rooms)

    def rooms(self) -> list[str]:
        return list(self._rooms)

    # -- fan-out ---------------------------------------------------------------

    def fanout(self, pub: Publication, out: Outbound) -> int:
        """Write ``out`` (the ``msg`` frame of ``pub``) to every member; returns writes.

        Members still being answered a ``join`` get ``pub`` buffered instead, and
        the join flushes it after its ``ok``.
        """
        members = self._rooms.get(pub.room)
        if not members:
            return 0
        sent = 0
        # Copy: a write may cut a slow consumer, which removes it from the room.
        for conn in list(members.values()):
            pending = conn.joining.get(pub.room)
            if pending is not None:
                pending.append(pub)
            elif conn.send(out):
                sent += 1
        return sent
