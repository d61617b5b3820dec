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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from core.clock import Clock
from core.hooks.breaker import CircuitBreaker
from core.hooks.contract import ALLOW, HOOK_NAMES, Answer, HookFailed, HookName, Refuse, Request

__all__ = ["HookCall", "HookPolicy", "Hooks"]

log = logging.getLogger("squall.hooks")
_T = TypeVar("_T")


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
    #: pub over HTTP: one request per batch (``call_many``)
    batch: bool = False


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
        answer = await self._guarded(hook, lambda: self._attempts(hook, request), 1)
        if answer is None:
            return ALLOW[name]
        self._count(name, "refuse" if isinstance(answer, Refuse) else "allow")
        return answer

    async def call_many(
        self, name: HookName, requests: Sequence[Request]
    ) -> list[Answer | HookFailed]:
        """Ask about several requests; one result per request, in order.

        With ``batch`` (HTTP pub hook) they go in one request under one timeout, one
        slot and one breaker decision; otherwise they are asked concurrently (bounded
        by ``max_concurrency``). A failure is the :class:`HookFailed` in its place
        (fail-closed) or the allow answer (fail-open).
        """
        hook = self._hooks.get(name)
        if hook is None:
            return [ALLOW[name]] * len(requests)
        batcher = getattr(hook.call, "call_batch", None) if hook.policy.batch else None
        if batcher is None or len(requests) < 2:
            results = await asyncio.gather(
                *(self.call(name, r) for r in requests), return_exceptions=True
            )
            out: list[Answer | HookFailed] = []
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, HookFailed):
                    raise r
                out.append(r)
            return out

        async def batch() -> list[Answer]:
            async with hook.slots:
                answers: list[Answer] = await batcher(requests)
                return answers

        try:
            answers = await self._guarded(hook, batch, len(requests))
        except HookFailed as e:
            return [e] * len(requests)
        if answers is None:
            return [ALLOW[name]] * len(requests)
        for a in answers:
            self._count(name, "refuse" if isinstance(a, Refuse) else "allow")
        return list(answers)

    async def _guarded(
        self, hook: _Hook, attempt: Callable[[], Awaitable[_T]], count: int
    ) -> _T | None:
        """Breaker, timeout and fail mode around ``attempt``; None = failed open."""
        name = hook.name
        try:
            if not hook.breaker.allow():
                raise HookFailed("circuit_open", f"hook {name}: circuit open")
            try:
                result = await asyncio.wait_for(attempt(), hook.policy.timeout_s)
            except TimeoutError:
                hook.breaker.failure()
                raise HookFailed("timeout", f"hook {name}: no answer in time") from None
            except HookFailed:
                hook.breaker.failure()
                raise
            hook.breaker.success()
            return result
        except HookFailed as e:
            log.warning("%s (%s)", e, "fail-open" if hook.policy.fail_open else "fail-closed")
            outcome = "failed_open" if hook.policy.fail_open else "failed_closed"
            for _ in range(count):
                self._count(name, outcome)
            if hook.policy.fail_open:
                return None
            raise

    async def _attempts(self, hook: _Hook, request: Request) -> Answer:
        async with hook.slots:
            attempt = 0
            while True:
                try:
                    return await hook.call(request)
                except HookFailed as e:
                    retryable = e.reason in ("unreachable", "retryable_status")
                    if attempt >= hook.retries or not retryable:
                        raise
                    attempt += 1
                    await asyncio.sleep(0.01 * attempt)

    def _count(self, name: HookName, outcome: str) -> None:
        if self._observe is not None:
            self._observe(name, outcome)

    async def close(self) -> None:
        if self._close is not None:
            await self._close()
