"""The Redis backend's command side: building the pooled client, and running commands.

:func:`make_client` turns a Squall Redis URL and its TLS options into one
``redis.asyncio`` client; :class:`CommandClient` runs every command of
:class:`~core.backend.redis.RedisBackend` on it.

Guarantees:

* :func:`make_client` accepts ``redis://``, ``rediss://`` (TLS, with the ``ssl_*``
  options), ``redis+cluster://`` and ``rediss+cluster://``, and raises ``ValueError``
  (the URL shown by :func:`mask_url`) for anything else or for ``ssl_*`` options
  without TLS. It connects nothing. The client is bounded (``max_connections``),
  speaks RESP2, has socket timeouts and *no* client-side retries: a retried
  ``publish`` whose first attempt did reach Redis would publish twice.
* :class:`CommandClient` bounds in-flight commands to ``max_connections`` (the
  cluster client's pools raise instead of waiting), and every Redis error, socket
  error or timeout of a command, including waiting longer than ``timeout_s`` for a
  free slot, surfaces as :class:`~core.backend.base.BackendUnavailable`; a Redis
  error reply (not a network blip) is also logged at ERROR on
  ``squall.backend.redis``.
* Scripts run by ``EVALSHA``; after a NOSCRIPT (Redis restarted, ``SCRIPT FLUSH``)
  they run once by ``EVAL``, which caches them again.
* :func:`mask_url` never lets a password through.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, ResponseError

from core.backend import redis_scripts as lua
from core.backend.base import BackendUnavailable
from core.backend.redis_pubsub import FAILURES, describe

__all__ = ["CommandClient", "client_name", "expiry_ms", "make_client", "mask_url"]

log = logging.getLogger("squall.backend.redis")

#: scheme -> (cluster?, scheme redis-py understands)
_SCHEMES = {
    "redis": (False, "redis"),
    "rediss": (False, "rediss"),
    "redis+cluster": (True, "redis"),
    "rediss+cluster": (True, "rediss"),
}


def mask_url(url: str) -> str:
    """``url`` with any password (userinfo or ``?password=``) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    query = urlencode(
        [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)], safe="*"
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def expiry_ms(seconds: float) -> int:
    """A positive millisecond duration (Redis refuses a zero or negative expiry)."""
    return max(1, math.ceil(seconds * 1000))


def client_name(node_id: str, role: str) -> str:
    """``squall:<node_id>:<role>`` for ``CLIENT SETNAME`` (which refuses spaces and
    control characters: those become ``_``)."""
    safe = "".join(c if "!" <= c <= "~" else "_" for c in node_id)
    return f"squall:{safe}:{role}"


def make_client(
    url: str,
    node_id: str,
    *,
    ssl_ca_file: str | None,
    ssl_cert_file: str | None,
    ssl_key_file: str | None,
    ssl_cert_reqs: str,
    socket_timeout_s: float,
    max_connections: int,
) -> tuple[Redis | RedisCluster, bool]:
    """The command client for ``url`` and whether it is a cluster client.

    Raises ``ValueError`` for an unsupported scheme or ``ssl_*`` options without TLS.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"unsupported Redis URL scheme {scheme!r} in {mask_url(url)}")
    cluster, plain_scheme = _SCHEMES[scheme]
    tls_files = (ssl_ca_file, ssl_cert_file, ssl_key_file)
    if plain_scheme == "redis" and any(f is not None for f in tls_files):
        raise ValueError("ssl_* options need a rediss:// URL")
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": socket_timeout_s,
        "health_check_interval": 10,
        # No retries: a command that reached Redis must not be sent twice.
        "retry": Retry(NoBackoff(), 0),
        "client_name": client_name(node_id, "cmd"),
        # RESP2: works with any Redis >= 2.6 server and keeps pub/sub messages
        # ordinary replies on the subscriber connection (RESP3 makes them pushes).
        "protocol": 2,
    }
    if plain_scheme == "rediss":
        kwargs.update(
            ssl_ca_certs=ssl_ca_file,
            ssl_certfile=ssl_cert_file,
            ssl_keyfile=ssl_key_file,
            ssl_cert_reqs=ssl_cert_reqs,
        )
    plain_url = plain_scheme + url[len(scheme) :]
    if cluster:
        return RedisCluster.from_url(plain_url, max_connections=max_connections, **kwargs), True
    pool = BlockingConnectionPool.from_url(
        plain_url, max_connections=max_connections, timeout=socket_timeout_s, **kwargs
    )
    return Redis.from_pool(pool), False


class CommandClient:
    """Runs commands on ``client``; see the module docstring.

    ``scripts``: the scripts beyond the module-level ones of
    :mod:`core.backend.redis_scripts` that :meth:`load_scripts` loads.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        scripts: Sequence[lua.Script],
        max_connections: int,
        timeout_s: float,
    ) -> None:
        self.client = client
        self._extra_scripts = tuple(scripts)
        self._inflight = asyncio.Semaphore(max_connections)
        self._timeout_s = timeout_s

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of ``max_connections`` command slots.

        The cluster client's per-node pools raise instead of waiting when exhausted,
        so in-flight commands are bounded here; a slot not free within
        ``timeout_s`` is a failure like any other.
        """
        if self._inflight.locked():
            try:
                await asyncio.wait_for(self._inflight.acquire(), self._timeout_s)
            except TimeoutError:
                raise ConnectionError(f"no free Redis connection for {self._timeout_s} s") from None
        else:
            await self._inflight.acquire()  # free: returns at once
        try:
            yield
        finally:
            self._inflight.release()

    @contextmanager
    def unavailable(self, what: str) -> Iterator[None]:
        """Every Redis, socket or timeout failure becomes :class:`BackendUnavailable`."""
        try:
            yield
        except FAILURES as exc:
            if isinstance(exc, ResponseError):
                # Redis answered with an error (a script bug, a foreign key of the wrong
                # type, OOM, READONLY...): not a network blip, so say it loudly here.
                log.error("redis refused %s: %s", what, describe(exc))
            raise BackendUnavailable(f"{what}: {describe(exc)}") from exc

    @asynccontextmanager
    async def guard(self, what: str) -> AsyncIterator[None]:
        """A command slot (never nested: that could deadlock) and :meth:`unavailable`."""
        with self.unavailable(what):
            async with self.slot():
                yield

    async def load_scripts(self) -> None:
        """``SCRIPT LOAD`` every script (the caller converts failures)."""
        scripts = [s for s in vars(lua).values() if isinstance(s, lua.Script)]
        scripts += self._extra_scripts
        for script in scripts:
            await self.client.script_load(script.source)

    async def eval(self, script: lua.Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run ``script`` (``EVALSHA``, ``EVAL`` after a NOSCRIPT) in a guarded slot."""
        async with self.guard(script.name):
            try:
                return await self.client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                # Redis restarted or SCRIPT FLUSH: EVAL runs it and caches it again.
                return await self.client.eval(script.source, len(keys), *keys, *args)

    async def pipeline(self, what: str, build: Callable[[Any], None]) -> list[Any]:
        """Run the commands ``build`` queues in one round trip (no MULTI).

        Commands queued here must be idempotent: after a NOSCRIPT the scripts are
        loaded and the whole pipeline runs once more. Any error reply raises
        :class:`BackendUnavailable`.
        """
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            build(pipe)
            async with self.guard(what):
                results: list[Any] = await pipe.execute(raise_on_error=False)
            errors = [r for r in results if isinstance(r, Exception)]
            if attempt == 1 and any(isinstance(e, NoScriptError) for e in errors):
                async with self.guard(what):
                    await self.load_scripts()
                continue
            if errors:
                raise BackendUnavailable(f"{what}: {describe(errors[0])}") from errors[0]
            return results
        raise AssertionError("unreachable")

    async def eval_many(
        self, what: str, calls: Sequence[tuple[lua.Script, Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        """Run scripts in one round trip (no MULTI), in order; one result per call.

        A result is the script's reply, or the :class:`BackendUnavailable` of that
        call alone (Redis answered it with an error). After a NOSCRIPT (Redis restarted,
        ``SCRIPT FLUSH``) the calls that got it, and only those, were not run: they run
        once more, in order, by ``EVAL``. A network failure raises
        :class:`BackendUnavailable` for the whole call (outcome unknown, as for
        :meth:`eval`).
        """
        pipe = self.client.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        async with self.guard(what):
            results: list[Any] = await pipe.execute(raise_on_error=False)
        again = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if again:
            pipe = self.client.pipeline(transaction=False)
            for i in again:
                script, keys, args = calls[i]
                pipe.eval(script.source, len(keys), *keys, *args)
            async with self.guard(what):
                rerun: list[Any] = await pipe.execute(raise_on_error=False)
            for i, r in zip(again, rerun, strict=True):
                results[i] = r
        for i, r in enumerate(results):
            if isinstance(r, Exception):
                log.error("redis refused %s: %s", what, describe(r))
                results[i] = BackendUnavailable(f"{what}: {describe(r)}")
        return results

    async def publish(self, channel: bytes, payload: bytes) -> None:
        """PUBLISH (SPUBLISH on a cluster); the caller holds a slot."""
        if isinstance(self.client, RedisCluster):
            await self.client.execute_command("SPUBLISH", channel, payload)
        else:
            await self.client.publish(channel, payload)
