"""The Lua scripts of the Redis backend: every check-then-act is one of these.

Each script runs atomically on the server (no other command interleaves) and
touches keys of one hash tag only, so it also runs on Redis Cluster. Times are
integer Unix milliseconds passed in by the caller (its ``Clock.wall()``), never
``redis.call('TIME')``: expiry scores written by plain commands (refresh) and by
scripts then come from the same clock, and the backend stays drivable by an
injected clock. Cross-node consistency therefore assumes node clocks agree (NTP)
to well within ``session_ttl_s`` and the rate-limit windows. Key TTLs (``PEXPIRE``)
only collect garbage; whether an entry is live is decided by its score.

Scripts return integers, bulk strings and arrays of them only (a Lua number becomes
an integer reply, so nothing fractional is returned). Every key a script writes gets
a TTL in the same script.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "ADMIT",
    "ADMIT_BATCH",
    "EXTEND",
    "FAMILY_REVOKE",
    "FAMILY_ROTATE",
    "FAMILY_START",
    "INBOX_ACK",
    "INBOX_LIST",
    "INBOX_PUT",
    "LOCKOUT_BEGIN",
    "LOCKOUT_END",
    "LOCKOUT_FAIL",
    "PRESENCE_MEMBERS",
    "RATED_PUBLISH",
    "RATE_HIT",
    "ROOM_STATE",
    "SESSIONS",
    "PublishingScripts",
    "Script",
    "publishing",
]


@dataclass(frozen=True, slots=True)
class Script:
    """A named Lua script and its SHA1 (the EVALSHA handle)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "sha", hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        )


# A room's first write (or first after its meta hash vanished) creates a fresh
# epoch and drops any history left over: history lost means a new epoch.
_ENSURE_EPOCH = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
local epoch = meta[1]
local seq = tonumber(meta[2]) or 0
if not epoch then
  epoch = candidate
  seq = 0
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
"""

_PUBLISH = (
    """
-- KEYS: meta, history. ARGV: channel, encoded tail [from, ts, data, origin]
-- (no array header), epoch candidate, history_size, history ttl ms.
-- The payload is the msgpack array [seq, epoch, from, ts, data, origin]: header
-- 0x96 + seq + epoch packed here + the tail as the node packed it, so the
-- message bytes are never decoded or re-encoded. Returns {seq, epoch}.
local candidate = ARGV[3]
"""
    + _ENSURE_EPOCH
    + """
seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local payload = '\\150' .. cmsgpack.pack(seq, epoch) .. ARGV[2]
local size = tonumber(ARGV[4])
if size > 0 then
  redis.call('RPUSH', KEYS[2], payload)
  redis.call('LTRIM', KEYS[2], -size, -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('%s', ARGV[1], payload)
return {seq, epoch}
"""
)


ROOM_STATE = Script(
    "room_state",
    """
-- KEYS: meta, history. ARGV: epoch candidate, history ttl ms, since ('' = position
-- only), client epoch ('' = none). A room seen for the first time gets its epoch
-- (expiring like history). Returns {seq, epoch} or {seq, epoch, {payload, ...}}:
-- the history after since, unless the client's epoch is not the room's.
local candidate = ARGV[1]
"""
    + _ENSURE_EPOCH
    + """
if not meta[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if ARGV[3] == '' or (ARGV[4] ~= '' and ARGV[4] ~= epoch) then return {seq, epoch} end
local want = seq - tonumber(ARGV[3])
if want <= 0 then return {seq, epoch} end
return {seq, epoch, redis.call('LRANGE', KEYS[2], -want, -1)}
""",
)

# Members of a user in a room: the lexical range [uid\0, uid\1) of the lex set,
# keeping only members whose remainder (the conn id) has no NUL, so a uid that
# itself contains NUL cannot be mistaken for a prefix of another.
_USER_MEMBERS = """
local function user_members(lex, uid)
  local found = {}
  local all = redis.call('ZRANGEBYLEX', lex, '[' .. uid .. '\\0', '(' .. uid .. '\\1')
  for i = 1, #all do
    if not string.find(all[i], '\\0', #uid + 2, true) then found[#found + 1] = all[i] end
  end
  return found
end
"""

# Expired members of a room (their node died, or missed its refreshes) are removed,
# and for each user left with no live member a presence ``leave`` is published on
# the room channel (origin: the expired connection), so the room's other members
# learn it. ``PUB`` is the publish command, set by the script that includes this.
_REAP = """
local function uid_of(m)
  local last = 0
  local i = string.find(m, '\\0', 1, true)
  while i do
    last = i
    i = string.find(m, '\\0', i + 1, true)
  end
  return string.sub(m, 1, last - 1), string.sub(m, last + 1)
end
local function reap(pres, lex, now, channel)
  local dead = redis.call('ZRANGEBYSCORE', pres, '-inf', now)
  if #dead == 0 then return 0 end
  for i = 1, #dead do redis.call('ZREM', lex, dead[i]) end
  redis.call('ZREMRANGEBYSCORE', pres, '-inf', now)
  if channel == '' then return #dead end
  local told = {}
  for i = 1, #dead do
    local uid, conn = uid_of(dead[i])
    if not told[uid] and #user_members(lex, uid) == 0 then
      told[uid] = true
      redis.call(PUB, channel, cmsgpack.pack({'l', uid, conn}))
    end
  end
  return #dead
end
"""

_PRESENCE_JOIN = (
    """
-- KEYS: presence (member -> expiry), presence lex. ARGV: now ms, expiry ms, uid,
-- member, channel ('' = do not announce), event payload, key ttl ms.
-- Returns 1 when the uid had no live membership of the room before.
local PUB = '%s'
"""
    + _USER_MEMBERS
    + _REAP
    + """
reap(KEYS[1], KEYS[2], ARGV[1], ARGV[5])
local first = #user_members(KEYS[2], ARGV[3]) == 0
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[2], 0, ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
if first and ARGV[5] ~= '' then redis.call(PUB, ARGV[5], ARGV[6]) end
return first and 1 or 0
"""
)

_PRESENCE_LEAVE = (
    """
-- KEYS: presence, presence lex. ARGV: now ms, uid, member, channel ('' = do not
-- announce), event payload. Returns 1 when the membership was live and the uid's
-- last in the room.
local PUB = '%s'
"""
    + _USER_MEMBERS
    + _REAP
    + """
local now = tonumber(ARGV[1])
local score = redis.call('ZSCORE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[3])
if not score or tonumber(score) <= now then return 0 end
reap(KEYS[1], KEYS[2], ARGV[1], ARGV[4])
if #user_members(KEYS[2], ARGV[2]) > 0 then return 0 end
if ARGV[4] ~= '' then redis.call(PUB, ARGV[4], ARGV[5]) end
return 1
"""
)

# The heartbeat's refresh of one room's memberships of this node: extend the live
# ones (as EXTEND), then reap the expired ones of any node, announcing leaves.
_PRESENCE_REFRESH = (
    """
-- KEYS: presence, presence lex. ARGV: now ms, new expiry ms, key ttl ms, channel
-- ('' = do not announce), member... Returns how many were extended.
local PUB = '%s'
"""
    + _USER_MEMBERS
    + _REAP
    + """
local now = tonumber(ARGV[1])
local n = 0
for i = 5, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) > now then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i])
    n = n + 1
  end
end
if n > 0 then
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
reap(KEYS[1], KEYS[2], ARGV[1], ARGV[4])
return n
"""
)


@dataclass(frozen=True, slots=True)
class PublishingScripts:
    """The scripts that publish to a room channel, for one publish command.

    ``PUBLISH`` on a single Redis; sharded ``SPUBLISH`` on Redis Cluster, where the
    room channel carries the room's hash tag and so lives on the script's slot.
    """

    publish: Script
    presence_join: Script
    presence_leave: Script
    presence_refresh: Script


# The same publish, first charged to a sliding-window rate log (RATE_HIT's logic)
# in the same script: one round trip for a rate-limited pub. Single Redis only: the
# rate key is the user's, on another cluster slot than the room's keys.
_RATED_PUBLISH = (
    """
-- KEYS: meta, history, rate log. ARGV: as PUBLISH, then now ms, window ms, limit,
-- rate member. Returns {0, ms to wait} when over the limit (nothing published),
-- else {seq, epoch} (seq >= 1).
local now = tonumber(ARGV[6])
local window = tonumber(ARGV[7])
local limit = tonumber(ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
if redis.call('ZCARD', KEYS[3]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[3], -limit, -limit, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window - now}
end
redis.call('ZADD', KEYS[3], now, ARGV[9])
redis.call('PEXPIRE', KEYS[3], window)
"""
    + _PUBLISH
)

RATED_PUBLISH = Script("publish:rated", _RATED_PUBLISH % "PUBLISH")


def publishing(command: Literal["PUBLISH", "SPUBLISH"]) -> PublishingScripts:
    """The publishing scripts using ``command``."""
    tag = command.lower()
    return PublishingScripts(
        publish=Script(f"{tag}:publish", _PUBLISH % command),
        presence_join=Script(f"{tag}:presence_join", _PRESENCE_JOIN % command),
        presence_leave=Script(f"{tag}:presence_leave", _PRESENCE_LEAVE % command),
        presence_refresh=Script(f"{tag}:presence_refresh", _PRESENCE_REFRESH % command),
    )


PRESENCE_MEMBERS = Script(
    "presence_members",
    """
-- KEYS: presence, presence lex. ARGV: now ms. The live members; expired ones are
-- left for a reap that announces their leave (see _REAP).
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
""",
)

# The admission step, shared by ADMIT (any Redis) and ADMIT_BATCH (one Redis).
# sessions: conn -> expiry; records: conn -> '<admission no>|<msgpack [node_id, ip,
# connected_at, jti]>'. Returns {0} (rejected) or {1, conn, record, ...} listing the
# evicted records. Oldest = smallest connected_at, ties broken by admission order
# (as in memory).
_ADMIT_FN = """
local function admit(sessions, records, now, expiry, limit, policy, conn_id, record, ttl)
  local dead = redis.call('ZRANGEBYSCORE', sessions, '-inf', now)
  for i = 1, #dead do redis.call('HDEL', records, dead[i]) end
  if #dead > 0 then redis.call('ZREMRANGEBYSCORE', sessions, '-inf', now) end
  local others, top, mine = {}, 0, nil
  for _, conn in ipairs(redis.call('ZRANGE', sessions, 0, -1)) do
    local value = redis.call('HGET', records, conn)
    if value then
      local bar = string.find(value, '|', 1, true)
      local no = tonumber(string.sub(value, 1, bar - 1))
      if no > top then top = no end
      if conn == conn_id then
        mine = no
      else
        local at = cmsgpack.unpack(string.sub(value, bar + 1))[3]
        others[#others + 1] = {conn, no, at, value}
      end
    else
      redis.call('ZREM', sessions, conn)
    end
  end
  limit = tonumber(limit)
  local result = {1}
  if #others >= limit then
    if policy == 'reject' then return {0} end
    table.sort(others, function(a, b)
      if a[3] ~= b[3] then return a[3] < b[3] end
      return a[2] < b[2]
    end)
    for i = 1, #others - limit + 1 do
      redis.call('ZREM', sessions, others[i][1])
      redis.call('HDEL', records, others[i][1])
      result[#result + 1] = others[i][1]
      result[#result + 1] = others[i][4]
    end
  end
  redis.call('ZADD', sessions, expiry, conn_id)
  redis.call('HSET', records, conn_id, string.format('%d|', mine or top + 1) .. record)
  redis.call('PEXPIRE', sessions, ttl)
  redis.call('PEXPIRE', records, ttl)
  return result
end
"""

# The first inbox page: messages oldest first whose sizes add up to max_bytes (at
# least one; 0 = all).
_INBOX_LIST_FN = """
local function inbox_list(order, messages, info, max_bytes)
  max_bytes = tonumber(max_bytes)
  local result = {}
  local total = 0
  for _, mid in ipairs(redis.call('ZRANGE', order, 0, -1)) do
    local value = redis.call('HGET', messages, mid)
    if value then
      local meta = redis.call('HGET', info, 'm:' .. mid)
      local size = #value
      if meta then size = tonumber(string.sub(meta, 1, string.find(meta, '|', 1, true) - 1)) end
      total = total + size
      if max_bytes > 0 and #result > 0 and total > max_bytes then break end
      result[#result + 1] = value
    end
  end
  return result
end
"""

ADMIT = Script(
    "admit",
    """
-- KEYS: sessions, records. ARGV: now ms, expiry ms, limit, policy ('reject' |
-- 'kick_oldest'), conn_id, record, key ttl ms. See _ADMIT_FN.
"""
    + _ADMIT_FN
    + """
return admit(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
""",
)

ADMIT_BATCH = Script(
    "admit_batch",
    """
-- One Redis only (its keys span slots, and are built here from the templates the
-- caller passes, so the key names still come from core/backend/redis_keys.py): the
-- whole Redis side of a batch of handshakes after their token checks, in one call.
-- ARGV: 1 now ms, 2 expiry ms, 3 key ttl ms, 4 node id, 5 nodes key, then pairs
-- (head, tail) of key templates, key = head .. id .. tail: 6/7 sessions, 8/9 records,
-- 10/11 node index (id: a node), 12/13 revoked (id: a jti), 14/15 ban, 16/17 inbox
-- order, 18/19 inbox messages, 20/21 inbox info, 22/23 seen; then 8 per admission:
-- uid, conn_id, record, limit, policy, jti, inbox max bytes (-1: do not fetch),
-- seen ttl ms (0: do not mark).
-- Per admission, in order, each as one step: admit (see _ADMIT_FN), index the
-- session under its node and un-index the evicted ones, read revocation and ban
-- (after the write: the admission-race re-check), and when admitted, not revoked and
-- not banned mark the user seen and read the first inbox page.
-- Returns one {admitted, revoked, banned, {evicted conn, record, ...}, {inbox...}}
-- per admission.
"""
    + _ADMIT_FN
    + _INBOX_LIST_FN
    + """
local now, expiry, ttl, node_id, nodes = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local function key(at, id) return ARGV[at] .. id .. ARGV[at + 1] end
local own_index = key(10, node_id)
local out = {}
for base = 24, #ARGV, 8 do
  local uid, conn_id, record = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local result = admit(key(6, uid), key(8, uid), now, expiry, ARGV[base + 3],
    ARGV[base + 4], conn_id, record, ttl)
  local revoked = redis.call('EXISTS', key(12, ARGV[base + 5]))
  local banned = 0
  if redis.call('GET', key(14, uid)) == 'banned' then banned = 1 end
  if result[1] == 0 then
    out[#out + 1] = {0, revoked, banned, {}, {}}
  else
    local evicted = {}
    for i = 2, #result, 2 do
      local conn, value = result[i], result[i + 1]
      local bar = string.find(value, '|', 1, true)
      local node = cmsgpack.unpack(string.sub(value, bar + 1))[1]
      redis.call('ZREM', key(10, node), uid .. '\0' .. conn)
      evicted[#evicted + 1] = conn
      evicted[#evicted + 1] = value
    end
    redis.call('ZADD', own_index, expiry, uid .. '\0' .. conn_id)
    local page = {}
    if revoked == 0 and banned == 0 then
      local seen_ttl = tonumber(ARGV[base + 7])
      if seen_ttl > 0 then redis.call('SET', key(22, uid), '1', 'PX', seen_ttl) end
      local max_bytes = tonumber(ARGV[base + 6])
      if max_bytes >= 0 then
        page = inbox_list(key(16, uid), key(18, uid), key(20, uid), max_bytes)
      end
    end
    out[#out + 1] = {1, revoked, banned, evicted, page}
  end
end
redis.call('PEXPIRE', own_index, ttl)
redis.call('ZADD', nodes, expiry, node_id)
redis.call('PEXPIRE', nodes, ttl)
return out
""",
)

SESSIONS = Script(
    "sessions",
    """
-- KEYS: sessions, records. ARGV: now ms. Returns {conn, record, ...} of live ones.
local result = {}
for _, conn in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')) do
  local value = redis.call('HGET', KEYS[2], conn)
  if value then
    result[#result + 1] = conn
    result[#result + 1] = value
  end
end
return result
""",
)

EXTEND = Script(
    "extend",
    """
-- KEYS: a sorted set of member -> expiry, then keys living as long as it.
-- ARGV: now ms, new expiry ms, key ttl ms, member... Moves the expiry of live
-- members only: an expired member stays dead even before it is removed.
-- Returns how many were extended.
local now = tonumber(ARGV[1])
local n = 0
for i = 4, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) > now then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i])
    n = n + 1
  end
end
if n > 0 then
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
return n
""",
)

FAMILY_START = Script(
    "family_start",
    """
-- KEYS: family. ARGV: token id, ttl ms. Creates or replaces the family.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'live', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
""",
)

# Revocation leaves a tombstone with the family's remaining TTL, so a revoked
# family cannot be rotated (nor its spent tokens reported as REUSED) again.
_TOMBSTONE = """
local function tombstone(key)
  local ttl = redis.call('PTTL', key)
  if ttl == -2 then return end
  redis.call('DEL', key)
  redis.call('HSET', key, 'revoked', '1')
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end
"""

FAMILY_ROTATE = Script(
    "family_rotate",
    """
-- KEYS: family. ARGV: presented id, new id, ttl ms.
-- Returns 'rotated', 'reused' (and revokes the family) or 'unknown'.
"""
    + _TOMBSTONE
    + """
local live = redis.call('HGET', KEYS[1], 'live')
if not live then return 'unknown' end
if live == ARGV[1] then
  redis.call('HSET', KEYS[1], 'live', ARGV[2], 's:' .. ARGV[1], '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 'rotated'
end
if redis.call('HEXISTS', KEYS[1], 's:' .. ARGV[1]) == 1 then
  tombstone(KEYS[1])
  return 'reused'
end
return 'unknown'
""",
)

FAMILY_REVOKE = Script(
    "family_revoke",
    """
-- KEYS: family. Idempotent.
"""
    + _TOMBSTONE
    + """
tombstone(KEYS[1])
return 1
""",
)

LOCKOUT_FAIL = Script(
    "lockout_fail",
    """
-- KEYS: failure times, block. ARGV: now ms, window ms, failures, block ms, member.
-- Returns the ms the ip stays blocked (0 = not blocked). While blocked, failures
-- are not counted; a block clears the window.
local now = tonumber(ARGV[1])
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked > now then return blocked - now end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], now, ARGV[5])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], now + tonumber(ARGV[4]), 'PX', ARGV[4])
  return tonumber(ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
""",
)

LOCKOUT_BEGIN = Script(
    "lockout_begin",
    """
-- KEYS: failure times, block, attempts in flight (id -> expiry ms).
-- ARGV: now ms, window ms, failures, max in flight, attempt id, in-flight ttl ms.
-- Returns 0 when the attempt is reserved, else the ms to wait: the block's rest, or
-- (failures + attempts in flight reach the budget, or too many in flight) 1000.
local now = tonumber(ARGV[1])
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked > now then return blocked - now end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local running = redis.call('ZCARD', KEYS[3])
if running >= tonumber(ARGV[4])
   or redis.call('ZCARD', KEYS[1]) + running >= tonumber(ARGV[3]) then
  return math.min(1000, tonumber(ARGV[6]))
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[6])
return 0
""",
)

LOCKOUT_END = Script(
    "lockout_end",
    """
-- KEYS: failure times, block, attempts in flight. ARGV: now ms, window ms, failures,
-- block ms, attempt id, failed (1/0), failure member. The attempt leaves the
-- in-flight set; a failure is then counted exactly as lockout_fail does.
-- Returns the ms the ip stays blocked (0 = not blocked).
redis.call('ZREM', KEYS[3], ARGV[5])
local now = tonumber(ARGV[1])
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked > now then return blocked - now end
if ARGV[6] ~= '1' then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], now, ARGV[7])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], now + tonumber(ARGV[4]), 'PX', ARGV[4])
  return tonumber(ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
""",
)

RATE_HIT = Script(
    "rate_hit",
    """
-- KEYS: event times. ARGV: now ms, window ms, limit, member.
-- Sliding-window log: returns 0 and counts the event when fewer than limit events
-- are in (now - window, now], else the ms until the oldest of the last limit
-- events leaves the window (> 0), without counting.
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')
return tonumber(oldest[2]) + window - now
""",
)

# Inbox bookkeeping shared by the inbox scripts. KEYS[1] order, KEYS[2] messages,
# KEYS[3] info (bytes total, per-sender counts, per-message size|sender).
_INBOX_META = """
local function unmeta(mid)
  local meta = redis.call('HGET', KEYS[3], 'm:' .. mid)
  if not meta then return end
  local sep = string.find(meta, '|', 1, true)
  local size = tonumber(string.sub(meta, 1, sep - 1))
  local sender = string.sub(meta, sep + 1)
  redis.call('HDEL', KEYS[3], 'm:' .. mid)
  redis.call('HINCRBY', KEYS[3], 'bytes', -size)
  if sender ~= '' and redis.call('HINCRBY', KEYS[3], 's:' .. sender, -1) <= 0 then
    redis.call('HDEL', KEYS[3], 's:' .. sender)
  end
end
local function drop(mid)
  local removed = redis.call('ZREM', KEYS[1], mid)
  redis.call('HDEL', KEYS[2], mid)
  unmeta(mid)
  return removed
end
"""

INBOX_PUT = Script(
    "inbox_put",
    """
-- KEYS: order (mid -> insertion no), messages (mid -> msgpack), info.
-- ARGV: mid, message, max messages, ttl ms, max bytes, size, sender ('' = server),
-- per-sender quota (0 = none). A known mid is replaced in place; beyond max messages
-- or max bytes the oldest go (never the newest). Returns 1, or -1 (sender over quota).
"""
    + _INBOX_META
    + """
local mid, sender = ARGV[1], ARGV[7]
local quota = tonumber(ARGV[8])
if redis.call('ZSCORE', KEYS[1], mid) ~= false then
  unmeta(mid)
else
  if quota > 0 and sender ~= ''
     and tonumber(redis.call('HGET', KEYS[3], 's:' .. sender) or '0') >= quota then
    return -1
  end
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  local no = 1
  if last[2] then no = tonumber(last[2]) + 1 end
  redis.call('ZADD', KEYS[1], no, mid)
end
redis.call('HSET', KEYS[2], mid, ARGV[2])
redis.call('HSET', KEYS[3], 'm:' .. mid, ARGV[6] .. '|' .. sender)
redis.call('HINCRBY', KEYS[3], 'bytes', tonumber(ARGV[6]))
if sender ~= '' then redis.call('HINCRBY', KEYS[3], 's:' .. sender, 1) end
local max_n, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[5])
while true do
  local n = redis.call('ZCARD', KEYS[1])
  local bytes = tonumber(redis.call('HGET', KEYS[3], 'bytes') or '0')
  if not (n > max_n or (bytes > max_bytes and n > 1)) then break end
  drop(redis.call('ZRANGE', KEYS[1], 0, 0)[1])
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
return 1
""",
)

INBOX_LIST = Script(
    "inbox_list",
    """
-- KEYS: order, messages, info. ARGV: max bytes (0 = all). Returns the messages,
-- oldest first; with max bytes only those whose sizes add up to it (at least one).
"""
    + _INBOX_LIST_FN
    + """
return inbox_list(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
""",
)

INBOX_ACK = Script(
    "inbox_ack",
    """
-- KEYS: order, messages, info. ARGV: mid... Returns how many were removed.
"""
    + _INBOX_META
    + """
local n = 0
for i = 1, #ARGV do
  n = n + drop(ARGV[i])
end
return n
""",
)
