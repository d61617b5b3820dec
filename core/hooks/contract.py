"""The hook contract: what Squall asks the application, and what it may answer.

One typed contract for both ways of running hooks (in-process Python functions and
HTTP endpoints of the application, see ``docs/hooks.md``). Each hook has a request
type and an answer type; every hook may instead answer :class:`Refuse`.

Guarantees:

* requests carry only JSON values (``data`` is the client's value as
  :func:`core.protocol.msgpack_to_json_value` gives it), so the same request is
  passed to a Python function and POSTed as JSON;
* :func:`answer_from_json` accepts exactly the fields documented for each hook and
  raises :class:`HookFailed` on anything else, so a malformed answer counts as a
  failure of the application (and follows the hook's fail-open / fail-closed choice),
  never as an allow;
* a refusal's ``code`` is one of the ``err`` codes (400, 403, 404, 409, 413, 429);
  its ``message`` reaches the client (``err`` ``reason``, or the handshake refusal).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, TypeAlias

__all__ = [
    "ALLOW",
    "HOOK_NAMES",
    "MAX_MESSAGE_CHARS",
    "REFUSE_CODES",
    "UNCHANGED",
    "Answer",
    "ConnectAnswer",
    "ConnectRequest",
    "HookFailed",
    "HookName",
    "JoinAnswer",
    "JoinRequest",
    "PubAnswer",
    "PubRequest",
    "RefreshAnswer",
    "RefreshRequest",
    "Refuse",
    "Request",
    "RpcAnswer",
    "RpcRequest",
    "SendAnswer",
    "SendRequest",
    "answer_from_json",
    "answer_types",
    "request_to_json",
]

HookName = Literal["connect", "refresh", "join", "pub", "send", "rpc"]
HOOK_NAMES: Final[tuple[HookName, ...]] = ("connect", "refresh", "join", "pub", "send", "rpc")
#: the codes a refusal may carry (the ``err`` codes a client already knows)
REFUSE_CODES: Final = frozenset({400, 403, 404, 409, 413, 429})
#: largest ``message`` of a refusal, in characters (longer ones are cut)
MAX_MESSAGE_CHARS: Final = 256


class HookFailed(Exception):
    """The application did not answer usably: timeout, down, circuit open, bad answer.

    ``reason`` is a short machine string (``timeout``, ``unreachable``, ``status``,
    ``bad_answer``, ``circuit_open``, ``error``); the message never holds a secret.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Unchanged:
    """The sentinel of "keep the client's data" (``None`` is a valid new value)."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"


#: ``data`` of a :class:`PubAnswer` / :class:`SendAnswer` that rewrites nothing
UNCHANGED: Final = _Unchanged()


# -- requests ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """A token was verified; the connection is not admitted yet."""

    uid: str
    conn: str
    ip: str
    node: str
    role: str | None = None
    rooms_auto: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RefreshRequest:
    """A connection presented a new valid token for the same user (``refresh`` frame)."""

    uid: str
    conn: str
    exp: int
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A ``join`` that passed the token's ``rooms`` claim (or the room token)."""

    uid: str
    conn: str
    room: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PubRequest:
    """A ``pub`` to a joined room, before it is published."""

    uid: str
    conn: str
    room: str
    data: Any
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A ``send`` (private message), before it is delivered or queued."""

    uid: str
    conn: str
    to: str
    data: Any
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RpcRequest:
    """An ``rpc`` frame: the application answers it."""

    uid: str
    conn: str
    method: str
    data: Any
    meta: dict[str, Any] = field(default_factory=dict)


Request: TypeAlias = (
    ConnectRequest | RefreshRequest | JoinRequest | PubRequest | SendRequest | RpcRequest
)


# -- answers -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse the request: the client gets ``err`` ``code`` ``message`` (or, for
    ``connect``, the handshake is refused with that status)."""

    code: int = 403
    message: str = "refused by the application"

    def __post_init__(self) -> None:
        if self.code not in REFUSE_CODES:
            raise ValueError(f"refuse code must be one of {sorted(REFUSE_CODES)}")


@dataclass(frozen=True, slots=True)
class ConnectAnswer:
    """Allow; join ``rooms`` at ``welcome``; attach ``meta`` to the connection."""

    rooms: tuple[str, ...] = ()
    meta: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RefreshAnswer:
    """Allow; ``meta`` (when not None) replaces the connection's metadata."""

    meta: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class JoinAnswer:
    """Allow the join."""


@dataclass(frozen=True, slots=True)
class PubAnswer:
    """Allow; ``data`` (unless :data:`UNCHANGED`) is published instead of the client's."""

    data: Any = UNCHANGED


@dataclass(frozen=True, slots=True)
class SendAnswer:
    """Allow; ``data`` (unless :data:`UNCHANGED`) is delivered instead of the client's."""

    data: Any = UNCHANGED


@dataclass(frozen=True, slots=True)
class RpcAnswer:
    """The result: the client gets ``ok`` with this ``data``."""

    data: Any = None


Answer: TypeAlias = (
    ConnectAnswer | RefreshAnswer | JoinAnswer | PubAnswer | SendAnswer | RpcAnswer | Refuse
)

#: the answer that allows, per hook (what a fail-open hook returns)
ALLOW: Final[dict[HookName, Answer]] = {
    "connect": ConnectAnswer(),
    "refresh": RefreshAnswer(),
    "join": JoinAnswer(),
    "pub": PubAnswer(),
    "send": SendAnswer(),
    "rpc": RpcAnswer(None),
}
_ANSWER_TYPES: Final[dict[HookName, type[Any]]] = {
    name: type(answer) for name, answer in ALLOW.items()
}


def answer_types(hook: HookName) -> tuple[type[Any], ...]:
    """The types a ``hook`` may answer with."""
    return (_ANSWER_TYPES[hook], Refuse)


# -- JSON ----------------------------------------------------------------------------


def request_to_json(hook: HookName, request: Request) -> dict[str, Any]:
    """The JSON object POSTed to an HTTP hook: ``{"hook": name, ...fields}``."""
    body = asdict(request)
    if "rooms_auto" in body:
        body["rooms_auto"] = list(body["rooms_auto"])
    return {"hook": hook, **body}


def _bad(message: str) -> HookFailed:
    return HookFailed("bad_answer", message)


def _meta(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _bad("meta must be an object")
    return value


def _refuse(value: object) -> Refuse:
    if not isinstance(value, dict):
        raise _bad("refuse must be an object")
    code = value.get("code", 403)
    message = value.get("message", "refused by the application")
    if type(code) is not int or code not in REFUSE_CODES:
        raise _bad(f"refuse.code must be one of {sorted(REFUSE_CODES)}")
    if not isinstance(message, str):
        raise _bad("refuse.message must be a string")
    return Refuse(code, message[:MAX_MESSAGE_CHARS])


def answer_from_json(hook: HookName, obj: object) -> Answer:
    """Parse an HTTP hook's JSON answer; :class:`HookFailed` when it is not valid.

    ``{"refuse": {"code": 403, "message": "..."}}`` refuses. Otherwise the object
    allows, with the fields of the hook's answer: ``rooms`` and ``meta`` (connect),
    ``meta`` (refresh), ``data`` (pub, send: rewrite; rpc: the result).
    """
    if not isinstance(obj, dict):
        raise _bad("the answer must be a JSON object")
    if "refuse" in obj:
        return _refuse(obj["refuse"])
    if hook == "connect":
        rooms = obj.get("rooms", [])
        if not isinstance(rooms, list) or not all(isinstance(r, str) and r for r in rooms):
            raise _bad("rooms must be a list of room names")
        return ConnectAnswer(tuple(rooms), _meta(obj.get("meta")))
    if hook == "refresh":
        return RefreshAnswer(_meta(obj.get("meta")))
    if hook == "join":
        return JoinAnswer()
    if hook == "pub":
        return PubAnswer(obj.get("data", UNCHANGED))
    if hook == "send":
        return SendAnswer(obj.get("data", UNCHANGED))
    return RpcAnswer(obj.get("data"))
