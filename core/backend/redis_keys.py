"""Every Redis key and channel name the Redis backend uses, in one place.

Guarantees:

* Every name starts with ``key_prefix``, so one Redis can hold several clusters
  (and every test its own) and ``SCAN prefix*`` finds all of a cluster's data.
* Keys one Lua script touches together share a Redis Cluster hash tag: a room's
  keys and channel are tagged ``{r:<room>}``, a user's sessions and inbox
  ``{u:<uid>}``, a node's session index ``{n:<node>}``, an ip's lockout
  ``{l:<ip>}``; every script therefore runs on one slot. (A ``key_prefix`` that
  itself contains ``{...}`` puts everything in one slot: still correct, no sharding.)
* Distinct inputs give distinct names. Within a family the tag is followed by a
  suffix none of which ends another (``:meta``, ``:hist``, ``:pres``, ``:plex``;
  ``:sess``, ``:recs``, ``:ibx``, ``:ibm``), so a room or user id containing ``}``
  cannot make two names collide; families differ right after the prefix.
* The ban key is exactly ``<prefix>auth:<uid>`` and holds ``banned``: operator
  tools write it directly, so it carries no hash tag.

Members of the presence and node-session sorted sets are ``uid + "\\0" + conn_id``
(:func:`member`); connection ids never contain NUL, so :func:`split_member` splits
at the last NUL and is exact even for a uid that contains one.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RedisKeys", "member", "split_member"]


def member(uid: str, conn_id: str) -> str:
    """The sorted-set member naming one connection of one user."""
    return f"{uid}\0{conn_id}"


def split_member(value: str) -> tuple[str, str]:
    """Inverse of :func:`member`: ``(uid, conn_id)``."""
    uid, _, conn_id = value.rpartition("\0")
    return uid, conn_id


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Names under one ``prefix``. Pure functions of their arguments."""

    prefix: str

    # -- rooms: seq + epoch hash, history list, presence, channel ---------------

    def room_channel(self, room: str) -> str:
        """Publications and presence events of ``room`` (same slot as its keys)."""
        return f"{self.prefix}{{r:{room}}}"

    def room_meta(self, room: str) -> str:
        """HASH ``seq`` (last assigned) and ``epoch``: one key, so they vanish together."""
        return f"{self.prefix}{{r:{room}}}:meta"

    def room_history(self, room: str) -> str:
        """LIST of encoded publications, oldest first, trimmed to ``history_size``."""
        return f"{self.prefix}{{r:{room}}}:hist"

    def room_presence(self, room: str) -> str:
        """ZSET member -> expiry (ms): which memberships are live."""
        return f"{self.prefix}{{r:{room}}}:pres"

    def room_presence_lex(self, room: str) -> str:
        """ZSET member -> 0: the same members, for a lexical range by uid."""
        return f"{self.prefix}{{r:{room}}}:plex"

    # -- users: session registry and offline inbox ------------------------------

    def user_sessions(self, uid: str) -> str:
        """ZSET conn_id -> expiry (ms)."""
        return f"{self.prefix}{{u:{uid}}}:sess"

    def user_records(self, uid: str) -> str:
        """HASH conn_id -> ``<admission no>|<msgpack record>``."""
        return f"{self.prefix}{{u:{uid}}}:recs"

    def inbox_order(self, uid: str) -> str:
        """ZSET mid -> insertion number."""
        return f"{self.prefix}{{u:{uid}}}:ibx"

    def inbox_messages(self, uid: str) -> str:
        """HASH mid -> msgpack direct message."""
        return f"{self.prefix}{{u:{uid}}}:ibm"

    def inbox_info(self, uid: str) -> str:
        """HASH ``bytes`` -> total size, ``s:<sender>`` -> unacked count,
        ``m:<mid>`` -> ``<size>|<sender>``."""
        return f"{self.prefix}{{u:{uid}}}:ibi"

    def seen(self, uid: str) -> str:
        """STRING, present while ``uid`` counts as a known user."""
        return f"{self.prefix}{{u:{uid}}}:seen"

    # -- nodes ------------------------------------------------------------------

    def nodes(self) -> str:
        """ZSET node_id -> expiry (ms) of the node's last registry write."""
        return f"{self.prefix}nodes"

    def node_sessions(self, node_id: str) -> str:
        """ZSET member(uid, conn_id) -> expiry (ms): the node's sessions, for counts."""
        return f"{self.prefix}{{n:{node_id}}}:sess"

    def stats_index(self) -> str:
        """ZSET node_id -> expiry (ms) of the node's stats record."""
        return f"{self.prefix}stats"

    def node_stats(self, node_id: str) -> str:
        """STRING, JSON of the node's stats record, with a PX TTL."""
        return f"{self.prefix}{{n:{node_id}}}:stats"

    def node_channel(self, node_id: str) -> str:
        """The node's mailbox (NodeCommand)."""
        return f"{self.prefix}node:{node_id}"

    def probe_channel(self, node_id: str) -> str:
        """The node's liveness probe: it publishes here and expects its own message."""
        return f"{self.prefix}probe:{node_id}"

    # -- security ---------------------------------------------------------------

    def ban(self, uid: str) -> str:
        """STRING ``banned``; written by operator tools too, hence no hash tag."""
        return f"{self.prefix}auth:{uid}"

    def revoked(self, jti: str) -> str:
        """STRING, present while the access token ``jti`` is blacklisted."""
        return f"{self.prefix}jti:{jti}"

    def family(self, family: str) -> str:
        """HASH ``live`` -> token id, ``s:<id>`` per spent id; ``revoked`` tombstone."""
        return f"{self.prefix}fam:{family}"

    def nonce(self, nonce: str) -> str:
        return f"{self.prefix}nonce:{nonce}"

    def lockout_failures(self, ip: str) -> str:
        """ZSET of failure times (ms) inside the window."""
        return f"{self.prefix}{{l:{ip}}}:fail"

    def lockout_in_flight(self, ip: str) -> str:
        """ZSET attempt id -> expiry (ms): authentication attempts being checked."""
        return f"{self.prefix}{{l:{ip}}}:infl"

    def lockout_block(self, ip: str) -> str:
        """STRING: end of the block (ms), expiring with it."""
        return f"{self.prefix}{{l:{ip}}}:block"

    def rate(self, key: str) -> str:
        """ZSET of event times (ms) inside the window."""
        return f"{self.prefix}rate:{key}"
