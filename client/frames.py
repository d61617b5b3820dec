"""Frames as the client handles them: plain dicts, encoded for one of two subprotocols.

Guarantees:

* :func:`encode_frame` gives ``str`` (send as a text message) for ``"json"`` and
  ``bytes`` (a binary message, bin type on) for ``"msgpack"``.
* :func:`decode_frame` never raises: a message that does not decode to one map is
  logged as a warning on ``squall.client`` and gives ``None`` (the frame is dropped).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final, Literal

import msgpack

__all__ = ["NO_RECONNECT", "RESTART", "SUBPROTOCOLS", "Frame", "decode_frame", "encode_frame"]

log = logging.getLogger("squall.client")

Frame = dict[str, Any]

#: Close codes after which a client must not reconnect (PROTOCOL.md, close codes).
NO_RECONNECT: Final = frozenset({4001, 4003, 4009, 4010, 4029})

#: Close codes announcing a restart or a drain (1012 service restart, 1001 going
#: away): not a failure, the client reconnects after a short jittered delay with its
#: attempt count started over (client.backoff).
RESTART: Final = frozenset({1001, 1012})

#: encoding name -> ``Sec-WebSocket-Protocol`` token.
SUBPROTOCOLS: Final = {"msgpack": "squall.v1.msgpack", "json": "squall.v1.json"}


def encode_frame(frame: Frame, encoding: Literal["msgpack", "json"]) -> bytes | str:
    """``frame`` encoded for the subprotocol named ``encoding``."""
    if encoding == "json":
        return json.dumps(frame, separators=(",", ":"))
    payload: bytes = msgpack.packb(frame, use_bin_type=True)
    return payload


def decode_frame(message: bytes | str) -> Frame | None:
    """The map a server message holds (``str``: JSON, ``bytes``: msgpack), else ``None``."""
    try:
        if isinstance(message, str):
            frame = json.loads(message)
        else:
            frame = msgpack.unpackb(message, raw=False)
    except (ValueError, TypeError):
        log.warning("undecodable frame from the server dropped")
        return None
    if isinstance(frame, dict):
        return frame
    log.warning("non-map frame from the server dropped")
    return None
