"""Which ``Sec-WebSocket-Protocol`` offers a handshake may carry (docs/protocol.md).

Guarantees of :func:`refusal_of_offer`:

* No header, or one that lists no token (blank), is accepted: the documented default
  (:attr:`~core.protocol.Encoding.MSGPACK`, no header echoed) applies.
* A header listing at least one token none of which Squall speaks is refused:
  the handshake is answered 400 with :data:`SUPPORTED` in the JSON body, before any
  token or capacity check, so a client that asked for ``chat`` learns what to ask
  for instead of silently getting msgpack it cannot read.
* An offer with at least one supported token is accepted; the first supported one
  wins (:func:`~core.protocol.select_encoding`).
"""

from __future__ import annotations

from typing import Final

from core.protocol import Encoding, select_encoding

__all__ = ["DEFAULT", "SUPPORTED", "offered", "refusal_of_offer"]

#: Every subprotocol token the server speaks, preferred first.
SUPPORTED: Final = tuple(e.value for e in Encoding)

#: What a connection speaks when its client offered no subprotocol.
DEFAULT: Final = Encoding.MSGPACK


def offered(header: str | None) -> list[str]:
    """The tokens of a ``Sec-WebSocket-Protocol`` header (comma-separated, trimmed)."""
    if not header:
        return []
    return [token.strip() for token in header.split(",") if token.strip()]


def refusal_of_offer(header: str | None) -> str | None:
    """The message of a 400 refusal for this offer, or ``None`` when it is acceptable."""
    tokens = offered(header)
    if not tokens or select_encoding(tokens) is not None:
        return None
    listed = ", ".join(tokens)
    return (
        f"unsupported subprotocol offered ({listed}); offer one of {', '.join(SUPPORTED)} "
        f"or none for {DEFAULT.value}"
    )
