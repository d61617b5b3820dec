"""Room namespaces: per room-name pattern, its own history, presence, publish and join rules.

Configured as ``rooms.namespaces``, a list of mappings, first match wins::

    rooms:
      namespaces:
        - pattern: "chat:*"        # fnmatch pattern of room names (required)
          history_size: 500        # default: rooms.history_size
          history_ttl_s: 86400     # default: rooms.history_ttl_s
          presence: true           # the presence query answers (false: 403)
          presence_events: false   # join/leave events; default: rooms.presence_events
          publish: members         # members | server (server API only) | nobody
          join: claim              # claim (the token's rooms) | hook | token
          recovery: true           # join with since/epoch recovers history

Rooms no pattern matches keep ``rooms.*``: history, events as configured, presence
on, members publish, ``join: claim``, recovery on.

Guarantees: :func:`parse_namespaces` accepts exactly the keys above with their types
and ranges and raises ``ValueError`` naming the item and key otherwise;
:meth:`RoomRules.of` is a pure function of the room name (cached, bounded).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

if TYPE_CHECKING:
    from core.config import RoomsConfig

__all__ = ["JoinRule", "Namespace", "PublishRule", "RoomPolicy", "RoomRules", "parse_namespaces"]

PublishRule = Literal["members", "server", "nobody"]
JoinRule = Literal["claim", "hook", "token"]


@dataclass(frozen=True, slots=True)
class Namespace:
    """One configured namespace; ``None`` fields inherit ``rooms.*``."""

    pattern: str
    history_size: int | None = None
    history_ttl_s: int | None = None
    presence: bool = True
    presence_events: bool | None = None
    publish: PublishRule = "members"
    join: JoinRule = "claim"
    recovery: bool = True


@dataclass(frozen=True, slots=True)
class RoomPolicy:
    """The rules of one room, every field resolved."""

    history_size: int
    history_ttl_s: int
    presence: bool
    presence_events: bool
    publish: PublishRule
    join: JoinRule
    recovery: bool
    namespace: str | None


_BOOLS: Final = ("presence", "presence_events", "recovery")
_INTS: Final = {"history_size": 0, "history_ttl_s": 1}
_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "publish": get_args(PublishRule),
    "join": get_args(JoinRule),
}
_KEYS: Final = ("pattern", *_BOOLS, *_INTS, *_CHOICES)


def parse_namespaces(value: object) -> tuple[Namespace, ...]:
    """The namespaces of a raw ``rooms.namespaces`` value; ``ValueError`` names the problem."""
    if not isinstance(value, list | tuple):
        raise ValueError("expected a list of mappings")
    out: list[Namespace] = []
    seen: set[str] = set()
    for index, item in enumerate(value):
        out.append(_parse_one(index, item))
        if out[-1].pattern in seen:
            raise ValueError(f"item {index}: pattern {out[-1].pattern!r} is listed twice")
        seen.add(out[-1].pattern)
    return tuple(out)


def _parse_one(index: int, item: object) -> Namespace:
    where = f"item {index}"
    if isinstance(item, Namespace):
        return item
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: expected a mapping")
    for key in item:
        if key not in _KEYS:
            raise ValueError(f"{where}: unknown key {key!r}; known: {', '.join(_KEYS)}")
    pattern = item.get("pattern")
    if not isinstance(pattern, str) or not pattern or len(pattern.encode()) > 128:
        raise ValueError(f"{where}.pattern: required, 1 to 128 bytes")
    kwargs: dict[str, Any] = {"pattern": pattern}
    for key in _BOOLS:
        if key in item:
            if not isinstance(item[key], bool):
                raise ValueError(f"{where}.{key}: expected true or false")
            kwargs[key] = item[key]
    for key, low in _INTS.items():
        if key in item:
            v = item[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{where}.{key}: expected an integer >= {low}")
            kwargs[key] = v
    for key, choices in _CHOICES.items():
        if key in item:
            if item[key] not in choices:
                raise ValueError(f"{where}.{key}: expected one of {', '.join(choices)}")
            kwargs[key] = item[key]
    return Namespace(**kwargs)


class RoomRules:
    """Resolves the policy of a room name against the namespaces, first match wins."""

    def __init__(self, rooms: RoomsConfig) -> None:
        self._namespaces = rooms.namespaces
        self._default = RoomPolicy(
            rooms.history_size,
            rooms.history_ttl_s,
            True,
            rooms.presence_events,
            "members",
            "claim",
            True,
            None,
        )
        self._resolved = [self._resolve(ns) for ns in rooms.namespaces]
        self.of = lru_cache(maxsize=4096)(self._of)

    def _resolve(self, ns: Namespace) -> RoomPolicy:
        d = self._default
        return RoomPolicy(
            d.history_size if ns.history_size is None else ns.history_size,
            d.history_ttl_s if ns.history_ttl_s is None else ns.history_ttl_s,
            ns.presence,
            d.presence_events if ns.presence_events is None else ns.presence_events,
            ns.publish,
            ns.join,
            ns.recovery,
            ns.pattern,
        )

    def _of(self, room: str) -> RoomPolicy:
        for ns, policy in zip(self._namespaces, self._resolved, strict=True):
            if fnmatch.fnmatchcase(room, ns.pattern):
                return policy
        return self._default

    def history(self, room: str) -> tuple[int, int]:
        """``(history_size, history_ttl_s)`` of ``room`` (for the backend)."""
        policy = self.of(room)
        return policy.history_size, policy.history_ttl_s

    @property
    def any_join(self) -> frozenset[str]:
        """The join rules some namespace uses."""
        return frozenset(p.join for p in self._resolved)


@lru_cache(maxsize=8)
def rules_for(rooms: RoomsConfig) -> RoomRules:
    """The (shared) rules of one ``rooms`` section."""
    return RoomRules(rooms)
