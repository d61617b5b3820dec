"""The backend interface: everything a Squall node shares with the other nodes.

A node keeps its own connections and room memberships in :mod:`core.hub`; whatever
must hold across nodes (room sequence numbers and history, the session registry,
bans, revoked tokens, refresh families, nonces, lockout and rate-limit windows,
presence, the offline inbox, commands aimed at another node) goes through a
:class:`Backend`. Two implementations exist: :mod:`core.backend.memory` (one
process, the default) and :mod:`core.backend.redis` (any number of nodes).

The backend pushes what arrives for this node into a :class:`BackendListener`
(centrifuge's broker/handler split). Listener callbacks run on the event loop and
must not block.

Errors: every method may raise :class:`BackendUnavailable` when the shared store
cannot be reached. Callers turn that into 503 / err 503 and, for every security
check (bans, revoked tokens, lockouts, nonces), refuse: the checks fail closed.

All timestamps are Unix milliseconds (``int``) unless a name ends in ``_s``.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from core.errors import BackendUnavailable, RateLimited
from core.messages import DirectMessage, PresenceEvent, Publication, Recovery, RoomPosition

__all__ = [
    "AccessState",
    "Admission",
    "AttemptLimits",
    "Backend",
    "BackendListener",
    "BackendOptions",
    "BackendUnavailable",
    "DirectMessage",
    "InboxPage",
    "InboxQuotaExceeded",
    "Membership",
    "NodeCommand",
    "NodeOp",
    "NodeStats",
    "Policy",
    "PresenceEvent",
    "Publication",
    "PublishOutcome",
    "PublishRequest",
    "RateLimited",
    "RateSpec",
    "Recovery",
    "RoomPosition",
    "RotateOutcome",
    "SessionRecord",
    "inbox_size",
]

Policy = Literal["kick_oldest", "reject"]

#: One node's stats record (:mod:`core.stats`): a JSON-ready map with at least
#: ``node`` (the writer's node id) and ``ts`` (Unix ms of the write).
NodeStats = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RateSpec:
    """A sliding-window limit to charge an operation to: ``limit`` per ``window_s``."""

    key: str
    limit: int
    window_s: float


class InboxQuotaExceeded(Exception):
    """A sender already has ``offline_max_per_sender`` unacked messages in one inbox."""


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """The arguments of one :meth:`Backend.publish`, for :meth:`Backend.publish_many`."""

    room: str
    data: bytes
    from_uid: str | None
    ts: int
    origin: str | None = None
    rate: RateSpec | None = None


#: the outcome of one request of :meth:`Backend.publish_many`
PublishOutcome = Publication | RateLimited | BackendUnavailable


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """Settings a backend needs, taken from the configuration by the composition root."""

    key_prefix: str = "squall:"
    history_size: int = 100
    history_ttl_s: int = 3600
    offline_max_messages: int = 1000
    offline_ttl_s: int = 604800
    #: bytes (:func:`inbox_size`) one inbox holds at most; the oldest go beyond
    offline_max_bytes: int = 1048576
    #: unacked messages one sender may have in one inbox; 0 = no quota
    offline_max_per_sender: int = 0
    #: how long a session record or room membership lives without a refresh
    #: (the composition root sets it to 2 x heartbeat.interval_s)
    session_ttl_s: float = 50.0
    #: announce presence ``leave`` when a dead node's memberships are reaped
    presence_events: bool = True
    #: per-room ``(history_size, history_ttl_s)`` (room namespaces); None: the two above
    room_history: Callable[[str], tuple[int, int]] | None = None

    def history_for(self, room: str) -> tuple[int, int]:
        """``(history_size, history_ttl_s)`` of ``room``."""
        if self.room_history is None:
            return self.history_size, self.history_ttl_s
        return self.room_history(room)


#: Bytes counted per inbox message on top of its data and ids (frame keys, ts, flags).
INBOX_ENTRY_OVERHEAD = 64


def inbox_size(dm: DirectMessage) -> int:
    """What one message weighs in an inbox's byte cap and in an inbox page."""
    sender = dm.from_uid or ""
    return len(dm.data) + len(dm.mid) + len(sender.encode("utf-8")) + INBOX_ENTRY_OVERHEAD


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One live connection in the session registry."""

    conn_id: str
    uid: str
    node_id: str
    ip: str
    connected_at: int
    jti: str | None = None


@dataclass(frozen=True, slots=True)
class Membership:
    """One connection's membership of one room, kept alive by the heartbeat sweep."""

    room: str
    uid: str
    conn_id: str


@dataclass(frozen=True, slots=True)
class Admission:
    """Result of :meth:`Backend.admit`.

    ``admitted`` False means policy ``reject`` refused the session (nothing was
    written). ``evicted`` lists the sessions removed from the registry to make room
    (policy ``kick_oldest``): the caller closes each with 4009.
    """

    admitted: bool
    evicted: list[SessionRecord] = field(default_factory=list)
    #: Revocation and ban of the record's ``jti`` and user, read in the same atomic
    #: step as the registry write (``lockout_s`` is 0.0): the admission-race re-check
    #: is done (:mod:`core.admission_watch`). ``None``: not read; the caller reads them.
    access: AccessState | None = None
    #: The first inbox page asked for with :class:`InboxPage`, read in the same step
    #: (only when admitted, not revoked and not banned). ``None``: not read.
    inbox: list[DirectMessage] | None = None


@dataclass(frozen=True, slots=True)
class InboxPage:
    """What an admission may do for the user's inbox in the same step.

    ``max_bytes``: read the first page (:meth:`Backend.inbox_list`); ``seen_ttl_s``,
    when set, marks the user seen (:meth:`Backend.mark_seen`) first.
    """

    max_bytes: int
    seen_ttl_s: int | None = None


class NodeOp(enum.StrEnum):
    CLOSE_USER = "close_user"  # close every connection of ``uid`` on the node
    CLOSE_CONN = "close_conn"  # close connection ``conn_id``
    CLOSE_JTI = "close_jti"  # close every connection authenticated with token ``jti``
    DELIVER_DM = "deliver_dm"  # write ``dm`` to every connection of ``dm.to_uid``


@dataclass(frozen=True, slots=True)
class NodeCommand:
    """A command sent to one node's mailbox."""

    op: NodeOp
    code: int = 1000
    reason: str = ""
    uid: str | None = None
    conn_id: str | None = None
    jti: str | None = None
    dm: DirectMessage | None = None


@dataclass(frozen=True, slots=True)
class AccessState:
    """What the shared store says about one authentication attempt."""

    lockout_s: float  # seconds the client ip stays blocked (0.0 = not blocked)
    revoked: bool  # the token's jti is blacklisted
    banned: bool  # the user is banned


@dataclass(frozen=True, slots=True)
class AttemptLimits:
    """The lockout an authentication attempt is reserved against (``auth.lockout``).

    ``failures`` in ``window_s`` block the key for ``block_s``; attempts in flight
    count against ``failures`` too, and at most ``max_in_flight`` run at once. An
    attempt never settled (its node died) stops counting after ``in_flight_ttl_s``.
    """

    failures: int
    window_s: float
    block_s: float
    max_in_flight: int
    in_flight_ttl_s: float = 30.0


class RotateOutcome(enum.Enum):
    ROTATED = "rotated"  # presented token was the family's live one; now the new one is
    REUSED = "reused"  # presented token was already spent: the whole family is revoked
    UNKNOWN = "unknown"  # family revoked, expired or never existed


class BackendListener(Protocol):
    """The node side of the backend: receives what other nodes (or this one) sent."""

    def on_publication(self, pub: Publication) -> None:
        """A room message for a room this node subscribed to, in ``seq`` order per room."""

    def on_presence(self, event: PresenceEvent) -> None:
        """A presence event for a room this node subscribed to."""

    def on_command(self, command: NodeCommand) -> None:
        """A command from this node's mailbox."""

    def on_availability(self, available: bool) -> None:
        """The shared store became reachable (True) or unreachable (False)."""


class Backend(abc.ABC):
    """The shared state of a Squall cluster. See the module docstring for errors."""

    node_id: str
    options: BackendOptions

    # -- life cycle ------------------------------------------------------------

    @abc.abstractmethod
    async def start(self, listener: BackendListener) -> None:
        """Connect and start delivering to ``listener``. Returns once the node can serve."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Remove this node's sessions and memberships, stop delivery, release connections."""

    @property
    @abc.abstractmethod
    def available(self) -> bool:
        """True while the shared store is reachable (readiness)."""

    # -- rooms -----------------------------------------------------------------

    @abc.abstractmethod
    async def subscribe_room(self, room: str) -> None:
        """Start delivering ``room``'s publications and presence events to this node.

        Guarantee: every publication whose ``publish`` completes after this returns is
        delivered to the listener. Idempotent.
        """

    @abc.abstractmethod
    async def unsubscribe_room(self, room: str) -> None:
        """Stop delivering ``room`` to this node. Idempotent."""

    @abc.abstractmethod
    async def publish(
        self,
        room: str,
        data: bytes,
        from_uid: str | None,
        ts: int,
        origin: str | None = None,
        rate: RateSpec | None = None,
    ) -> Publication:
        """Assign the room's next ``seq``, append to history and deliver to every node.

        Atomic: seq assignment, history append (trimmed to ``history_size``, expiring
        ``history_ttl_s`` after the last publish) and delivery are one step, so every
        node sees the same gap-free order. At-most-once delivery per subscribed node.

        With ``rate``, the publication is first charged to that limit exactly as
        :meth:`rate_hit` would (in the same step where the store allows it): over the
        limit nothing is published and :class:`RateLimited` is raised.
        """

    async def publish_many(self, requests: Sequence[PublishRequest]) -> list[PublishOutcome]:
        """:meth:`publish` each request, in order; one outcome per request, in order.

        Ordered: the publications of one call are assigned seqs in request order
        (within a room) and never interleave with those of a later call by the same
        caller. Each request is atomic as in :meth:`publish` and fails on its own
        (:class:`RateLimited`, :class:`BackendUnavailable` as its outcome); nothing is
        raised. Implementations may use one round trip for all of them.
        """
        outcomes: list[PublishOutcome] = []
        for r in requests:
            try:
                outcomes.append(
                    await self.publish(r.room, r.data, r.from_uid, r.ts, r.origin, r.rate)
                )
            except (RateLimited, BackendUnavailable) as e:
                outcomes.append(e)
        return outcomes

    @abc.abstractmethod
    async def position(self, room: str) -> RoomPosition:
        """The room's latest seq and epoch (a new epoch is created for an unknown room)."""

    @abc.abstractmethod
    async def recover(self, room: str, since: int, epoch: str | None) -> Recovery:
        """Publications after ``since`` still in history; see :class:`Recovery`."""

    # -- presence --------------------------------------------------------------

    @abc.abstractmethod
    async def presence_join(self, m: Membership, announce: bool) -> bool:
        """Add a membership; True when it is the user's first in the room cluster-wide.

        Atomic. When True and ``announce``, a ``join`` :class:`PresenceEvent` is
        delivered to every node subscribed to the room.
        """

    @abc.abstractmethod
    async def presence_leave(self, m: Membership, announce: bool) -> bool:
        """Remove a membership; True when it was the user's last in the room cluster-wide.

        Atomic. When True and ``announce``, a ``leave`` event is delivered.
        """

    @abc.abstractmethod
    async def presence_members(self, room: str) -> list[str]:
        """User ids with a live membership of ``room`` on any node, sorted."""

    # -- session registry ------------------------------------------------------

    @abc.abstractmethod
    async def admit(
        self, record: SessionRecord, limit: int, policy: Policy, inbox: InboxPage | None = None
    ) -> Admission:
        """Register a session unless the user is at ``limit`` live sessions.

        Atomic (drop expired records, count, add): ``limit`` concurrent admissions of
        one user never admit more than ``limit`` sessions. At the limit, ``reject``
        refuses; ``kick_oldest`` removes the oldest records (by ``connected_at``) and
        returns them in ``evicted``.

        A backend that can read revocation and ban in the same atomic step as the
        write returns them in ``Admission.access``; one that can also read the inbox
        there returns the page asked for by ``inbox`` in ``Admission.inbox``. Either
        may be ``None`` (a Redis Cluster, whose keys span slots): the caller then
        makes those calls itself.
        """

    @abc.abstractmethod
    async def release(self, record: SessionRecord) -> None:
        """Remove a session record. Idempotent."""

    @abc.abstractmethod
    async def sessions_of(self, uid: str) -> list[SessionRecord]:
        """The user's live sessions on every node, oldest first."""

    @abc.abstractmethod
    async def refresh(
        self, sessions: Sequence[SessionRecord], memberships: Sequence[Membership]
    ) -> int:
        """Extend the expiry of these records by ``session_ttl_s``: one round trip in all.

        Only live records are extended; an expired or lost one stays gone. Returns how
        many of ``sessions`` were gone (the shared store was flushed, or the node was
        too slow to refresh in time): the caller registers them again.
        """

    @abc.abstractmethod
    async def cluster_counts(self) -> dict[str, int]:
        """Live sessions per node id."""

    # -- cluster stats -----------------------------------------------------------

    @abc.abstractmethod
    async def put_node_stats(self, record: Mapping[str, Any], ttl_s: float) -> None:
        """Publish this node's stats record (JSON-ready), replacing its previous one.

        The stored record is ``record`` with ``node`` set to this node's id. It stays
        listed by :meth:`node_stats` for ``ttl_s`` seconds unless written again: a node
        that dies disappears from every node's view within ``ttl_s``.
        """

    @abc.abstractmethod
    async def drop_node_stats(self) -> None:
        """Remove this node's stats record now (a clean stop). Idempotent."""

    @abc.abstractmethod
    async def node_stats(self) -> list[NodeStats]:
        """The live stats record of every node of the cluster (this one included when
        it wrote one), sorted by node id. Cluster-wide; a read, not atomic across nodes."""

    @abc.abstractmethod
    async def send_command(self, node_id: str, command: NodeCommand) -> None:
        """Put ``command`` in ``node_id``'s mailbox. At-most-once; this node included."""

    async def command_user(self, uid: str, command: NodeCommand) -> int:
        """Send ``command`` once to every node holding a session of ``uid``; returns nodes."""
        nodes = {s.node_id for s in await self.sessions_of(uid)}
        for node in sorted(nodes):
            await self.send_command(node, command)
        return len(nodes)

    # -- bans and revoked tokens -----------------------------------------------

    @abc.abstractmethod
    async def ban(self, uid: str, ttl_s: int | None) -> None:
        """Ban ``uid`` (key ``auth:{uid}`` = ``banned``), for ``ttl_s`` or until unbanned."""

    @abc.abstractmethod
    async def unban(self, uid: str) -> None:
        """Lift a ban. Idempotent."""

    @abc.abstractmethod
    async def is_banned(self, uid: str) -> bool:
        """True while ``auth:{uid}`` holds ``banned``. Raises rather than guess."""

    @abc.abstractmethod
    async def revoke_jti(self, jti: str, until: int) -> None:
        """Blacklist an access token id until ``until`` (its ``exp``, ms)."""

    @abc.abstractmethod
    async def is_revoked(self, jti: str) -> bool:
        """True while ``jti`` is blacklisted. Raises rather than guess."""

    async def access_state(self, ip: str, uid: str, jti: str) -> AccessState:
        """Lockout of ``ip``, revocation of ``jti`` and ban of ``uid`` in one call.

        The handshake's hot path: implementations answer in one round trip where they
        can. Not atomic across the three (each is a read). Raises rather than guess.
        """
        return AccessState(
            lockout_s=await self.lockout_remaining(ip),
            revoked=await self.is_revoked(jti),
            banned=await self.is_banned(uid),
        )

    # -- refresh-token families ------------------------------------------------

    @abc.abstractmethod
    async def family_start(self, family: str, token_id: str, ttl_s: int) -> None:
        """Create a refresh family whose live token is ``token_id``."""

    @abc.abstractmethod
    async def family_rotate(
        self, family: str, presented: str, new_id: str, ttl_s: int
    ) -> RotateOutcome:
        """Atomically spend ``presented`` and make ``new_id`` live.

        Two concurrent rotations with the same token: at most one is ROTATED. A spent
        token revokes the family (REUSED).
        """

    @abc.abstractmethod
    async def family_revoke(self, family: str) -> None:
        """Revoke a family: none of its tokens rotates again. Idempotent."""

    # -- nonces, lockouts, rate limits -----------------------------------------

    @abc.abstractmethod
    async def claim_nonce(self, nonce: str, ttl_s: int) -> bool:
        """True the first time ``nonce`` is claimed within ``ttl_s`` cluster-wide (SET NX)."""

    @abc.abstractmethod
    async def record_auth_failure(
        self, ip: str, failures: int, window_s: float, block_s: float
    ) -> float:
        """Count a failure for ``ip`` in a sliding window of ``window_s``.

        When the count reaches ``failures`` the ip is blocked for ``block_s``.
        Returns the seconds the ip stays blocked (0.0 when not blocked).
        """

    @abc.abstractmethod
    async def lockout_remaining(self, ip: str) -> float:
        """Seconds ``ip`` stays blocked (0.0 when not blocked)."""

    @abc.abstractmethod
    async def attempt_begin(self, ip: str, attempt: str, limits: AttemptLimits) -> float:
        """Reserve one authentication attempt of ``ip`` before any work is done for it.

        Atomic and cluster-wide: refused (returns the seconds to wait, > 0) while
        ``ip`` is blocked, while ``limits.max_in_flight`` attempts are in flight, or
        while failures in the window plus attempts in flight reach
        ``limits.failures``. Otherwise ``attempt`` (a unique id) is in flight from
        now until :meth:`attempt_end` or ``limits.in_flight_ttl_s``, and 0.0 is
        returned. So of any number of concurrent attempts, at most ``failures``
        are ever reserved before the key is blocked.
        """

    @abc.abstractmethod
    async def attempt_end(
        self, ip: str, attempt: str, failed: bool, limits: AttemptLimits
    ) -> float:
        """Settle a reserved attempt: no longer in flight; when ``failed`` it counts as a
        failure exactly as :meth:`record_auth_failure` would. Returns the seconds ``ip``
        stays blocked. Settling an unknown or expired attempt only counts the failure.
        """

    @abc.abstractmethod
    async def rate_hit(self, key: str, limit: int, window_s: float) -> float:
        """Count one event for ``key`` in a sliding window (exact log).

        Returns 0.0 when it is within ``limit`` events per ``window_s`` (and counted),
        otherwise the seconds until one more would be allowed (and not counted).
        Cluster-wide and atomic.
        """

    # -- offline inbox ---------------------------------------------------------

    @abc.abstractmethod
    async def inbox_put(self, dm: DirectMessage) -> bool:
        """Store ``dm`` until acked, expiring ``offline_ttl_s`` after the last put.
        True when stored.

        Atomic. Bounded: beyond ``offline_max_messages`` messages or
        ``offline_max_bytes`` (:func:`inbox_size`) the oldest are dropped (the newest
        message always stays). A sender (``from_uid`` not None) that already has
        ``offline_max_per_sender`` unacked messages in this inbox is refused with
        :class:`InboxQuotaExceeded` and nothing changes; acks and drops free its quota.
        """

    @abc.abstractmethod
    async def inbox_list(self, uid: str, max_bytes: int | None = None) -> list[DirectMessage]:
        """Unacked messages of ``uid``, oldest first.

        With ``max_bytes``, only the oldest ones whose :func:`inbox_size` add up to at
        most ``max_bytes`` (always at least one when the inbox is not empty): a page.
        """

    @abc.abstractmethod
    async def inbox_ack(self, uid: str, mids: Sequence[str]) -> int:
        """Remove acked messages; returns how many were removed."""

    @abc.abstractmethod
    async def mark_seen(self, uid: str, ttl_s: int) -> None:
        """Remember for ``ttl_s`` that ``uid`` connected (``offline.recipients: known``)."""

    @abc.abstractmethod
    async def was_seen(self, uid: str) -> bool:
        """True while a :meth:`mark_seen` of ``uid`` lasts. Raises rather than guess."""
