"""A server frame encoded once per subprotocol and framed once per subprotocol.

Fan-out builds one :class:`Outbound` per message and hands the same object to every
member connection: each member gets the *same* bytes object, so the cost of a room
message is one encode (per subprotocol in use) plus one buffer append per member.
"""

from __future__ import annotations

from collections.abc import Callable

from core.protocol import Encoding
from core.wsframe import PING_FRAME, message_frame

__all__ = ["PING", "Outbound"]


class Outbound:
    """Lazily encoded, lazily framed server frame. Not thread-safe (one event loop)."""

    __slots__ = ("_build", "_frames", "_payloads")

    def __init__(
        self, build: Callable[[Encoding], bytes | str], control: bytes | None = None
    ) -> None:
        self._build = build
        self._payloads: dict[Encoding, bytes | str] = {}
        # a control frame (ping) is the same bytes for every subprotocol
        self._frames: dict[Encoding, bytes] = (
            {} if control is None else dict.fromkeys(Encoding, control)
        )

    def payload(self, encoding: Encoding) -> bytes | str:
        """The encoded frame (bytes for msgpack, str for JSON), built at most once."""
        p = self._payloads.get(encoding)
        if p is None:
            p = self._payloads[encoding] = self._build(encoding)
        return p

    def frame(self, encoding: Encoding) -> bytes:
        """The complete RFC 6455 server frame (unmasked), built at most once."""
        f = self._frames.get(encoding)
        if f is None:
            f = self._frames[encoding] = message_frame(self.payload(encoding))
        return f


#: the WebSocket ping control frame, queued like any other frame (same bytes for
#: every subprotocol); transports that frame messages themselves recognise it by identity
PING = Outbound(lambda _enc: b"", control=PING_FRAME)
