"""The node's hooks: which are configured, and the policy around every call.

For each configured hook, :meth:`Hooks.call` applies, in order: the circuit breaker
(open: fail at once), bounded concurrency (``hooks.max_concurrency`` calls in flight
per hook on this node; waiting counts toward the timeout), the hook's ``timeout_s``
over all attempts, and retries (``hooks.retries`` more attempts, only for
``connect``, ``refresh`` and ``join`` over HTTP, and only after a connection failure
or a 502/503/504).

Guarantees of :meth:`Hooks.call`: it returns the application's answer (allow or
:class:`Refuse`); when the application failed (timeout, down, circuit open, bad
answer) it returns the hook's allow answer if the hook is configured fail-open, and
raises :class:`HookFailed` if fail-closed. It never raises anything else. Every
failure counts toward the breaker; every answer (a refusal too) closes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from core.clock import Clock
from core.hooks.breaker import CircuitBreaker
from core.hooks.contract import ALLOW, HOOK_NAMES, Answer, HookFailed, HookName, Refuse, Request

__all__ = ["HookCall", "HookPolicy", "Hooks"]

log = logging.getLogger("squall.hooks")


class HookCall(Protocol):
    """One hook's transport: an HTTP endpoint or a module function."""

    retry_safe: bool

    def __call__(self, request: Request) -> Awaitable[Answer]: ...


@dataclass(frozen=True, slots=True)
class HookPolicy:
    timeout_s: float = 1.0
    fail_open: bool = False
    max_concurrency: int = 64
    retries: int = 1
    breaker_failures: int = 5
    breaker_reset_s: float = 5.0


class _Hook:
    def __init__(self, name: HookName, call: HookCall, policy: HookPolicy, clock: Clock):
        self.name = name
        self.call = call
        self.policy = policy
        self.breaker = CircuitBreaker(policy.breaker_failures, policy.breaker_reset_s, clock)
        self.slots = asyncio.Semaphore(policy.max_concurrency)
        self.retries = policy.retries if call.retry_safe else 0


#: called with (hook, outcome) after every call: ``allow``, ``refuse``, ``failed_open``,
#: ``failed_closed``; the node counts them in metrics
Observer = Callable[[HookName, str], None]


class Hooks:
    """The configured hooks of one node (none configured: every call is skipped)."""

    def __init__(
        self,
        calls: Mapping[HookName, HookCall],
        policies: Mapping[HookName, HookPolicy],
        clock: Clock,
        observe: Observer | None = None,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._hooks = {
            name: _Hook(name, call, policies.get(name, HookPolicy()), clock)
            for name, call in calls.items()
        }
        self._observe = observe
        self._close = close

    def enabled(self, name: HookName) -> bool:
        return name in self._hooks

    def breaker_state(self, name: HookName) -> str:
        return self._hooks[name].breaker.state

    @property
    def names(self) -> tuple[HookName, ...]:
        return tuple(n for n in HOOK_NAMES if n in self._hooks)

    async def call(self, name: HookName, request: Request) -> Answer:
        """Ask the application (see the module docstring for the guarantees)."""
        hook = self._hooks.get(name)
        if hook is None:
            return ALLOW[name]
        try:
            if not hook.breaker.allow():
                raise HookFailed("circuit_open", f"hook {name}: circuit open")
            try:
                answer = await asyncio.wait_for(
                    self._attempts(hook, request), hook.policy.timeout_s
                )
            except TimeoutError:
                hook.breaker.failure()
                raise HookFailed("timeout", f"hook {name}: no answer in time") from None
            except HookFailed:
                hook.breaker.failure()
                raise
            hook.breaker.success()
        except HookFailed as e:
            log.warning("%s (%s)", e, "fail-open" if hook.policy.fail_open else "fail-closed")
            if hook.policy.fail_open:
                self._count(name, "failed_open")
                return ALLOW[name]
            self._count(name, "failed_closed")
            raise
        self._count(name, "refuse" if isinstance(answer, Refuse) else "allow")
        return answer

    async def _attempts(self, hook: _Hook, request: Request) -> Answer:
        async with hook.slots:
            attempt = 0
            while True:
                try:
                    return await hook.call(request)
                except HookFailed as e:
                    if attempt >= hook.retries or e.reason not in (
                        "unreachable",
                        "retryable_status",
                    ):
                        raise
                    attempt += 1
                    await asyncio.sleep(0.01 * attempt)

    def _count(self, name: HookName, outcome: str) -> None:
        if self._observe is not None:
            self._observe(name, outcome)

    async def close(self) -> None:
        if self._close is not None:
            await self._close()
