"""Every code of the wire protocol, defined once: close codes, ``err`` codes, and which
close codes mean "do not reconnect".

The Python client (``client/frames.py``) and the browser client (``static/squall.js``)
carry their own copies, because they ship without the server; ``tests/unit/test_codes.py``
compares them with this module, so the three cannot drift apart.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

__all__ = ["GOING_AWAY", "NO_RECONNECT", "RESTART", "CloseCode", "ErrCode", "should_reconnect"]

#: RFC 6455 1001 "going away": what a server that shuts down without a ``bye`` sends
GOING_AWAY: Final = 1001


class CloseCode(IntEnum):
    """WebSocket close codes of PROTOCOL.md; also the ``code`` of a ``bye`` frame."""

    NORMAL = 1000
    TOO_LARGE = 1009
    INTERNAL = 1011
    RESTART = 1012
    BAD_REQUEST = 4000
    UNAUTHORIZED = 4001
    TOKEN_EXPIRED = 4002
    FORBIDDEN = 4003
    AUTH_TIMEOUT = 4004
    RATE_LIMIT = 4008
    REPLACED = 4009
    KICKED = 4010
    SLOW_CONSUMER = 4011
    TOO_MANY_CONNECTIONS = 4029
    HEARTBEAT_TIMEOUT = 4408

    @property
    def reconnect(self) -> bool:
        """False for the codes after which a client must not reconnect on its own."""
        return should_reconnect(self.value)


#: PROTOCOL.md: "Clients reconnect after any code except 4001, 4003, 4009, 4010, 4029."
NO_RECONNECT: Final = frozenset(
    {
        CloseCode.UNAUTHORIZED,
        CloseCode.FORBIDDEN,
        CloseCode.REPLACED,
        CloseCode.KICKED,
        CloseCode.TOO_MANY_CONNECTIONS,
    }
)


#: Codes announcing a restart or a drain: not a failure, so clients reconnect after a
#: short jittered delay with their attempt count started over.
RESTART: Final = frozenset({GOING_AWAY, int(CloseCode.RESTART)})


def should_reconnect(code: int) -> bool:
    """Whether a client should reconnect after a close with ``code`` (any int, e.g. 1006)."""
    return code not in NO_RECONNECT


class ErrCode(IntEnum):
    """``code`` of an ``err`` frame (the HTTP status of the same refusal)."""

    BAD_REQUEST = 400
    FORBIDDEN = 403
    NOT_FOUND = 404
    CONFLICT = 409
    TOO_LARGE = 413
    RATE_LIMITED = 429
    UNAVAILABLE = 503
