"""Room delivery without silent loss: a node catches its members up from history.

The backend's pub/sub is at-most-once across a reconnect (a subscriber connection
that dies misses what is published until it is back). :class:`RoomCatchup` sits
between the backend's publications and the node's fan-out and keeps, per subscribed
room, the cursor ``(epoch, seq)`` of the last publication handed to the members.

Guarantees:

* **In order, once.** A live publication is fanned out only when it is the one after
  the cursor; an older one (a duplicate) is dropped.
* **Gaps are filled from history.** A publication past the cursor (a gap), a new
  epoch, or the backend coming back after an outage (``resume_all``, for rooms that
  stay quiet afterwards) starts a catch-up of that room: live publications are
  buffered, the missing ones are read from history (once) and fanned out in order,
  then the buffer is drained by the same rule. Catch-ups of a room never overlap,
  and each ends: a buffered publication that history could not connect to the
  cursor is delivered after a ``resync``.
* **Told when history cannot cover it.** When history no longer holds the whole gap
  (the epoch changed: history was lost; or the gap is older than the history kept),
  every member first gets ``{"t": "resync", "room", "epoch", "seq", "recovered":
  false}``: what follows starts at ``seq + 1`` of ``epoch``; messages in between may
  be lost (docs/reliability.md). Then whatever history still holds follows.
* A member whose ``join`` completed while its room was catching up already got
  history up to its ``ok``: the catch-up skips it for those publications, so it sees
  no duplicate.
* While the backend cannot answer, the catch-up retries with a capped backoff for as
  long as the room has local members; live publications keep being buffered (bounded
  by ``max_buffer``: beyond that the oldest are dropped and history covers them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from core.backend.base import Backend, BackendUnavailable, Publication, Recovery
from core.hub import Hub
from core.outbound import Outbound
from core.protocol import encode, encode_msg

__all__ = ["RoomCatchup", "resync_frame"]

log = logging.getLogger("squall.catchup")


def resync_frame(room: str, epoch: str, seq: int) -> dict[str, object]:
    """The signal that messages of ``room`` up to ``seq`` of ``epoch`` may be missing."""
    return {"t": "resync", "room": room, "epoch": epoch, "seq": seq, "recovered": False}


class RoomCatchup:
    """Cursor per subscribed room, and the catch-up of rooms with a gap; see the module."""

    def __init__(
        self,
        backend: Backend,
        hub: Hub,
        deliver: Callable[[Publication], None],
        ack_origin: Callable[[Publication], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        max_buffer: int = 10_000,
    ) -> None:
        self._backend = backend
        self._hub = hub
        self._deliver = deliver
        self._ack_origin = ack_origin
        self._spawn = spawn
        self._max_buffer = max_buffer
        #: room -> (epoch, seq) of the last publication handed to its members
        self._cursor: dict[str, tuple[str, int]] = {}
        #: rooms catching up -> live publications buffered meanwhile
        self._pending: dict[str, list[Publication]] = {}
        #: rooms catching up -> conn id -> (epoch, seq) its join's history covered
        self._joined: dict[str, dict[str, tuple[str, int]]] = {}
        #: catch-ups done, resync frames sent (observability and tests)
        self.catchups = 0
        self.resyncs = 0

    def catching_up(self, room: str) -> bool:
        return room in self._pending

    # -- events ------------------------------------------------------------------

    def publication(self, pub: Publication) -> None:
        """A live publication from the backend."""
        room = pub.room
        buffered = self._pending.get(room)
        if buffered is not None:
            buffered.append(pub)
            if len(buffered) > self._max_buffer:
                del buffered[0]  # the oldest goes: history has it, or the drain says resync
            return
        cur = self._cursor.get(room)
        if cur is None or (cur[0] == pub.epoch and pub.seq == cur[1] + 1):
            self._cursor[room] = (pub.epoch, pub.seq)
            self._deliver(pub)
        elif cur[0] == pub.epoch and pub.seq <= cur[1]:
            return  # already delivered
        else:
            self._start(room, [pub])

    def seen(self, room: str, epoch: str, seq: int) -> None:
        """A join read ``room``'s position after its subscription was confirmed: the
        cursor starts there unless a live publication already set it."""
        if room not in self._cursor and self._hub.has_members(room):
            self._cursor[room] = (epoch, seq)

    def joined(self, room: str, conn_id: str, epoch: str, seq: int) -> None:
        """A join was answered with history up to ``seq``: skip it in a running catch-up."""
        if room in self._pending:
            self._joined.setdefault(room, {})[conn_id] = (epoch, seq)

    def forget(self, room: str) -> None:
        """The node unsubscribed ``room``: its stream restarts from the next join."""
        self._cursor.pop(room, None)
        self._pending.pop(room, None)
        self._joined.pop(room, None)

    def resume_all(self) -> None:
        """The backend is back (resubscribed): catch up every room with members."""
        for room in list(self._cursor):
            if not self._hub.has_members(room):
                self.forget(room)
            elif room not in self._pending:
                self._start(room, [])

    # -- catch-up ----------------------------------------------------------------

    def _start(self, room: str, buffered: list[Publication]) -> None:
        self._pending[room] = buffered
        self._spawn(self._catch_up(room, buffered))

    async def _catch_up(self, room: str, buffered: list[Publication]) -> None:
        delay = 0.05
        try:
            while self._pending.get(room) is buffered:
                try:
                    await self._fill(room, buffered)
                except BackendUnavailable:
                    if not self._hub.has_members(room):
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                if self._pending.get(room) is buffered:
                    self._drain(room, buffered)
                return
        finally:
            if self._pending.get(room) is buffered:
                del self._pending[room]
                self._joined.pop(room, None)

    async def _fill(self, room: str, buffered: list[Publication]) -> None:
        """Read the gap after the cursor from history and fan it out."""
        cur = self._cursor.get(room)
        if cur is None:
            # nothing delivered since the subscription: the buffer starts the stream
            if buffered:
                first = buffered[0]
                self._cursor[room] = (first.epoch, first.seq - 1)
            return
        epoch, since = cur
        rec = await self._backend.recover(room, since, epoch)
        if self._pending.get(room) is not buffered:
            return
        self.catchups += 1
        if rec.position.epoch == epoch and rec.recovered:
            pubs = rec.publications
        elif rec.position.epoch == epoch and since >= rec.position.seq:
            pubs = []
        else:
            if rec.position.epoch != epoch:
                # history was lost: what the new epoch holds is all there is
                rec = await self._backend.recover(room, 0, rec.position.epoch)
                if self._pending.get(room) is not buffered:
                    return
            pubs = rec.publications
            self._resync(room, rec, pubs)
        for pub in pubs:
            self._fan(pub)

    def _resync(self, room: str, rec: Recovery, pubs: list[Publication]) -> None:
        start = pubs[0].seq - 1 if pubs else rec.position.seq
        self._signal(room, rec.position.epoch, start)

    def _signal(self, room: str, epoch: str, start: int) -> None:
        frame = resync_frame(room, epoch, start)
        out = Outbound(partial(encode, frame))
        skip = self._joined.get(room, {})
        for conn in self._hub.members(room):
            if room in conn.joining or conn.conn_id in skip:
                continue  # its join answer says where it stands
            conn.send(out)
        self.resyncs += 1
        self._cursor[room] = (epoch, start)
        log.warning("room %r: history could not cover a gap, members told (resync)", room)

    def _drain(self, room: str, buffered: list[Publication]) -> None:
        """Hand the buffered live publications out, after history filled the gap.

        One history read per catch-up: a publication that still does not follow the
        cursor (history did not hold what precedes it, or it is of an epoch history
        no longer shows) is delivered after a ``resync``, so a catch-up always ends.
        """
        while buffered:
            pub = buffered.pop(0)
            cur = self._cursor.get(room)
            if cur is not None and cur[0] == pub.epoch and pub.seq <= cur[1]:
                continue
            if cur is not None and (cur[0] != pub.epoch or pub.seq != cur[1] + 1):
                self._signal(room, pub.epoch, pub.seq - 1)
            self._fan(pub)

    def _fan(self, pub: Publication) -> None:
        """Fan out one caught-up publication, skipping joins that already covered it."""
        self._cursor[pub.room] = (pub.epoch, pub.seq)
        skip = self._joined.get(pub.room)
        if not skip:
            self._deliver(pub)
            return
        self._ack_origin(pub)
        out = Outbound(partial(encode_msg, pub))
        for conn in self._hub.members(pub.room):
            covered = skip.get(conn.conn_id)
            if covered is not None and covered[0] == pub.epoch and covered[1] >= pub.seq:
                continue
            pending = conn.joining.get(pub.room)
            if pending is not None:
                pending.append(pub)
            else:
                conn.send(out)
