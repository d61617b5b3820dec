"""Cluster stats: every node writes a small record of itself to the backend.

:class:`StatsReporter` rewrites the node's record every ``interval_s`` with a TTL of
:data:`TTL_INTERVALS` intervals (:meth:`~core.backend.base.Backend.put_node_stats`);
``GET /api/stats`` on any node reads every live record
(:meth:`~core.backend.base.Backend.node_stats`) and :func:`totals` sums them.

Guarantees:

* While the reporter runs, the node's record is at most one interval (plus one
  backend round trip) old; a node that dies vanishes from every node's view within
  ``TTL_INTERVALS x interval_s``; :meth:`StatsReporter.stop` removes it at once
  (best effort: when the backend is down it expires instead).
* A failed write (backend down) is logged once per outage and retried at the next
  tick; the reporter never stops because of it. Writes are never cancelled midway:
  :meth:`StatsReporter.stop` waits for the one in flight.
* Counters in the record (frames, handshakes, closes, auth failures) are cumulative
  since the node started, as in ``/metrics``; a reader derives rates from two
  records and their ``ts``. ``backend_rtt_ms`` is the round trip of the previous
  write (``None`` before it), also exported as ``squall_backend_rtt_seconds``.

Record fields: ``node``, ``version``, ``ts`` and ``started_at`` (Unix ms),
``uptime_s``, ``interval_s``, ``ready``, ``draining``, ``backend`` (reachable),
``connections``, ``max_connections``, ``users``, ``rooms``, ``frames_in``,
``frames_out``, ``handshakes`` (by HTTP status), ``closes`` (by close code),
``auth_failures`` (by reason), ``backend_rtt_ms``, ``oldest_connection_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import Counter

from core import __version__
from core.backend.base import BackendUnavailable, NodeStats

if TYPE_CHECKING:
    from core.node import Node

__all__ = ["TTL_INTERVALS", "StatsReporter", "snapshot", "totals"]

log = logging.getLogger("squall.stats")

#: A record lives this many intervals without a rewrite.
TTL_INTERVALS: Final = 3

#: Fields of a record summed into the cluster totals (maps are summed per key).
_SUMMED: Final = (
    "connections",
    "max_connections",
    "users",
    "rooms",
    "frames_in",
    "frames_out",
    "handshakes",
    "closes",
    "auth_failures",
)


def _counts(counter: Counter) -> dict[str, int]:
    """A labelled counter's totals by its (single) label value."""
    out: dict[str, int] = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = next(iter(sample.labels.values()), "")
                out[key] = out.get(key, 0) + int(sample.value)
    return out


def snapshot(node: Node, started_at_ms: int, rtt_ms: float | None, interval_s: float) -> NodeStats:
    """The stats record of ``node`` now (without ``node``: the backend sets it)."""
    m = node.metrics
    now_ms = node.now_ms()
    first = node.hub.first()
    oldest_s = max(0.0, (now_ms - first.connected_at) / 1000) if first is not None else 0.0
    available = node.backend.available
    return {
        "version": __version__,
        "ts": now_ms,
        "started_at": started_at_ms,
        "uptime_s": round((now_ms - started_at_ms) / 1000, 3),
        "interval_s": interval_s,
        "ready": available and not node.draining,
        "draining": node.draining,
        "backend": available,
        "connections": len(node.hub),
        "max_connections": node.settings.limits.max_connections,
        "users": node.hub.user_count(),
        "rooms": node.hub.room_count(),
        "frames_in": sum(_counts(m.frames_in).values()),
        "frames_out": sum(_counts(m.frames_out).values()),
        "handshakes": _counts(m.handshakes),
        "closes": _counts(m.closes),
        "auth_failures": _counts(m.auth_failures),
        "backend_rtt_ms": None if rtt_ms is None else round(rtt_ms, 3),
        "oldest_connection_s": round(oldest_s, 3),
    }


def totals(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The cluster totals of ``records``: sums (maps summed per key), ``nodes`` (how
    many), ``ready`` (how many ready), and the worst ``backend_rtt_ms``."""
    out: dict[str, Any] = {"nodes": 0, "ready": 0, "backend_rtt_ms": None}
    for key in _SUMMED:
        out[key] = {} if key in ("handshakes", "closes", "auth_failures") else 0
    for record in records:
        out["nodes"] += 1
        out["ready"] += 1 if record.get("ready") else 0
        rtt = record.get("backend_rtt_ms")
        worst = out["backend_rtt_ms"]
        if isinstance(rtt, int | float) and (worst is None or rtt > worst):
            out["backend_rtt_ms"] = rtt
        for key in _SUMMED:
            value = record.get(key)
            if isinstance(out[key], dict) and isinstance(value, Mapping):
                for label, n in value.items():
                    if isinstance(n, int | float):
                        out[key][label] = out[key].get(label, 0) + n
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out[key] += value
    return out


class StatsReporter:
    """Writes ``node``'s stats record every ``interval_s`` while started."""

    def __init__(self, node: Node, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.node = node
        self.interval_s = interval_s
        self.writes = 0
        self._rtt_ms: float | None = None
        self._started_at_ms = node.now_ms()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        node.metrics.max_connections.set(node.settings.limits.max_connections)

    @property
    def ttl_s(self) -> float:
        return TTL_INTERVALS * self.interval_s

    def start(self) -> None:
        """Start writing (the first write right away). Idempotent."""
        if self._task is None:
            self._started_at_ms = self.node.now_ms()
            self._stop.clear()
            self._task = asyncio.ensure_future(self._run())

    async def stop(self, drop: bool = True) -> None:
        """Stop writing after the write in flight, then remove the record (``drop``
        False leaves it to expire, as a node that died would)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        await task
        if drop:
            with contextlib.suppress(BackendUnavailable):
                await self.node.backend.drop_node_stats()

    async def report(self) -> None:
        """Write the record once; updates the RTT and oldest-connection gauges."""
        node = self.node
        record = snapshot(node, self._started_at_ms, self._rtt_ms, self.interval_s)
        node.metrics.oldest_connection.set(record["oldest_connection_s"])
        start = node.clock.monotonic()
        await node.backend.put_node_stats(record, self.ttl_s)
        self._rtt_ms = (node.clock.monotonic() - start) * 1000
        node.metrics.backend_rtt.set(self._rtt_ms / 1000)
        self.writes += 1

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.report()
            except BackendUnavailable as e:
                if not self._failing:
                    log.warning("stats record not written: %s", e)
                self._failing = True
            except Exception:
                # a bug: make it visible, keep the node's other work going
                log.exception("stats record failed")
            else:
                if self._failing:
                    log.info("stats record written again")
                self._failing = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
