"""Application hooks (issue 14, ``docs/hooks.md``): the application decides.

:mod:`core.hooks.contract` is the typed contract; :mod:`core.hooks.runner` the policy
around each call (timeout, concurrency, retries, circuit breaker, fail mode);
:mod:`core.hooks.http_hooks` and :mod:`core.hooks.python_hooks` the two ways to reach
the application. :func:`core.hooks.build.build_hooks` builds a node's hooks from its settings.
"""
