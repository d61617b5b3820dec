"""Bans, revoked tokens, refresh-token families, nonces, login lockouts and rate limits
on Redis: the records of :class:`~core.backend.redis.RedisBackend` whose Redis TTL
*is* their lifetime (a permanent ban has none).

Guarantees (those of :class:`~core.backend.base.Backend`, across nodes):

* Each operation is one command or one Lua script of
  :mod:`core.backend.redis_scripts`, so every check-then-act is atomic.
* Expiry uses the injected clock's ``wall()`` for scores and Redis TTLs for
  lifetimes; every TTL is at least 1 ms.
* Every failure surfaces as :class:`~core.backend.base.BackendUnavailable` (see
  :mod:`core.backend.redis_client`); callers fail closed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from core.backend import redis_scripts as lua
from core.backend.base import AccessState, AttemptLimits, RotateOutcome
from core.backend.redis_client import CommandClient, expiry_ms
from core.backend.redis_keys import RedisKeys
from core.clock import Clock

__all__ = ["SecurityRecords"]


class SecurityRecords:
    """The security records of :class:`~core.backend.redis.RedisBackend` (a mixin).

    The backend sets the attributes declared here; the clock helpers are shared
    with it.
    """

    node_id: str
    _clock: Clock
    _cmd: CommandClient
    _keys: RedisKeys
    _unique: Iterator[int]

    def _now_ms(self) -> int:
        return int(self._clock.wall() * 1000)

    def _unique_member(self, now_ms: int) -> str:
        return f"{now_ms}:{self.node_id}:{next(self._unique)}"

    # -- bans and revoked tokens -----------------------------------------------

    async def ban(self, uid: str, ttl_s: int | None) -> None:
        """``SET <prefix>auth:<uid> banned [EX ttl_s]``. Raises ValueError for ``ttl_s <= 0``."""
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s!r}")
        async with self._cmd.guard("ban"):
            await self._cmd.client.set(self._keys.ban(uid), "banned", ex=ttl_s)

    async def unban(self, uid: str) -> None:
        async with self._cmd.guard("unban"):
            await self._cmd.client.delete(self._keys.ban(uid))

    async def is_banned(self, uid: str) -> bool:
        async with self._cmd.guard("is_banned"):
            return await self._cmd.client.get(self._keys.ban(uid)) == b"banned"

    async def revoke_jti(self, jti: str, until: int) -> None:
        """Blacklist ``jti`` for ``until - now`` ms (clock's wall time); a past ``until``
        stores nothing."""
        ttl_ms = until - self._now_ms()
        if ttl_ms > 0:
            async with self._cmd.guard("revoke_jti"):
                await self._cmd.client.set(self._keys.revoked(jti), "1", px=ttl_ms)

    async def access_state(self, ip: str, uid: str, jti: str) -> AccessState:
        """See :meth:`Backend.access_state`: one pipeline (three reads, one round trip)."""
        k = self._keys

        def build(pipe: Any) -> None:
            pipe.get(k.lockout_block(ip))
            pipe.exists(k.revoked(jti))
            pipe.get(k.ban(uid))

        until, revoked, ban = await self._cmd.pipeline("access_state", build)
        lockout = 0.0 if until is None else max(0, int(until) - self._now_ms()) / 1000
        return AccessState(lockout_s=lockout, revoked=bool(revoked), banned=ban == b"banned")

    async def is_revoked(self, jti: str) -> bool:
        async with self._cmd.guard("is_revoked"):
            return bool(await self._cmd.client.exists(self._keys.revoked(jti)))

    # -- refresh-token families ------------------------------------------------

    async def family_start(self, family: str, token_id: str, ttl_s: int) -> None:
        """Create (or replace) ``family`` with live token ``token_id`` for ``ttl_s``."""
        await self._cmd.eval(
            lua.FAMILY_START, (self._keys.family(family),), (token_id, expiry_ms(ttl_s))
        )

    async def family_rotate(
        self, family: str, presented: str, new_id: str, ttl_s: int
    ) -> RotateOutcome:
        """See :meth:`Backend.family_rotate`; ROTATED extends the family by ``ttl_s``.

        A token that never belonged to the family is UNKNOWN and changes nothing.
        """
        outcome = await self._cmd.eval(
            lua.FAMILY_ROTATE, (self._keys.family(family),), (presented, new_id, expiry_ms(ttl_s))
        )
        return RotateOutcome(outcome.decode())

    async def family_revoke(self, family: str) -> None:
        await self._cmd.eval(lua.FAMILY_REVOKE, (self._keys.family(family),), ())

    # -- nonces, lockouts, rate limits -----------------------------------------

    async def claim_nonce(self, nonce: str, ttl_s: int) -> bool:
        """``SET NX PX``; a ``ttl_s <= 0`` claim succeeds and stores nothing (as in memory)."""
        if ttl_s <= 0:
            return True
        async with self._cmd.guard("claim_nonce"):
            return bool(
                await self._cmd.client.set(
                    self._keys.nonce(nonce), "1", nx=True, px=expiry_ms(ttl_s)
                )
            )

    async def record_auth_failure(
        self, ip: str, failures: int, window_s: float, block_s: float
    ) -> float:
        """See :meth:`Backend.record_auth_failure`.

        While blocked, failures are not counted (the block is not extended); a block
        starts a fresh window, so after it ends ``failures`` new ones are needed.
        """
        k = self._keys
        now = self._now_ms()
        blocked_ms = await self._cmd.eval(
            lua.LOCKOUT_FAIL,
            (k.lockout_failures(ip), k.lockout_block(ip)),
            (now, expiry_ms(window_s), failures, expiry_ms(block_s), self._unique_member(now)),
        )
        return int(blocked_ms) / 1000

    async def lockout_remaining(self, ip: str) -> float:
        async with self._cmd.guard("lockout_remaining"):
            until = await self._cmd.client.get(self._keys.lockout_block(ip))
        return 0.0 if until is None else max(0, int(until) - self._now_ms()) / 1000

    async def attempt_begin(self, ip: str, attempt: str, limits: AttemptLimits) -> float:
        """See :meth:`Backend.attempt_begin`: one Lua script."""
        k = self._keys
        wait_ms = await self._cmd.eval(
            lua.LOCKOUT_BEGIN,
            (k.lockout_failures(ip), k.lockout_block(ip), k.lockout_in_flight(ip)),
            (
                self._now_ms(),
                expiry_ms(limits.window_s),
                limits.failures,
                limits.max_in_flight,
                attempt,
                expiry_ms(limits.in_flight_ttl_s),
            ),
        )
        return int(wait_ms) / 1000

    async def attempt_end(
        self, ip: str, attempt: str, failed: bool, limits: AttemptLimits
    ) -> float:
        """See :meth:`Backend.attempt_end`: one Lua script."""
        k = self._keys
        now = self._now_ms()
        blocked_ms = await self._cmd.eval(
            lua.LOCKOUT_END,
            (k.lockout_failures(ip), k.lockout_block(ip), k.lockout_in_flight(ip)),
            (
                now,
                expiry_ms(limits.window_s),
                limits.failures,
                expiry_ms(limits.block_s),
                attempt,
                1 if failed else 0,
                self._unique_member(now),
            ),
        )
        return int(blocked_ms) / 1000

    async def rate_hit(self, key: str, limit: int, window_s: float) -> float:
        """See :meth:`Backend.rate_hit`. Raises ValueError for ``limit < 1``."""
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit!r}")
        now = self._now_ms()
        wait_ms = await self._cmd.eval(
            lua.RATE_HIT,
            (self._keys.rate(key),),
            (now, expiry_ms(window_s), limit, self._unique_member(now)),
        )
        return int(wait_ms) / 1000
