"""Token lifecycle: ``/auth/login``, ``/auth/refresh`` and ``/auth/logout`` (PROTOCOL.md).

Pure logic over the :class:`~core.backend.base.Backend` (so it holds across nodes), a
:class:`~core.auth.TokenIssuer` / :class:`~core.auth.TokenVerifier` and the users
file; no I/O framework. Every refusal is a :class:`TokenRefused` carrying the HTTP
status and PROTOCOL.md's JSON error fields; its message never contains a token, a
password or a hash.

Guarantees:

* **Login.** An unknown user and a wrong password get the same 401 body after the
  same work (one scrypt run each, see :meth:`core.users.UserStore.check`). Every
  attempt is reserved against the client's lockout key (``auth.lockout``, shared
  with the WebSocket handshake) before its password is checked, atomically and
  cluster-wide, attempts in flight counting as failures: of N parallel wrong
  guesses at most ``failures`` get 401, the others 429 with ``retry_after``, and
  once the budget is spent even the right password gets 429. At most
  ``max_in_flight`` logins of one address are checked at a time. A banned user
  with the right password gets 403.
* **Token kinds.** An access token is never accepted where a refresh token is
  expected, nor the reverse (``typ`` is checked by the verifier).
* **Families.** Login starts a refresh family (random id, claim ``fam`` in both
  tokens). Refresh spends the presented refresh token atomically through
  :meth:`Backend.family_rotate`: of two concurrent refreshes with one token at
  most one succeeds; presenting a spent token revokes the whole family (its live
  refresh token too) and answers 401.
* **Logout.** The access token's ``jti`` is blacklisted until the verifier would
  stop accepting it anyway (``exp`` + leeway), its refresh family is revoked, and
  every node holding a connection authenticated with it is told to close it with
  4010. A revoked or invalid token gets 401 (and counts as a failure), but a
  locked-out IP may still log out: that only ever removes access.
* Every check fails closed: when the backend cannot answer, 503, never a token.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from dataclasses import dataclass
from typing import Any

from core.auth import AuthError, Claims, JwtSettings, TokenIssuer, TokenType, TokenVerifier
from core.backend.base import (
    AttemptLimits,
    Backend,
    BackendUnavailable,
    NodeCommand,
    NodeOp,
    RotateOutcome,
)
from core.config import LockoutConfig
from core.metrics import Metrics
from core.netaddr import lockout_key
from core.protocol import MAX_TOKEN_CHARS, CloseCode
from core.refusal import Refusal, count_auth_failure
from core.users import MAX_PASSWORD_CHARS, MAX_USERNAME_CHARS, UserStore

__all__ = ["TokenPair", "TokenRefused", "TokenService"]

#: scrypt runs at most this many at a time per node; further logins wait their turn.
_PARALLEL_HASHES = 4
_RETRY_UNAVAILABLE_S = 5.0


class TokenRefused(Refusal):
    """A refused token request: HTTP ``status`` and PROTOCOL.md's JSON error fields."""


def _unavailable() -> TokenRefused:
    return TokenRefused(503, "unavailable", "backend unavailable", _RETRY_UNAVAILABLE_S)


_BAD_CREDENTIALS = "invalid username or password"


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What login and refresh answer."""

    access_token: str
    refresh_token: str
    expires_in: int

    def to_json(self) -> dict[str, Any]:
        """PROTOCOL.md's body: access_token, refresh_token, token_type, expires_in."""
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }


class TokenService:
    """Login, refresh and logout for one node (state lives in the backend)."""

    def __init__(
        self,
        backend: Backend,
        jwt_settings: JwtSettings,
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        users: UserStore | None,
        lockout: LockoutConfig,
        metrics: Metrics,
    ) -> None:
        self._backend = backend
        self._settings = jwt_settings
        self._issuer = issuer
        self._verifier = verifier
        self._users = users
        self._lockout = lockout
        self._metrics = metrics
        self._hashing = asyncio.Semaphore(_PARALLEL_HASHES)
        self._limits = AttemptLimits(
            lockout.failures, lockout.window_s, lockout.block_s, lockout.max_in_flight
        )

    @property
    def login_enabled(self) -> bool:
        """False when no ``auth.users_file`` is configured (``/auth/login`` answers 404)."""
        return self._users is not None

    # -- login -----------------------------------------------------------------

    async def login(self, username: object, password: object, ip: str) -> TokenPair:
        """Check the credentials and start a refresh family."""
        users = self._users
        if users is None:
            raise TokenRefused(
                404, "login_disabled", "login is not enabled on this server (no auth.users_file)"
            )
        if not _bounded_str(username, MAX_USERNAME_CHARS) or not _bounded_str(
            password, MAX_PASSWORD_CHARS
        ):
            raise TokenRefused(
                400, "bad_request", 'body must be {"username": str, "password": str}'
            )
        assert isinstance(username, str) and isinstance(password, str)
        try:
            matched = await self._check_password(users, username, password, ip)
            if not matched:
                self._metrics.auth_failures.labels("bad_password").inc()
                raise TokenRefused(401, "unauthorized", _BAD_CREDENTIALS)
            await self._refuse_banned(username)
            family = secrets.token_urlsafe(18)
            pair, refresh = self._issue_pair(username, family)
            await self._backend.family_start(family, refresh.jti, self._settings.refresh_ttl_s)
        except BackendUnavailable:
            self._metrics.backend_errors.inc()
            raise _unavailable() from None
        return pair

    async def _check_password(
        self, users: UserStore, username: str, password: str, ip: str
    ) -> bool:
        """One scrypt check, reserved against the lockout before it starts.

        The reservation (:meth:`Backend.attempt_begin`) is atomic and cluster-wide, so
        of any number of parallel guesses from one address at most
        ``auth.lockout.failures`` are ever checked before it is blocked, and at most
        ``auth.lockout.max_in_flight`` at a time; the others get 429 without any
        password work. The attempt is settled (a failure counted) whatever happens.
        """
        key = self._key(ip)
        limits = self._limits
        attempt = secrets.token_urlsafe(12)
        wait = await self._backend.attempt_begin(key, attempt, limits)
        if wait > 0:
            raise TokenRefused(429, "locked_out", "too many authentication attempts", wait)
        failed = True
        try:
            async with self._hashing:
                failed = not await asyncio.to_thread(users.check, username, password)
        finally:
            await self._backend.attempt_end(key, attempt, failed, limits)
        return not failed

    # -- refresh ---------------------------------------------------------------

    async def refresh(self, refresh_token: object, ip: str) -> TokenPair:
        """Spend ``refresh_token`` for a new pair of the same family."""
        if not _bounded_str(refresh_token, MAX_TOKEN_CHARS):
            raise TokenRefused(400, "bad_request", 'body must be {"refresh_token": str}')
        assert isinstance(refresh_token, str)
        try:
            await self._refuse_locked_out(ip)
            claims = await self._verify(refresh_token, "refresh", ip)
            family = claims.family
            assert family is not None  # the verifier requires fam in refresh tokens
            await self._refuse_banned(claims.sub)
            pair, new_refresh = self._issue_pair(claims.sub, family)
            outcome = await self._backend.family_rotate(
                family, claims.jti, new_refresh.jti, self._settings.refresh_ttl_s
            )
            if outcome is RotateOutcome.REUSED:
                raise await self._failure(
                    ip, "refresh_reused", "refresh token already used: its family is revoked"
                )
            if outcome is not RotateOutcome.ROTATED:
                raise await self._failure(ip, "revoked", "refresh token revoked or unknown")
        except BackendUnavailable:
            self._metrics.backend_errors.inc()
            raise _unavailable() from None
        return pair

    # -- logout ----------------------------------------------------------------

    async def logout(self, access_token: str | None, ip: str) -> int:
        """Revoke ``access_token`` and its family; returns how many nodes were told to close."""
        if access_token is None:
            raise TokenRefused(401, "unauthorized", "missing Authorization: Bearer access token")
        try:
            # No lockout check here: logging out only ever removes access, and a user
            # sharing an IP with an attacker must still be able to end a session.
            claims = await self._verify(access_token, "access", ip)
            if await self._backend.is_revoked(claims.jti):
                raise await self._failure(ip, "revoked", "invalid token: revoked")
            # Blacklisted for as long as the verifier would still accept the token.
            until_s = claims.exp + math.ceil(self._settings.leeway_s) + 1
            await self._backend.revoke_jti(claims.jti, until_s * 1000)
            if claims.family is not None:
                await self._backend.family_revoke(claims.family)
            return await self._backend.command_user(
                claims.sub,
                NodeCommand(NodeOp.CLOSE_JTI, int(CloseCode.KICKED), "logged out", jti=claims.jti),
            )
        except BackendUnavailable:
            self._metrics.backend_errors.inc()
            raise _unavailable() from None

    # -- helpers ---------------------------------------------------------------

    def _issue_pair(self, sub: str, family: str) -> tuple[TokenPair, Claims]:
        try:
            refresh, refresh_claims = self._issuer.issue_refresh(sub, family)
            access, _ = self._issuer.issue_access(sub, family=family)
        except AuthError:  # no signing key: this node only verifies tokens
            raise TokenRefused(
                404, "issuing_disabled", "this server has no key to issue tokens"
            ) from None
        return TokenPair(access, refresh, self._settings.access_ttl_s), refresh_claims

    async def _verify(self, token: str, kind: TokenType, ip: str) -> Claims:
        try:
            return self._verifier.verify(token, kind)
        except AuthError as e:
            raise await self._failure(ip, e.reason, f"invalid token: {e.reason}") from None

    def _key(self, ip: str) -> str:
        return lockout_key(ip, self._lockout.ipv6_prefix)

    async def _refuse_locked_out(self, ip: str) -> None:
        remaining = await self._backend.lockout_remaining(self._key(ip))
        if remaining > 0:
            raise TokenRefused(429, "locked_out", "too many authentication failures", remaining)

    async def _refuse_banned(self, uid: str) -> None:
        if await self._backend.is_banned(uid):
            self._metrics.auth_failures.labels("banned").inc()
            raise TokenRefused(403, "banned", "user is banned")

    async def _failure(self, ip: str, reason: str, message: str) -> TokenRefused:
        """Count a failure against ``ip`` and return the 401 to raise."""
        await count_auth_failure(self._backend, self._metrics, self._lockout, ip, reason)
        return TokenRefused(401, "unauthorized", message)


def _bounded_str(value: object, max_chars: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= max_chars
