"""What the client knows about each room it joined, and how that knowledge changes.

Guarantees of :class:`RoomState`:

* :meth:`RoomState.take` accepts a room's ``msg`` frames only in increasing ``seq``
  order: a ``seq`` not above the last one seen is a redelivery and is refused, except
  after the room's ``epoch`` changed (its history was lost and ``seq`` restarted).
* :meth:`RoomState.rejoin_frame` asks for exactly what was missed: ``since``/``epoch``
  are sent only when both are known.
* A rejoin answered with ``recovered: false`` sets :attr:`RoomState.recovered` to
  False and logs a warning on ``squall.client``: the missed messages are lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from client.frames import Frame

__all__ = ["RoomState"]

log = logging.getLogger("squall.client")


@dataclass
class RoomState:
    """What the client knows about one room it joined.

    ``seq``/``epoch``: the last message sequence number seen and the room's epoch,
    sent as ``since``/``epoch`` on rejoin. ``recovered``: outcome of the latest
    rejoin (``None`` before any).
    """

    name: str
    seq: int | None = None
    epoch: str | None = None
    joined: bool = False
    recovered: bool | None = None
    #: a room token (namespaces with ``join: token``), sent again on rejoin
    token: str | None = None
    #: a server-side room (``joined`` frame): the server rejoins it on reconnect
    server_side: bool = False

    def joined_ok(self, ok: Frame, rejoin: bool = False) -> None:
        """A join's ``ok``: every message up to ``ok.seq`` was delivered or is lost."""
        self.joined = True
        self.seq = int(ok["seq"])
        self.epoch = str(ok["epoch"])
        if rejoin:
            self.recovered = bool(ok.get("recovered"))
            if not self.recovered:
                log.warning("room %r: messages missed while disconnected are lost", self.name)

    def rejoin_frame(self) -> Frame:
        """The ``join`` (without ``id``) that rejoins this room after a reconnect."""
        frame: Frame = {"t": "join", "room": self.name}
        if self.token is not None:
            frame["token"] = self.token
        if self.seq is not None and self.epoch is not None:
            frame["since"] = self.seq
            frame["epoch"] = self.epoch
        return frame

    def take(self, frame: Frame) -> bool:
        """Whether ``frame`` (a ``msg`` of this room) is new; if so it is recorded."""
        seq = frame.get("seq")
        if not isinstance(seq, int):
            return False
        epoch = frame.get("epoch")
        if isinstance(epoch, str) and epoch != self.epoch:
            # the room's history was lost and its seq restarted: not duplicates
            self.epoch, self.seq = epoch, None
        if self.seq is not None and seq <= self.seq:
            return False  # already delivered before the reconnect
        self.seq = seq
        return True
