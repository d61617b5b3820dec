"""In-process hooks: async functions of an application module (``hooks.module``).

The module defines any of ``connect``, ``refresh``, ``join``, ``pub``, ``send``,
``rpc``: ``async def pub(request: PubRequest) -> PubAnswer | Refuse``. A function the
module does not define is a hook that is not configured.

Guarantees: :func:`load_module_hooks` imports the module once and refuses (with
``ValueError`` naming the function) a hook name bound to something that is not an
``async def``; a call that raises, or returns anything but the hook's answer types,
raises :class:`HookFailed` (the exception's text is not passed on to the client).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from core.hooks.contract import HOOK_NAMES, Answer, HookFailed, HookName, Request, answer_types

__all__ = ["ModuleHook", "load_module_hooks"]

log = logging.getLogger("squall.hooks")


class ModuleHook:
    """One hook function of the application's module."""

    retry_safe = False  # in-process: a failure is not a transient network error

    def __init__(self, name: HookName, fn: Callable[[Any], Awaitable[Any]]) -> None:
        self.name = name
        self._fn = fn

    async def __call__(self, request: Request) -> Answer:
        try:
            answer = await self._fn(request)
        except Exception as e:
            log.warning("hook %s raised %s: %s", self.name, type(e).__name__, e)
            raise HookFailed("error", f"hook {self.name} raised {type(e).__name__}") from None
        if not isinstance(answer, answer_types(self.name)):
            raise HookFailed("bad_answer", f"hook {self.name} returned {type(answer).__name__}")
        result: Answer = answer
        return result


def load_module_hooks(module_name: str) -> dict[HookName, ModuleHook]:
    """Import ``module_name`` and return its hook functions by name.

    Raises ``ImportError`` when it cannot be imported, ``ValueError`` when a hook name
    is bound to something that is not an ``async def``.
    """
    module = importlib.import_module(module_name)
    hooks: dict[HookName, ModuleHook] = {}
    for name in HOOK_NAMES:
        fn = getattr(module, name, None)
        if fn is None:
            continue
        if not inspect.iscoroutinefunction(fn):
            raise ValueError(f"{module_name}.{name} must be an async function")
        hooks[name] = ModuleHook(name, fn)
    return hooks
