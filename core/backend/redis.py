"""The Redis backend: any number of nodes sharing one Redis (or Redis Cluster) are one server.

Every guarantee of :class:`~core.backend.base.Backend` holds across nodes; how:

* **Commands** go through one bounded, pooled ``redis.asyncio`` client (the hiredis
  parser is used when installed; built and driven by :mod:`core.backend.redis_client`)
  with socket timeouts and *no* client-side retries:
  a retried ``publish`` whose first attempt did reach Redis would publish twice.
  Every Redis error, socket error or timeout surfaces as
  :class:`~core.backend.base.BackendUnavailable` within about ``socket_timeout_s``;
  nothing hangs, nothing guesses.
* **Atomicity**: every check-then-act is one Lua script of
  :mod:`core.backend.redis_scripts`, on keys named by :mod:`core.backend.redis_keys`
  (one hash tag per script, so Redis Cluster runs it on one slot). A room publish is
  ONE ``EVALSHA``: seq, history, epoch and the ``PUBLISH`` happen in one step.
* **Fan-out**: ONE pub/sub connection per node (on a cluster: one per master, with
  sharded ``SSUBSCRIBE``/``SPUBLISH``) carries the node's mailbox, its liveness probe
  and exactly the rooms passed to :meth:`RedisBackend.subscribe_room`. Redis delivers
  one channel's messages in publish order, and the publish script assigns ``seq``
  in that same order, so every node sees each room gap-free and in order while its
  connection lives (at-most-once across a reconnect; clients recover by ``since``).
* **Self-healing**: a supervisor task reconnects with capped, fully jittered
  exponential backoff, resubscribes the node, probe and every wanted room channel,
  and every ``probe_interval_s`` publishes to the probe channel expecting its own
  message back within ``probe_timeout_s``; a silent (half-open) connection is thus
  torn down and rebuilt (:mod:`core.backend.redis_pubsub`).
  :attr:`RedisBackend.available` and ``listener.on_availability`` follow these
  transitions, logged on ``squall.backend.redis`` (URLs with the password masked).
* **Wire format**: msgpack arrays, defined in :mod:`core.backend.redis_codec`.
* **Time**: expiry scores use the injected clock's ``wall()`` (see
  :mod:`core.backend.redis_scripts`); whole-key TTLs are Redis's own and only
  collect garbage, except for bans, revoked tokens, nonces, refresh families and
  lockout blocks, whose Redis TTL *is* their lifetime. Every key but a permanent
  ban has a TTL.

Those security records (bans, revoked tokens, refresh families, nonces, lockouts,
rate limits) are kept by :class:`~core.backend.redis_security.SecurityRecords`, a
mixin of :class:`RedisBackend`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from core.backend import redis_scripts as lua
from core.backend.backoff import FullJitterBackoff, RetryPolicy
from core.backend.base import (
    AccessState,
    Admission,
    Backend,
    BackendListener,
    BackendOptions,
    BackendUnavailable,
    DirectMessage,
    InboxPage,
    InboxQuotaExceeded,
    Membership,
    NodeCommand,
    NodeStats,
    Policy,
    Publication,
    PublishOutcome,
    PublishRequest,
    RateLimited,
    RateSpec,
    Recovery,
    RoomPosition,
    SessionRecord,
    inbox_size,
)
from core.backend.redis_batch import IterationBatch
from core.backend.redis_client import (
    CommandClient,
    client_name,
    expiry_ms,
    make_client,
    mask_url,
)
from core.backend.redis_codec import (
    decode_command,
    decode_dm,
    decode_publication,
    decode_record,
    decode_room_message,
    encode_command,
    encode_dm,
    encode_presence,
    encode_record,
    pairs,
    publication_tail,
)
from core.backend.redis_keys import RedisKeys, member, split_member
from core.backend.redis_pubsub import FAILURES, PubSub, describe
from core.backend.redis_security import SecurityRecords
from core.clock import Clock

__all__ = ["RedisBackend", "mask_url"]

log = logging.getLogger("squall.backend.redis")

#: admissions per ADMIT_BATCH call (bounds the time Redis spends in one script)
ADMIT_CHUNK = 64

#: one batched admission: the record, the per-user limit, the policy, the inbox page
AdmitCall = tuple[SessionRecord, int, Policy, InboxPage | None]


# -- the backend -------------------------------------------------------------------


class RedisBackend(SecurityRecords, Backend):
    """A :class:`~core.backend.base.Backend` on Redis; see the module docstring.

    ``url``: ``redis://``, ``rediss://`` (TLS, with the ``ssl_*`` options),
    ``redis+cluster://`` or ``rediss+cluster://`` (any node of the cluster).
    Constructing connects nothing; :meth:`start` does.
    """

    def __init__(
        self,
        node_id: str,
        options: BackendOptions,
        clock: Clock,
        url: str,
        *,
        ssl_ca_file: str | None = None,
        ssl_cert_file: str | None = None,
        ssl_key_file: str | None = None,
        ssl_cert_reqs: str = "required",
        probe_interval_s: float = 1.0,
        probe_timeout_s: float = 3.0,
        socket_timeout_s: float = 2.0,
        max_connections: int = 64,
        reconnect: RetryPolicy | None = None,
    ) -> None:
        client, cluster = make_client(
            url,
            node_id,
            ssl_ca_file=ssl_ca_file,
            ssl_cert_file=ssl_cert_file,
            ssl_key_file=ssl_key_file,
            ssl_cert_reqs=ssl_cert_reqs,
            socket_timeout_s=socket_timeout_s,
            max_connections=max_connections,
        )
        self.node_id = node_id
        self.options = options
        self._clock = clock
        self._url = url
        self._keys = RedisKeys(options.key_prefix)
        self._cluster = cluster
        self._scripts = lua.publishing("SPUBLISH" if cluster else "PUBLISH")
        self._client = client
        self._cmd = CommandClient(
            client,
            (
                self._scripts.publish,
                self._scripts.presence_join,
                self._scripts.presence_leave,
                self._scripts.presence_refresh,
            ),
            max_connections,
            socket_timeout_s,
        )
        self._listener: BackendListener | None = None
        self._started = False
        self._closed = False
        self._pubsub = PubSub(
            self._client,
            node_id=node_id,
            client_name=client_name(node_id, "sub"),
            mailbox=self._keys.node_channel(node_id).encode(),
            probe_base=self._keys.probe_channel(node_id),
            on_mailbox=self._on_mailbox,
            on_room=self._on_room,
            on_availability=self._on_availability,
            prepare=self._cmd.load_scripts,
            clock=clock,
            retry=reconnect or RetryPolicy(FullJitterBackoff(base=0.05, cap=2.0)),
            probe_interval_s=probe_interval_s,
            probe_timeout_s=probe_timeout_s,
            timeout_s=socket_timeout_s,
        )
        #: what close() deregisters: sessions and memberships written by this node
        self._own_sessions: dict[str, SessionRecord] = {}
        #: membership -> whether its join was announced (its leave is, too)
        self._own_memberships: dict[Membership, bool] = {}
        self._unique = itertools.count()
        # The handshake's calls, batched per loop iteration (see core/backend/redis_batch.py)
        self._access: IterationBatch[tuple[str, str, str], AccessState] = IterationBatch(
            self._access_many
        )
        self._admissions: IterationBatch[AdmitCall, Admission] = IterationBatch(
            self._admit_many, self._admission_abandoned
        )
        self._inboxes: IterationBatch[tuple[str, int | None], list[DirectMessage]] = IterationBatch(
            self._inbox_many
        )
        # A mass disconnect's calls, batched the same way: a dropped network or a
        # drained node closes thousands of connections in one loop iteration.
        self._releases: IterationBatch[SessionRecord, None] = IterationBatch(self._release_many)
        self._states: IterationBatch[tuple[str, int | None, str | None], Any] = IterationBatch(
            self._room_state_many
        )
        self._leaves: IterationBatch[tuple[Membership, bool], bool] = IterationBatch(
            self._leave_many
        )
        self._session_ttl_ms = expiry_ms(options.session_ttl_s)
        # ADMIT_BATCH's fixed arguments: the nodes key, then (head, tail) of each key
        # template, key = head + id + tail (names stay those of RedisKeys)
        k = self._keys
        self._admit_keys: list[str] = [k.nodes()]
        for name in (
            k.user_sessions,
            k.user_records,
            k.node_sessions,
            k.revoked,
            k.ban,
            k.inbox_order,
            k.inbox_messages,
            k.inbox_info,
            k.seen,
        ):
            before, _, after = name("\0").partition("\0")
            self._admit_keys += [before, after]
        # Registry keys outlive their newest entry: their TTL only collects garbage.
        self._registry_key_ttl_ms = 2 * self._session_ttl_ms + 1000

    # -- life cycle ------------------------------------------------------------

    async def start(self, listener: BackendListener) -> None:
        """Connect, subscribe the mailbox and probe channels, pass one probe, then serve.

        Raises :class:`BackendUnavailable` (and keeps nothing running) when Redis
        cannot be reached; afterwards the supervisor keeps the connection alive.
        The listener is told ``on_availability(True)`` soon after this returns.
        """
        if self._started or self._closed:
            raise RuntimeError("RedisBackend.start() called twice or after close()")
        self._listener = listener
        try:
            with self._cmd.unavailable("connect"):
                await self._pubsub.start()
        except BackendUnavailable:
            self._listener = None
            raise
        self._started = True
        log.info("node %s connected to %s", self.node_id, mask_url(self._url))

    async def close(self) -> None:
        """Deregister this node's sessions and memberships, stop delivery, disconnect.

        The deregistration is one batch (one pipeline; one per master on a cluster):
        every session, every membership (with its ``leave`` event when its join was
        announced and it was the user's last in the room) and the node's index, sent
        while the command connections are still open; only then are they closed.
        Idempotent. Connections are released even when Redis is unreachable; the
        deregistration failure is then raised as :class:`BackendUnavailable` (the
        records expire after ``session_ttl_s`` anyway).
        """
        if self._closed:
            return
        self._closed = True
        self._listener = None
        await self._pubsub.close()
        batches = (self._access, self._admissions, self._inboxes, self._leaves, self._releases)
        for batch in (*batches, self._states):
            await batch.drain()
        failure: BackendUnavailable | None = None
        try:
            if self._started:  # never started: nothing registered
                await self._deregister()
        except BackendUnavailable as exc:
            failure = exc
            log.warning("node %s could not deregister: %s", self.node_id, exc)
        await self._client.aclose()
        if failure is not None:
            raise failure

    @property
    def available(self) -> bool:
        """True while the pub/sub connection is up and the last probe came back."""
        return self._pubsub.available

    async def _deregister(self) -> None:
        sessions, self._own_sessions = list(self._own_sessions.values()), {}
        memberships, self._own_memberships = list(self._own_memberships.items()), {}
        k = self._keys
        leave = self._scripts.presence_leave.sha

        def build(pipe: Any) -> None:
            # Idempotent, as pipeline() requires: a second leave finds nothing to announce.
            for r in sessions:
                pipe.zrem(k.user_sessions(r.uid), r.conn_id)
                pipe.hdel(k.user_records(r.uid), r.conn_id)
            for m, announce in memberships:
                pipe.execute_command("EVALSHA", leave, *self._leave_keys_args(m, announce))
            pipe.delete(k.node_sessions(self.node_id))
            pipe.zrem(k.nodes(), self.node_id)

        await self._cmd.pipeline("deregister", build)

    # -- pub/sub callbacks -----------------------------------------------------

    # Called by the PubSub, which logs (and survives) any exception raised here;
    # nothing reaches a listener after close().

    def _on_availability(self, available: bool) -> None:
        if self._listener is not None:
            self._listener.on_availability(available)

    def _on_mailbox(self, payload: bytes) -> None:
        if self._listener is not None:
            self._listener.on_command(decode_command(payload))

    def _on_room(self, room: str, payload: bytes) -> None:
        listener = self._listener
        if listener is None:
            return
        item = decode_room_message(room, payload)
        if isinstance(item, Publication):
            listener.on_publication(item)
        else:
            listener.on_presence(item)

    # -- rooms -----------------------------------------------------------------

    async def subscribe_room(self, room: str) -> None:
        """See :meth:`Backend.subscribe_room`; returns once Redis confirmed.

        Raises :class:`BackendUnavailable` while the pub/sub connection is down; a room
        not subscribed before is then not wanted (call again once available).
        """
        try:
            await self._pubsub.subscribe(self._keys.room_channel(room).encode(), room)
        except FAILURES as exc:
            raise BackendUnavailable(f"subscribe {room!r}: {describe(exc)}") from exc

    async def unsubscribe_room(self, room: str) -> None:
        """See :meth:`Backend.unsubscribe_room`: delivery stops at once, never raises.

        If Redis cannot confirm, the stale server-side subscription is only filtered
        out until the next reconnect.
        """
        await self._pubsub.unsubscribe(self._keys.room_channel(room).encode())

    async def publish(
        self,
        room: str,
        data: bytes,
        from_uid: str | None,
        ts: int,
        origin: str | None = None,
        rate: RateSpec | None = None,
    ) -> Publication:
        """See :meth:`Backend.publish`: one ``EVALSHA`` (one round trip) in all.

        With ``rate`` on a single Redis the rate charge runs in the same script (still
        one round trip); on a cluster the user's rate log lives on another slot, so it
        is charged first with :meth:`rate_hit` (two).
        """
        k = self._keys
        # The script prepends the array header and [seq, epoch] (see redis_codec).
        tail = publication_tail(from_uid, ts, data, origin)
        size, ttl_s = self.options.history_for(room)
        args: tuple[Any, ...] = (
            k.room_channel(room),
            tail,
            secrets.token_hex(8),
            size,
            expiry_ms(ttl_s),
        )
        keys: tuple[str, ...] = (k.room_meta(room), k.room_history(room))
        if rate is None:
            seq, epoch = await self._cmd.eval(self._scripts.publish, keys, args)
        elif self._cluster:
            retry = await self.rate_hit(rate.key, rate.limit, rate.window_s)
            if retry > 0:
                raise RateLimited(retry)
            seq, epoch = await self._cmd.eval(self._scripts.publish, keys, args)
        else:
            if rate.limit < 1:
                raise ValueError(f"limit must be positive, got {rate.limit!r}")
            now = self._now_ms()
            rate_args = (now, expiry_ms(rate.window_s), rate.limit, self._unique_member(now))
            result = await self._cmd.eval(
                lua.RATED_PUBLISH, (*keys, k.rate(rate.key)), (*args, *rate_args)
            )
            if result[0] == 0:
                raise RateLimited(int(result[1]) / 1000)
            seq, epoch = result
        return Publication(room, seq, epoch.decode(), from_uid, ts, data, origin)

    async def publish_many(self, requests: Sequence[PublishRequest]) -> list[PublishOutcome]:
        """See :meth:`Backend.publish_many`: one pipeline of scripts, one round trip.

        On a cluster (where a rated publish takes two commands on two slots) the
        requests run one after another.
        """
        if self._cluster or len(requests) < 2:
            return await super().publish_many(requests)
        k = self._keys
        calls: list[tuple[lua.Script, Sequence[str], Sequence[Any]]] = []
        for r in requests:
            tail = publication_tail(r.from_uid, r.ts, r.data, r.origin)
            size, ttl_s = self.options.history_for(r.room)
            args: tuple[Any, ...] = (
                k.room_channel(r.room),
                tail,
                secrets.token_hex(8),
                size,
                expiry_ms(ttl_s),
            )
            keys: tuple[str, ...] = (k.room_meta(r.room), k.room_history(r.room))
            if r.rate is None:
                calls.append((self._scripts.publish, keys, args))
            else:
                if r.rate.limit < 1:
                    raise ValueError(f"limit must be positive, got {r.rate.limit!r}")
                now = self._now_ms()
                rate_args = (
                    now,
                    expiry_ms(r.rate.window_s),
                    r.rate.limit,
                    self._unique_member(now),
                )
                calls.append((lua.RATED_PUBLISH, (*keys, k.rate(r.rate.key)), (*args, *rate_args)))
        try:
            results = await self._cmd.eval_many("publish", calls)
        except BackendUnavailable as e:
            return [e] * len(requests)
        outcomes: list[PublishOutcome] = []
        for r, result in zip(requests, results, strict=True):
            if isinstance(result, BackendUnavailable):
                outcomes.append(result)
            elif r.rate is not None and result[0] == 0:
                outcomes.append(RateLimited(int(result[1]) / 1000))
            else:
                seq, epoch = result
                outcomes.append(
                    Publication(r.room, seq, epoch.decode(), r.from_uid, r.ts, r.data, r.origin)
                )
        return outcomes

    async def _room_state(self, room: str, since: int | None, epoch: str | None) -> Any:
        """One ``ROOM_STATE`` script; the calls of one loop iteration (a join storm
        after a deploy, every room catching up after an outage) share a round trip."""
        return await self._states.call((room, since, epoch))

    async def _room_state_many(
        self, calls: Sequence[tuple[str, int | None, str | None]]
    ) -> list[Any]:
        k = self._keys
        return await self._scripts_each(
            "room_state",
            [
                (
                    lua.ROOM_STATE,
                    (k.room_meta(room), k.room_history(room)),
                    (
                        secrets.token_hex(8),
                        expiry_ms(self.options.history_for(room)[1]),
                        "" if since is None else since,
                        epoch or "",
                    ),
                )
                for room, since, epoch in calls
            ],
        )

    async def position(self, room: str) -> RoomPosition:
        seq, epoch = await self._room_state(room, None, None)
        return RoomPosition(seq, epoch.decode())

    async def recover(self, room: str, since: int, epoch: str | None) -> Recovery:
        """See :meth:`Backend.recover`; reads position and history in one script."""
        state = await self._room_state(room, since, epoch)
        position = RoomPosition(state[0], state[1].decode())
        if epoch is not None and epoch != position.epoch:
            return Recovery([], position, recovered=False)
        if since >= position.seq:
            return Recovery([], position, recovered=True)
        pubs = [decode_publication(room, raw) for raw in state[2]]
        pubs = [p for p in pubs if p.seq > since]
        return Recovery(pubs, position, recovered=bool(pubs) and pubs[0].seq == since + 1)

    # -- presence --------------------------------------------------------------

    async def presence_join(self, m: Membership, announce: bool) -> bool:
        """See :meth:`Backend.presence_join`; joining again only extends, returns False."""
        k = self._keys
        now = self._now_ms()
        first = await self._cmd.eval(
            self._scripts.presence_join,
            (k.room_presence(m.room), k.room_presence_lex(m.room)),
            (
                now,
                now + self._session_ttl_ms,
                m.uid,
                member(m.uid, m.conn_id),
                k.room_channel(m.room) if announce else "",
                encode_presence("join", m.uid, m.conn_id) if announce else b"",
                self._registry_key_ttl_ms,
            ),
        )
        self._own_memberships[m] = self._own_memberships.get(m, False) or announce
        return bool(first)

    async def presence_leave(self, m: Membership, announce: bool) -> bool:
        """See :meth:`Backend.presence_leave`; an unknown or expired ``m`` gives False.

        The leaves of one loop iteration share one round trip (each still its own
        atomic script): a mass disconnect costs one pipeline per batch, not one round
        trip per membership."""
        last = await self._leaves.call((m, announce))
        self._own_memberships.pop(m, None)
        return last

    async def _leave_many(
        self, calls: Sequence[tuple[Membership, bool]]
    ) -> list[bool | BaseException]:
        scripts = []
        for m, announce in calls:
            _n, *keys_args = self._leave_keys_args(m, announce)
            scripts.append((self._scripts.presence_leave, keys_args[:2], keys_args[2:]))
        replies = await self._scripts_each("presence_leave", scripts)
        return [r if isinstance(r, BaseException) else bool(r) for r in replies]

    def _leave_keys_args(self, m: Membership, announce: bool) -> tuple[Any, ...]:
        """Key count, keys and arguments of the presence-leave script for ``m``."""
        k = self._keys
        return (
            2,
            k.room_presence(m.room),
            k.room_presence_lex(m.room),
            self._now_ms(),
            m.uid,
            member(m.uid, m.conn_id),
            k.room_channel(m.room) if announce else "",
            encode_presence("leave", m.uid, m.conn_id) if announce else b"",
        )

    async def presence_members(self, room: str) -> list[str]:
        k = self._keys
        raw = await self._cmd.eval(
            lua.PRESENCE_MEMBERS,
            (k.room_presence(room), k.room_presence_lex(room)),
            (self._now_ms(),),
        )
        return sorted({split_member(v.decode())[0] for v in raw})

    # -- session registry ------------------------------------------------------

    async def admit(
        self, record: SessionRecord, limit: int, policy: Policy, inbox: InboxPage | None = None
    ) -> Admission:
        """See :meth:`Backend.admit`: one script on the user's slot decides (atomic);
        the session is indexed under its node for :meth:`cluster_counts`.

        On one Redis the whole step is one script (``ADMIT_BATCH``): admission, node
        index, the revocation and ban re-read (``Admission.access``) and the inbox
        page (``Admission.inbox``); one script call admits a whole batch (up to
        :data:`ADMIT_CHUNK` admissions), each admission still one atomic step. On a cluster the
        keys span slots: the script admits, the index follows (see
        :meth:`_admit_cluster`) and ``access`` and ``inbox`` are left to the caller.

        Admissions made within one loop iteration share their round trips; each is
        still its own atomic script, so the per-user cap is exact whatever the
        batching.

        Raises ValueError for ``limit < 1`` or an unknown policy (caller bugs).
        """
        if limit < 1 or policy not in ("reject", "kick_oldest"):
            raise ValueError(f"bad admission limit/policy: {limit!r}/{policy!r}")
        return await self._admissions.call((record, limit, policy, inbox))

    async def _admit_many(self, calls: Sequence[AdmitCall]) -> list[Admission | BaseException]:
        """Admit a batch: on one Redis ``ADMIT_BATCH`` scripts of at most
        :data:`ADMIT_CHUNK` admissions each, in one round trip; on a cluster
        :meth:`_admit_cluster`."""
        if self._cluster:
            return await self._admit_cluster(calls)
        now = self._now_ms()
        expiry = now + self._session_ttl_ms
        head = [now, expiry, self._registry_key_ttl_ms]
        # chunks of one node's records (a node admits its own; tests admit others')
        by_node: dict[str, list[int]] = {}
        for i, (record, *_rest) in enumerate(calls):
            by_node.setdefault(record.node_id, []).append(i)
        chunks: list[list[int]] = []
        scripts = []
        for node_id, indexes in by_node.items():
            for at in range(0, len(indexes), ADMIT_CHUNK):
                chunk = indexes[at : at + ADMIT_CHUNK]
                args: list[Any] = [*head, node_id, *self._admit_keys]
                for i in chunk:
                    record, limit, policy, inbox = calls[i]
                    args += [
                        record.uid,
                        record.conn_id,
                        encode_record(record),
                        limit,
                        policy,
                        record.jti or "",  # as access_state reads it
                        -1 if inbox is None else inbox.max_bytes,
                        expiry_ms(inbox.seen_ttl_s) if inbox and inbox.seen_ttl_s else 0,
                    ]
                chunks.append(chunk)
                scripts.append((lua.ADMIT_BATCH, (), args))
        replies = await self._cmd.eval_many("admit", scripts)
        outcomes: dict[int, Admission | BaseException] = {}
        for chunk, reply in zip(chunks, replies, strict=True):
            for n, i in enumerate(chunk):
                outcomes[i] = (
                    reply if isinstance(reply, BaseException) else self._outcome(calls[i], reply[n])
                )
        return [outcomes[i] for i in range(len(calls))]

    def _outcome(self, call: AdmitCall, reply: Sequence[Any]) -> Admission:
        """The :class:`Admission` of one ``ADMIT_BATCH`` reply."""
        record, _limit, _policy, inbox = call
        admitted, revoked, banned, evicted_flat, page = reply
        access = AccessState(lockout_s=0.0, revoked=bool(revoked), banned=bool(banned))
        if not admitted:
            return Admission(admitted=False, access=access)
        watched = inbox is not None and not (access.revoked or access.banned)
        return Admission(
            admitted=True,
            evicted=self._admitted(record, evicted_flat),
            access=access,
            inbox=[decode_dm(value) for value in page] if watched else None,
        )

    def _admitted(self, record: SessionRecord, evicted_flat: Sequence[Any]) -> list[SessionRecord]:
        """Note an admitted record (and the ones it evicted) as this node's own."""
        evicted = [decode_record(record.uid, conn, value)[0] for conn, value in pairs(evicted_flat)]
        if record.node_id == self.node_id:
            self._own_sessions[record.conn_id] = record
        for old in evicted:
            self._own_sessions.pop(old.conn_id, None)
        return evicted

    async def _admit_cluster(self, calls: Sequence[AdmitCall]) -> list[Admission | BaseException]:
        """A cluster's batch: the ADMIT scripts concurrently, then the index pipeline.

        The node index lives on another slot, so it is written afterwards and then
        checked: a concurrent admission may have evicted a record in between, and its
        un-indexing may have run before this indexing. Such a record is still reported
        admitted (with ``kick_oldest`` it was, and was evicted at once: the evicting
        caller sends the 4009). The pipeline splits by slot with no order between
        slots, so the checks follow in one more round trip.
        """
        k = self._keys
        now = self._now_ms()
        expiry = now + self._session_ttl_ms
        scripts = [
            (
                lua.ADMIT,
                (k.user_sessions(record.uid), k.user_records(record.uid)),
                (
                    now,
                    expiry,
                    limit,
                    policy,
                    record.conn_id,
                    encode_record(record),
                    self._registry_key_ttl_ms,
                ),
            )
            for record, limit, policy, _inbox in calls
        ]
        replies = await self._scripts_each("admit", scripts)
        outcomes: list[Admission | BaseException] = []
        admitted: list[SessionRecord] = []
        for (record, _limit, _policy, _inbox), reply in zip(calls, replies, strict=True):
            if isinstance(reply, BaseException):
                outcomes.append(reply)
            elif reply[0] == 0:
                outcomes.append(Admission(admitted=False))
            else:
                admitted.append(record)
                outcomes.append(Admission(admitted=True, evicted=self._admitted(record, reply[1:])))
        if not admitted:
            return outcomes
        by_node: dict[str, dict[str, int]] = {}
        for record in admitted:
            by_node.setdefault(record.node_id, {})[member(record.uid, record.conn_id)] = expiry

        def build(pipe: Any) -> None:
            for node_id, members in by_node.items():
                self._index_node(pipe, node_id, members)
            for outcome in outcomes:
                if isinstance(outcome, Admission):
                    for old in outcome.evicted:
                        pipe.zrem(k.node_sessions(old.node_id), member(old.uid, old.conn_id))

        await self._cmd.pipeline("admit", build)

        def check(pipe: Any) -> None:
            for record in admitted:
                pipe.zscore(k.user_sessions(record.uid), record.conn_id)

        scores = await self._cmd.pipeline("admit", check)
        gone = [r for r, score in zip(admitted, scores, strict=True) if score is None]
        if gone:

            def unindex(pipe: Any) -> None:
                for r in gone:
                    pipe.zrem(k.node_sessions(r.node_id), member(r.uid, r.conn_id))

            await self._cmd.pipeline("admit", unindex)
        return outcomes

    def batch_counts(self) -> dict[str, tuple[int, int]]:
        """Per batched call kind: (round trips so far, calls answered so far)."""
        return {
            "access_state": (self._access.batches, self._access.calls),
            "admit": (self._admissions.batches, self._admissions.calls),
            "inbox_list": (self._inboxes.batches, self._inboxes.calls),
            "presence_leave": (self._leaves.batches, self._leaves.calls),
            "release": (self._releases.batches, self._releases.calls),
            "room_state": (self._states.batches, self._states.calls),
        }

    async def _scripts_each(
        self, what: str, calls: Sequence[tuple[lua.Script, Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        """Scripts in one pipeline (one round trip) on one Redis; on a cluster, whose
        client cannot pipeline scripts, concurrently. One result or
        :class:`BackendUnavailable` per call."""
        if not self._cluster:
            return await self._cmd.eval_many(what, calls)

        async def one(call: tuple[lua.Script, Sequence[str], Sequence[Any]]) -> Any:
            try:
                return await self._cmd.eval(*call)
            except BackendUnavailable as e:
                return e

        return list(await asyncio.gather(*(one(c) for c in calls)))

    async def _admission_abandoned(self, call: AdmitCall, outcome: Admission) -> None:
        """The handshake went away while its batch ran: free the slot it was given."""
        if outcome.admitted:
            with contextlib.suppress(BackendUnavailable):
                await self.release(call[0])

    def _index_node(self, pipe: Any, node_id: str, members: dict[str, int]) -> None:
        k = self._keys
        expiry = max(members.values(), default=self._now_ms() + self._session_ttl_ms)
        if members:
            pipe.zadd(k.node_sessions(node_id), members)
            pipe.pexpire(k.node_sessions(node_id), self._registry_key_ttl_ms)
        pipe.zadd(k.nodes(), {node_id: expiry})
        pipe.pexpire(k.nodes(), self._registry_key_ttl_ms)

    async def release(self, record: SessionRecord) -> None:
        """See :meth:`Backend.release`; the releases of one loop iteration share one
        pipeline (a mass disconnect: one round trip per batch, not per connection)."""
        await self._releases.call(record)
        self._own_sessions.pop(record.conn_id, None)

    async def _release_many(self, records: Sequence[SessionRecord]) -> list[None]:
        """One pipeline for the batch; a failure fails every release of it (each is
        idempotent: the caller may retry, and the records expire anyway)."""
        k = self._keys

        def build(pipe: Any) -> None:
            for record in records:
                pipe.zrem(k.user_sessions(record.uid), record.conn_id)
                pipe.hdel(k.user_records(record.uid), record.conn_id)
                pipe.zrem(k.node_sessions(record.node_id), member(record.uid, record.conn_id))

        await self._cmd.pipeline("release", build)
        return [None] * len(records)

    async def sessions_of(self, uid: str) -> list[SessionRecord]:
        k = self._keys
        flat = await self._cmd.eval(
            lua.SESSIONS, (k.user_sessions(uid), k.user_records(uid)), (self._now_ms(),)
        )
        found = [decode_record(uid, conn, value) for conn, value in pairs(flat)]
        found.sort(key=lambda item: (item[0].connected_at, item[1]))
        return [record for record, _ in found]

    async def refresh(
        self, sessions: Sequence[SessionRecord], memberships: Sequence[Membership]
    ) -> int:
        """See :meth:`Backend.refresh`: ONE pipeline (no MULTI), one script per user,
        room and node, each extending live entries only (an expired one stays gone).
        A room's script also reaps expired memberships of any node (a dead one's) and,
        with ``presence_events``, publishes a ``leave`` for each user left without
        one, so the room's other members are told when a node dies. Also keeps this
        node listed for :meth:`cluster_counts`."""
        k = self._keys
        now = self._now_ms()
        expiry = now + self._session_ttl_ms
        head = (now, expiry, self._registry_key_ttl_ms)
        users: dict[str, list[str]] = {}
        nodes: dict[str, list[str]] = {}
        rooms: dict[str, list[str]] = {}
        for r in sessions:
            users.setdefault(r.uid, []).append(r.conn_id)
            nodes.setdefault(r.node_id, []).append(member(r.uid, r.conn_id))
        for m in memberships:
            rooms.setdefault(m.room, []).append(member(m.uid, m.conn_id))
        sha = lua.EXTEND.sha
        room_sha = self._scripts.presence_refresh.sha
        announce = self.options.presence_events

        def build(pipe: Any) -> None:
            for uid, conns in users.items():
                pipe.execute_command(
                    "EVALSHA", sha, 2, k.user_sessions(uid), k.user_records(uid), *head, *conns
                )
            for node, members in nodes.items():
                pipe.execute_command("EVALSHA", sha, 1, k.node_sessions(node), *head, *members)
            for room, members in rooms.items():
                # also reaps other nodes' expired members, announcing their leave
                keys = (k.room_presence(room), k.room_presence_lex(room))
                channel = k.room_channel(room) if announce else ""
                pipe.execute_command("EVALSHA", room_sha, 2, *keys, *head, channel, *members)
            pipe.zremrangebyscore(k.node_sessions(self.node_id), "-inf", now)
            self._index_node(pipe, self.node_id, {})

        results = await self._cmd.pipeline("refresh", build)
        # The first len(users) results are the per-user EXTEND counts.
        return len(sessions) - sum(int(n) for n in results[: len(users)])

    async def cluster_counts(self) -> dict[str, int]:
        """Live sessions per node id; nodes without any are absent (two round trips)."""
        k = self._keys
        now = self._now_ms()

        def listing(pipe: Any) -> None:
            pipe.zremrangebyscore(k.nodes(), "-inf", now)
            pipe.zrange(k.nodes(), 0, -1)

        nodes = [n.decode() for n in (await self._cmd.pipeline("cluster_counts", listing))[1]]

        def counting(pipe: Any) -> None:
            for node in nodes:
                pipe.zcount(k.node_sessions(node), f"({now}", "+inf")

        counts = await self._cmd.pipeline("cluster_counts", counting) if nodes else []
        return {node: n for node, n in zip(nodes, counts, strict=True) if n > 0}

    # -- cluster stats -----------------------------------------------------------

    async def put_node_stats(self, record: Mapping[str, Any], ttl_s: float) -> None:
        """See :meth:`Backend.put_node_stats`: one pipeline, the record as a JSON string
        with a PX TTL plus its expiry in the stats index (expired entries dropped)."""
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        k = self._keys
        text = json.dumps({**record, "node": self.node_id})
        ttl_ms = max(1, int(ttl_s * 1000))
        now = self._now_ms()

        def build(pipe: Any) -> None:
            pipe.set(k.node_stats(self.node_id), text, px=ttl_ms)
            pipe.zadd(k.stats_index(), {self.node_id: now + ttl_ms})
            pipe.zremrangebyscore(k.stats_index(), "-inf", now)
            pipe.pexpire(k.stats_index(), ttl_ms * 10)

        await self._cmd.pipeline("put_node_stats", build)

    async def drop_node_stats(self) -> None:
        k = self._keys

        def build(pipe: Any) -> None:
            pipe.delete(k.node_stats(self.node_id))
            pipe.zrem(k.stats_index(), self.node_id)

        await self._cmd.pipeline("drop_node_stats", build)

    async def node_stats(self) -> list[NodeStats]:
        """See :meth:`Backend.node_stats`: two round trips (the index, then the records);
        a record whose key already expired is left out."""
        k = self._keys
        now = self._now_ms()

        def listing(pipe: Any) -> None:
            pipe.zrangebyscore(k.stats_index(), f"({now}", "+inf")

        nodes = sorted(n.decode() for n in (await self._cmd.pipeline("node_stats", listing))[0])
        if not nodes:
            return []

        def reading(pipe: Any) -> None:
            for node in nodes:
                pipe.get(k.node_stats(node))

        texts = await self._cmd.pipeline("node_stats", reading)
        records: list[NodeStats] = []
        for text in texts:
            if text is None:
                continue
            record = json.loads(text)
            if isinstance(record, dict):
                records.append(record)
        return records

    async def send_command(self, node_id: str, command: NodeCommand) -> None:
        """See :meth:`Backend.send_command`: one PUBLISH to the node's mailbox channel."""
        payload = encode_command(command)
        async with self._cmd.guard("send_command"):
            await self._cmd.publish(self._keys.node_channel(node_id).encode(), payload)

    # -- offline inbox ---------------------------------------------------------

    async def inbox_put(self, dm: DirectMessage) -> bool:
        """See :meth:`Backend.inbox_put`; False only when ``offline_max_messages < 1``.

        Putting a known ``mid`` again replaces the message in place.
        """
        opts = self.options
        if opts.offline_max_messages < 1:
            return False
        k = self._keys
        uid = dm.to_uid
        stored = await self._cmd.eval(
            lua.INBOX_PUT,
            (k.inbox_order(uid), k.inbox_messages(uid), k.inbox_info(uid)),
            (
                dm.mid,
                encode_dm(dm),
                opts.offline_max_messages,
                expiry_ms(opts.offline_ttl_s),
                opts.offline_max_bytes,
                inbox_size(dm),
                dm.from_uid or "",
                opts.offline_max_per_sender if dm.from_uid is not None else 0,
            ),
        )
        if int(stored) < 0:
            raise InboxQuotaExceeded(dm.from_uid)
        return True

    async def inbox_list(self, uid: str, max_bytes: int | None = None) -> list[DirectMessage]:
        """See :meth:`Backend.inbox_list`; the calls of one loop iteration share one
        round trip (one script per user, in one pipeline)."""
        return await self._inboxes.call((uid, max_bytes))

    async def _inbox_many(
        self, calls: Sequence[tuple[str, int | None]]
    ) -> list[list[DirectMessage] | BaseException]:
        k = self._keys
        replies = await self._scripts_each(
            "inbox_list",
            [
                (
                    lua.INBOX_LIST,
                    (k.inbox_order(uid), k.inbox_messages(uid), k.inbox_info(uid)),
                    (max_bytes or 0,),
                )
                for uid, max_bytes in calls
            ],
        )
        return [
            r if isinstance(r, BaseException) else [decode_dm(value) for value in r]
            for r in replies
        ]

    async def access_state(self, ip: str, uid: str, jti: str) -> AccessState:
        """See :meth:`Backend.access_state`: three reads; the calls of one loop
        iteration share one pipeline."""
        return await self._access.call((ip, uid, jti))

    async def _access_many(
        self, calls: Sequence[tuple[str, str, str]]
    ) -> list[AccessState | BaseException]:
        if not self._cluster:
            # One Redis: a single MGET reads every key of the batch (the revocation
            # marker is a string, so "exists" is "not nil").
            k = self._keys
            keys = [
                key
                for ip, uid, jti in calls
                for key in (k.lockout_block(ip), k.revoked(jti), k.ban(uid))
            ]
            async with self._cmd.guard("access_state"):
                values = await self._cmd.client.mget(keys)
            return [self._access_result(*values[3 * i : 3 * i + 3]) for i in range(len(calls))]

        def build(pipe: Any) -> None:
            for ip, uid, jti in calls:
                self._access_reads(pipe, ip, uid, jti)

        flat = await self._cmd.pipeline_each("access_state", build)
        out: list[AccessState | BaseException] = []
        for i in range(len(calls)):
            reads = flat[3 * i : 3 * i + 3]
            failed = next((r for r in reads if isinstance(r, BaseException)), None)
            out.append(failed if failed is not None else self._access_result(*reads))
        return out

    async def inbox_ack(self, uid: str, mids: Sequence[str]) -> int:
        if not mids:
            return 0
        k = self._keys
        removed = await self._cmd.eval(
            lua.INBOX_ACK,
            (k.inbox_order(uid), k.inbox_messages(uid), k.inbox_info(uid)),
            tuple(mids),
        )
        return int(removed)

    async def mark_seen(self, uid: str, ttl_s: int) -> None:
        async with self._cmd.guard("mark_seen"):
            await self._cmd.client.set(self._keys.seen(uid), "1", px=expiry_ms(ttl_s))

    async def was_seen(self, uid: str) -> bool:
        async with self._cmd.guard("was_seen"):
            return bool(await self._cmd.client.exists(self._keys.seen(uid)))
