"""The in-process backend: one node is the whole cluster.

Every guarantee of :class:`~core.backend.base.Backend` holds here trivially for
atomicity: no method awaits between reading and writing state, so each call is one
indivisible step on the event loop (``admit``, ``family_rotate``, ``publish`` ... are
as atomic as their Lua counterparts in the Redis backend). It never raises
:class:`~core.backend.base.BackendUnavailable`.

Delivery. Publications, presence events and commands reach the listener given to
:meth:`MemoryBackend.start` through ``loop.call_soon``: never inside the call that
caused them, so a ``publish`` result is always seen by the caller before the
listener sees the publication, and in call order (``call_soon`` is FIFO), hence in
``seq`` order per room. A room must be subscribed both when the publication (or
presence event) is produced and when it is delivered. There are no other nodes:
:meth:`MemoryBackend.send_command` delivers only to ``self.node_id`` and drops
commands for any other node id (such a node cannot exist in this process).

Expiry and memory bounds. Every expiry is judged by the injected
:class:`~core.clock.Clock`: ``monotonic()`` for relative TTLs (history, bans,
nonces, sessions, memberships, refresh families, lockouts, rate windows, inbox),
``wall()`` for the absolute ``until`` of revoked tokens. Expired entries are
invisible at once (each read checks the deadline and drops what has passed) and
are physically removed by :meth:`MemoryBackend.purge`, a full sweep that every
state-adding call runs at most once per :data:`PURGE_INTERVAL_S`. So an entry
outlives its deadline by at most ``PURGE_INTERVAL_S`` of activity, and with no
activity nothing grows. Sliding-window logs keep at most ``limit`` (rate) or
``failures`` (lockout) timestamps per key and vanish once their window is empty,
so idle users and ips cost nothing.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from core.backend.base import (
    AccessState,
    Admission,
    AttemptLimits,
    Backend,
    BackendListener,
    BackendOptions,
    DirectMessage,
    InboxPage,
    InboxQuotaExceeded,
    Membership,
    NodeCommand,
    NodeStats,
    Policy,
    PresenceEvent,
    Publication,
    RateLimited,
    RateSpec,
    Recovery,
    RoomPosition,
    RotateOutcome,
    SessionRecord,
    inbox_size,
)
from core.clock import Clock

__all__ = ["PURGE_INTERVAL_S", "MemoryBackend"]

#: Seconds between two full sweeps of expired entries (run lazily by adding calls).
PURGE_INTERVAL_S = 10.0

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class _ExpiringMap(Generic[_K, _V]):
    """A dict whose entries vanish at their deadline (``None``: never), judged by ``now``.

    Reads never return an expired value; :meth:`purge` removes expired entries.
    Re-putting a key keeps its insertion position (plain ``dict`` semantics).
    """

    __slots__ = ("_items", "_now")

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._items: dict[_K, tuple[_V, float | None]] = {}

    def get(self, key: _K) -> _V | None:
        item = self._items.get(key)
        if item is None:
            return None
        value, deadline = item
        if deadline is not None and deadline <= self._now():
            del self._items[key]
            return None
        return value

    def put(self, key: _K, value: _V, deadline: float | None) -> None:
        self._items[key] = (value, deadline)

    def extend(self, key: _K, deadline: float) -> bool:
        """Move a live entry's deadline; an expired or missing one stays gone."""
        value = self.get(key)
        if value is None:
            return False
        self._items[key] = (value, deadline)
        return True

    def pop(self, key: _K) -> _V | None:
        """Remove ``key``; returns its value if it was live."""
        value = self.get(key)
        self._items.pop(key, None)
        return value

    def values(self) -> Iterator[_V]:
        """Live values in insertion order (purges first)."""
        self.purge()
        return (value for value, _ in self._items.values())

    def purge(self) -> int:
        now = self._now()
        dead = [k for k, (_, d) in self._items.items() if d is not None and d <= now]
        for key in dead:
            del self._items[key]
        return len(dead)

    def __len__(self) -> int:
        """Stored entries, expired ones not yet purged included."""
        return len(self._items)


@dataclass(slots=True)
class _Room:
    epoch: str
    history: deque[Publication]
    seq: int = 0


@dataclass(slots=True)
class _Family:
    live: str
    spent: set[str] = field(default_factory=set)
    revoked: bool = False


@dataclass(slots=True)
class _SlidingLog:
    """Event times (monotonic) inside the last ``window_s`` seconds, oldest first."""

    window_s: float
    times: deque[float] = field(default_factory=deque)

    def trim(self, now: float) -> None:
        horizon = now - self.window_s
        while self.times and self.times[0] <= horizon:
            self.times.popleft()


def _purge_nested(outer: dict[str, _ExpiringMap[str, _V]]) -> int:
    removed = 0
    for key in list(outer):
        removed += outer[key].purge()
        if not outer[key]:
            del outer[key]
    return removed


def _purge_logs(logs: dict[str, _SlidingLog], now: float) -> int:
    removed = 0
    for key in list(logs):
        logs[key].trim(now)
        if not logs[key].times:
            del logs[key]
            removed += 1
    return removed


class MemoryBackend(Backend):
    """A complete single-process :class:`Backend`; see the module docstring for guarantees.

    Besides the interface it offers :meth:`set_key` / :meth:`get_key`, the small
    expiring key/value map behind bans (``auth:{uid}`` = ``banned``), so an operator
    tool or a test can write those keys directly as it would in Redis, and
    :meth:`purge` / :meth:`entry_count` to observe that memory stays bounded.
    """

    def __init__(self, node_id: str, options: BackendOptions, clock: Clock) -> None:
        self.node_id = node_id
        self.options = options
        self._clock = clock
        self._listener: BackendListener | None = None
        self._closed = False
        self._subscribed: set[str] = set()
        self._next_purge = clock.monotonic() + PURGE_INTERVAL_S
        mono, wall = clock.monotonic, clock.wall
        self._rooms: _ExpiringMap[str, _Room] = _ExpiringMap(mono)
        #: room -> uid -> conn_id -> membership
        self._members: dict[str, dict[str, _ExpiringMap[str, Membership]]] = {}
        #: uid -> conn_id -> session record
        self._sessions: dict[str, _ExpiringMap[str, SessionRecord]] = {}
        self._kv: _ExpiringMap[str, str] = _ExpiringMap(mono)
        self._revoked: _ExpiringMap[str, int] = _ExpiringMap(wall)
        self._families: _ExpiringMap[str, _Family] = _ExpiringMap(mono)
        self._nonces: _ExpiringMap[str, float] = _ExpiringMap(mono)
        self._failures: dict[str, _SlidingLog] = {}
        #: ip -> monotonic time the block ends
        self._blocks: _ExpiringMap[str, float] = _ExpiringMap(mono)
        self._rates: dict[str, _SlidingLog] = {}
        #: ip -> attempt id -> deadline of an authentication attempt in flight
        self._in_flight: dict[str, _ExpiringMap[str, float]] = {}
        self._inboxes: _ExpiringMap[str, OrderedDict[str, DirectMessage]] = _ExpiringMap(mono)
        #: node id -> JSON of its stats record (only this node's in one process)
        self._stats: _ExpiringMap[str, str] = _ExpiringMap(mono)

    # -- life cycle ------------------------------------------------------------

    async def start(self, listener: BackendListener) -> None:
        """Start delivering to ``listener``; it is told ``on_availability(True)`` soon after."""
        self._listener = listener
        self._closed = False
        asyncio.get_running_loop().call_soon(self._deliver_availability, listener)

    async def close(self) -> None:
        """Drop this node's sessions and every membership, stop delivery. Idempotent.

        State other than sessions and memberships (history, bans, ...) stays: it
        belongs to the cluster, which here outlives the node only until the process ends.
        """
        for uid in list(self._sessions):
            user = self._sessions[uid]
            for record in list(user.values()):
                if record.node_id == self.node_id:
                    user.pop(record.conn_id)
            if not user:
                del self._sessions[uid]
        self._members.clear()
        self._subscribed.clear()
        self._listener = None
        self._closed = True

    @property
    def available(self) -> bool:
        return self._listener is not None and not self._closed

    # -- housekeeping ----------------------------------------------------------

    def purge(self) -> int:
        """Remove every expired entry now; returns how many keys were removed."""
        now = self._clock.monotonic()
        self._next_purge = now + PURGE_INTERVAL_S
        flat: tuple[Callable[[], int], ...] = (
            self._rooms.purge,
            self._kv.purge,
            self._revoked.purge,
            self._families.purge,
            self._nonces.purge,
            self._blocks.purge,
            self._inboxes.purge,
        )
        removed = sum(purge() for purge in flat)
        removed += _purge_nested(self._sessions) + _purge_nested(self._in_flight)
        for room in list(self._members):
            removed += _purge_nested(self._members[room])
            if not self._members[room]:
                del self._members[room]
        removed += _purge_logs(self._failures, now) + _purge_logs(self._rates, now)
        return removed

    def entry_count(self) -> int:
        """Keys held in every map (rooms, leases, logs, ...), expired-but-unpurged included."""
        flat = (
            len(self._rooms)
            + len(self._kv)
            + len(self._revoked)
            + len(self._families)
            + len(self._nonces)
            + len(self._blocks)
            + len(self._inboxes)
            + len(self._failures)
            + len(self._rates)
        )
        sessions = sum(len(user) for user in self._sessions.values())
        sessions += sum(len(attempts) for attempts in self._in_flight.values())
        members = sum(len(conns) for room in self._members.values() for conns in room.values())
        return flat + sessions + members

    def _maybe_purge(self) -> None:
        # Called by every method that adds state: amortises the O(n) sweep.
        if self._clock.monotonic() >= self._next_purge:
            self.purge()

    def _deadline(self, ttl_s: float) -> float:
        return self._clock.monotonic() + ttl_s

    # -- delivery --------------------------------------------------------------

    def _deliver_availability(self, listener: BackendListener) -> None:
        if listener is self._listener:
            listener.on_availability(True)

    def _deliver_publication(self, pub: Publication) -> None:
        if self._listener is not None and pub.room in self._subscribed:
            self._listener.on_publication(pub)

    def _deliver_presence(self, event: PresenceEvent) -> None:
        if self._listener is not None and event.room in self._subscribed:
            self._listener.on_presence(event)

    def _deliver_command(self, command: NodeCommand) -> None:
        if self._listener is not None:
            self._listener.on_command(command)

    def _announce(self, event: PresenceEvent) -> None:
        if self._listener is not None and event.room in self._subscribed:
            asyncio.get_running_loop().call_soon(self._deliver_presence, event)

    # -- rooms -----------------------------------------------------------------

    async def subscribe_room(self, room: str) -> None:
        self._subscribed.add(room)

    async def unsubscribe_room(self, room: str) -> None:
        self._subscribed.discard(room)

    def _room(self, room: str) -> _Room:
        state = self._rooms.get(room)
        if state is None:
            self._maybe_purge()
            state = _Room(epoch=secrets.token_hex(8), history=deque())
            # A room nobody publishes to still expires, so position() cannot leak.
            self._rooms.put(room, state, self._deadline(self.options.history_for(room)[1]))
        return state

    async def publish(
        self,
        room: str,
        data: bytes,
        from_uid: str | None,
        ts: int,
        origin: str | None = None,
        rate: RateSpec | None = None,
    ) -> Publication:
        if rate is not None:
            retry = await self.rate_hit(rate.key, rate.limit, rate.window_s)
            if retry > 0:
                raise RateLimited(retry)
        state = self._room(room)
        state.seq += 1
        pub = Publication(room, state.seq, state.epoch, from_uid, ts, data, origin)
        state.history.append(pub)
        size, ttl_s = self.options.history_for(room)
        while len(state.history) > size:
            state.history.popleft()
        self._rooms.put(room, state, self._deadline(ttl_s))
        if self._listener is not None and room in self._subscribed:
            asyncio.get_running_loop().call_soon(self._deliver_publication, pub)
        return pub

    async def position(self, room: str) -> RoomPosition:
        state = self._room(room)
        return RoomPosition(state.seq, state.epoch)

    async def recover(self, room: str, since: int, epoch: str | None) -> Recovery:
        state = self._room(room)
        position = RoomPosition(state.seq, state.epoch)
        if epoch is not None and epoch != state.epoch:
            return Recovery([], position, recovered=False)
        if since >= state.seq:
            return Recovery([], position, recovered=True)
        pubs = [p for p in state.history if p.seq > since]
        complete = bool(pubs) and pubs[0].seq == since + 1
        return Recovery(pubs, position, recovered=complete)

    # -- presence --------------------------------------------------------------

    async def presence_join(self, m: Membership, announce: bool) -> bool:
        """Add ``m``; True when ``m.uid`` had no live membership of the room before.

        Joining again with the same membership only extends it and returns False.
        """
        self._maybe_purge()
        room = self._members.setdefault(m.room, {})
        conns = room.get(m.uid)
        if conns is None:
            conns = room[m.uid] = _ExpiringMap(self._clock.monotonic)
        conns.purge()
        first = not conns
        conns.put(m.conn_id, m, self._deadline(self.options.session_ttl_s))
        if first and announce:
            self._announce(PresenceEvent(m.room, m.uid, "join", m.conn_id))
        return first

    async def presence_leave(self, m: Membership, announce: bool) -> bool:
        """Remove ``m``; True when it was live and the user's last. Unknown ``m``: False."""
        room = self._members.get(m.room)
        conns = room.get(m.uid) if room is not None else None
        if room is None or conns is None or conns.pop(m.conn_id) is None:
            return False
        conns.purge()
        if conns:
            return False
        del room[m.uid]
        if not room:
            del self._members[m.room]
        if announce:
            self._announce(PresenceEvent(m.room, m.uid, "leave", m.conn_id))
        return True

    async def presence_members(self, room: str) -> list[str]:
        live = []
        for uid, conns in self._members.get(room, {}).items():
            conns.purge()
            if conns:
                live.append(uid)
        return sorted(live)

    # -- session registry ------------------------------------------------------

    async def admit(
        self, record: SessionRecord, limit: int, policy: Policy, inbox: InboxPage | None = None
    ) -> Admission:
        """See :meth:`Backend.admit`. A record with a known ``conn_id`` replaces it.

        One step (nothing here suspends): revocation and ban are read after the write
        (``Admission.access``), then the inbox page asked for (``Admission.inbox``).

        Raises ValueError for ``limit < 1`` or an unknown policy (caller bugs).
        """
        if limit < 1 or policy not in ("reject", "kick_oldest"):
            raise ValueError(f"bad admission limit/policy: {limit!r}/{policy!r}")
        self._maybe_purge()
        user = self._sessions.setdefault(record.uid, _ExpiringMap(self._clock.monotonic))
        others = [r for r in user.values() if r.conn_id != record.conn_id]
        evicted: list[SessionRecord] = []
        if len(others) >= limit:
            if policy == "reject":
                return Admission(admitted=False)
            others.sort(key=lambda r: r.connected_at)  # stable: ties keep admission order
            evicted = others[: len(others) - limit + 1]
            for old in evicted:
                user.pop(old.conn_id)
        user.put(record.conn_id, record, self._deadline(self.options.session_ttl_s))
        access = AccessState(
            lockout_s=0.0,
            revoked=await self.is_revoked(record.jti or ""),  # as access_state reads it
            banned=await self.is_banned(record.uid),
        )
        page: list[DirectMessage] | None = None
        if inbox is not None and not (access.revoked or access.banned):
            if inbox.seen_ttl_s:
                await self.mark_seen(record.uid, inbox.seen_ttl_s)
            page = await self.inbox_list(record.uid, inbox.max_bytes)
        return Admission(admitted=True, evicted=evicted, access=access, inbox=page)

    async def release(self, record: SessionRecord) -> None:
        user = self._sessions.get(record.uid)
        if user is not None:
            user.pop(record.conn_id)
            if not user:
                del self._sessions[record.uid]

    async def sessions_of(self, uid: str) -> list[SessionRecord]:
        user = self._sessions.get(uid)
        if user is None:
            return []
        return sorted(user.values(), key=lambda r: r.connected_at)

    async def refresh(
        self, sessions: Sequence[SessionRecord], memberships: Sequence[Membership]
    ) -> int:
        """Extend live records only: an expired one stays gone (as in Redis)."""
        deadline = self._deadline(self.options.session_ttl_s)
        gone = 0
        for record in sessions:
            user = self._sessions.get(record.uid)
            if user is None or not user.extend(record.conn_id, deadline):
                gone += 1
        for m in memberships:
            conns = self._members.get(m.room, {}).get(m.uid)
            if conns is not None:
                conns.extend(m.conn_id, deadline)
        return gone

    async def cluster_counts(self) -> dict[str, int]:
        """Live sessions per ``record.node_id``; nodes without sessions are absent."""
        counts: dict[str, int] = {}
        for user in self._sessions.values():
            for record in user.values():
                counts[record.node_id] = counts.get(record.node_id, 0) + 1
        return counts

    async def put_node_stats(self, record: Mapping[str, Any], ttl_s: float) -> None:
        """Stored as JSON text, as Redis does: what :meth:`node_stats` returns is a copy."""
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        text = json.dumps({**record, "node": self.node_id})
        self._stats.put(self.node_id, text, self._deadline(ttl_s))

    async def drop_node_stats(self) -> None:
        self._stats.pop(self.node_id)

    async def node_stats(self) -> list[NodeStats]:
        records: list[NodeStats] = [json.loads(text) for text in self._stats.values()]
        return sorted(records, key=lambda r: str(r["node"]))

    async def send_command(self, node_id: str, command: NodeCommand) -> None:
        """Deliver to this node's listener; any other ``node_id`` does not exist: dropped."""
        if node_id == self.node_id and self._listener is not None:
            asyncio.get_running_loop().call_soon(self._deliver_command, command)

    # -- bans and revoked tokens -----------------------------------------------

    async def set_key(self, key: str, value: str, ttl_s: float | None) -> None:
        """Set ``key`` to ``value`` for ``ttl_s`` seconds (``None``: until overwritten).

        Raises ValueError for ``ttl_s <= 0`` (Redis refuses such an expiry too).
        """
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s!r}")
        self._maybe_purge()
        self._kv.put(key, value, None if ttl_s is None else self._deadline(ttl_s))

    async def get_key(self, key: str) -> str | None:
        """The live value of ``key``, or None."""
        return self._kv.get(key)

    async def ban(self, uid: str, ttl_s: int | None) -> None:
        await self.set_key(f"auth:{uid}", "banned", ttl_s)

    async def unban(self, uid: str) -> None:
        self._kv.pop(f"auth:{uid}")

    async def is_banned(self, uid: str) -> bool:
        return self._kv.get(f"auth:{uid}") == "banned"

    async def revoke_jti(self, jti: str, until: int) -> None:
        """Blacklist ``jti`` until wall time ``until`` (ms); a past ``until`` stores nothing."""
        if until > self._clock.wall() * 1000:
            self._maybe_purge()
            self._revoked.put(jti, until, until / 1000)

    async def is_revoked(self, jti: str) -> bool:
        return self._revoked.get(jti) is not None

    # -- refresh-token families ------------------------------------------------

    async def family_start(self, family: str, token_id: str, ttl_s: int) -> None:
        """Create (or replace) ``family`` with live token ``token_id`` for ``ttl_s``."""
        self._maybe_purge()
        self._families.put(family, _Family(live=token_id), self._deadline(ttl_s))

    async def family_rotate(
        self, family: str, presented: str, new_id: str, ttl_s: int
    ) -> RotateOutcome:
        """See :meth:`Backend.family_rotate`; ROTATED extends the family by ``ttl_s``.

        A token that never belonged to the family is UNKNOWN and changes nothing.
        """
        fam = self._families.get(family)
        if fam is None or fam.revoked:
            return RotateOutcome.UNKNOWN
        if presented == fam.live:
            fam.spent.add(presented)
            fam.live = new_id
            self._families.put(family, fam, self._deadline(ttl_s))
            return RotateOutcome.ROTATED
        if presented in fam.spent:
            self._revoke(fam)
            return RotateOutcome.REUSED
        return RotateOutcome.UNKNOWN

    async def family_revoke(self, family: str) -> None:
        fam = self._families.get(family)
        if fam is not None:
            self._revoke(fam)

    @staticmethod
    def _revoke(fam: _Family) -> None:
        # The tombstone keeps its expiry so a revoked family cannot be rotated again.
        fam.revoked = True
        fam.spent.clear()

    # -- nonces, lockouts, rate limits -----------------------------------------

    async def claim_nonce(self, nonce: str, ttl_s: int) -> bool:
        if self._nonces.get(nonce) is not None:
            return False
        self._maybe_purge()
        self._nonces.put(nonce, self._clock.monotonic(), self._deadline(ttl_s))
        return True

    async def record_auth_failure(
        self, ip: str, failures: int, window_s: float, block_s: float
    ) -> float:
        """See :meth:`Backend.record_auth_failure`.

        While blocked, failures are not counted (the block is not extended); a block
        starts a fresh window, so after it ends ``failures`` new ones are needed.
        """
        remaining = await self.lockout_remaining(ip)
        if remaining > 0:
            return remaining
        self._maybe_purge()
        now = self._clock.monotonic()
        log = self._failures.setdefault(ip, _SlidingLog(window_s))
        log.window_s = window_s
        log.trim(now)
        log.times.append(now)
        if len(log.times) < failures:
            return 0.0
        del self._failures[ip]
        self._blocks.put(ip, now + block_s, now + block_s)
        return float(block_s)

    async def lockout_remaining(self, ip: str) -> float:
        until = self._blocks.get(ip)
        return 0.0 if until is None else max(0.0, until - self._clock.monotonic())

    async def attempt_begin(self, ip: str, attempt: str, limits: AttemptLimits) -> float:
        """See :meth:`Backend.attempt_begin` (one step: nothing awaits inside)."""
        remaining = await self.lockout_remaining(ip)
        if remaining > 0:
            return remaining
        self._maybe_purge()
        now = self._clock.monotonic()
        log = self._failures.get(ip)
        failed = 0
        if log is not None:
            log.window_s = limits.window_s
            log.trim(now)
            failed = len(log.times)
        attempts = self._in_flight.get(ip)
        if attempts is not None:
            attempts.purge()
        running = len(attempts) if attempts is not None else 0
        if running >= limits.max_in_flight or failed + running >= limits.failures:
            return min(1.0, limits.in_flight_ttl_s)
        if attempts is None:
            attempts = self._in_flight[ip] = _ExpiringMap(self._clock.monotonic)
        attempts.put(attempt, now, now + limits.in_flight_ttl_s)
        return 0.0

    async def attempt_end(
        self, ip: str, attempt: str, failed: bool, limits: AttemptLimits
    ) -> float:
        """See :meth:`Backend.attempt_end`."""
        attempts = self._in_flight.get(ip)
        if attempts is not None:
            attempts.pop(attempt)
            if not attempts:
                del self._in_flight[ip]
        if not failed:
            return await self.lockout_remaining(ip)
        return await self.record_auth_failure(ip, limits.failures, limits.window_s, limits.block_s)

    async def rate_hit(self, key: str, limit: int, window_s: float) -> float:
        """See :meth:`Backend.rate_hit`. Raises ValueError for ``limit < 1``."""
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit!r}")
        self._maybe_purge()
        now = self._clock.monotonic()
        log = self._rates.setdefault(key, _SlidingLog(window_s))
        log.window_s = window_s
        log.trim(now)
        if len(log.times) < limit:
            log.times.append(now)
            return 0.0
        # Trimming removed every time <= now - window, so this is > 0.
        return log.times[-limit] + window_s - now

    # -- offline inbox ---------------------------------------------------------

    async def inbox_put(self, dm: DirectMessage) -> bool:
        """See :meth:`Backend.inbox_put`; False only when ``offline_max_messages < 1``.

        Putting a known ``mid`` again replaces the message in place.
        """
        opts = self.options
        if opts.offline_max_messages < 1:
            return False
        self._maybe_purge()
        box = self._inboxes.get(dm.to_uid)
        if box is None:
            box = OrderedDict()
        quota = opts.offline_max_per_sender
        sender = dm.from_uid
        if (
            dm.mid not in box
            and quota > 0
            and sender is not None
            and sum(1 for m in box.values() if m.from_uid == sender) >= quota
        ):
            raise InboxQuotaExceeded(sender)
        box[dm.mid] = dm
        total = sum(inbox_size(m) for m in box.values())
        while len(box) > opts.offline_max_messages or (
            total > opts.offline_max_bytes and len(box) > 1
        ):
            _, dropped = box.popitem(last=False)
            total -= inbox_size(dropped)
        self._inboxes.put(dm.to_uid, box, self._deadline(opts.offline_ttl_s))
        return True

    async def inbox_list(self, uid: str, max_bytes: int | None = None) -> list[DirectMessage]:
        box = self._inboxes.get(uid)
        if box is None:
            return []
        page: list[DirectMessage] = []
        total = 0
        for dm in box.values():
            total += inbox_size(dm)
            if max_bytes is not None and page and total > max_bytes:
                break
            page.append(dm)
        return page

    async def inbox_ack(self, uid: str, mids: Sequence[str]) -> int:
        box = self._inboxes.get(uid)
        if box is None:
            return 0
        removed = sum(1 for mid in mids if box.pop(mid, None) is not None)
        if not box:
            self._inboxes.pop(uid)
        return removed

    async def mark_seen(self, uid: str, ttl_s: int) -> None:
        self._maybe_purge()
        self._kv.put(f"seen:{uid}", "1", self._deadline(ttl_s))

    async def was_seen(self, uid: str) -> bool:
        return self._kv.get(f"seen:{uid}") is not None
