"""Building a node's hooks from its settings."""

from __future__ import annotations

from core.clock import Clock
from core.config import Settings
from core.hooks.contract import HOOK_NAMES, HookName
from core.hooks.http_hooks import HttpHook
from core.hooks.http_pool import HttpPool
from core.hooks.python_hooks import load_module_hooks
from core.hooks.runner import HookCall, HookPolicy, Hooks, Observer

__all__ = ["build_hooks"]


def build_hooks(settings: Settings, clock: Clock, observe: Observer | None = None) -> Hooks:
    """The hooks ``settings.hooks`` configures: a hook's ``url`` wins over the module's
    function of the same name. The module was checked by the configuration's validation.
    """
    conf = settings.hooks
    module_hooks = load_module_hooks(conf.module) if conf.module is not None else {}
    pool = HttpPool(max_connections=conf.max_concurrency)
    calls: dict[HookName, HookCall] = {}
    policies: dict[HookName, HookPolicy] = {}
    for name in HOOK_NAMES:
        hook = getattr(conf, name)
        if hook.url is not None:
            assert settings.api.secret is not None  # checked by the configuration
            calls[name] = HttpHook(name, hook.url, settings.api.secret, pool, clock)
        elif name in module_hooks:
            calls[name] = module_hooks[name]
        else:
            continue
        policies[name] = HookPolicy(
            timeout_s=hook.timeout_s,
            fail_open=hook.fail == "open",
            max_concurrency=conf.max_concurrency,
            retries=conf.retries,
            breaker_failures=conf.breaker_failures,
            breaker_reset_s=conf.breaker_reset_s,
            batch=hook.batch and hook.url is not None,
        )
    return Hooks(calls, policies, clock, observe, pool.close)
