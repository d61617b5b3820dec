"""Squall wire protocol v1: a sans-I/O codec between WebSocket messages and typed frames.

Implements ``../shared/PROTOCOL.md`` (summarised, with the choices it leaves open,
in ``docs/protocol.md``). Nothing here performs I/O, awaits or keeps state between
calls: the WebSocket handler feeds in what Tornado's ``on_message`` returns and writes
out what the encoders return.

Errors are split the way wsproto splits them, and mapped to codes in this one module:

* :class:`ProtocolError`: the peer broke the framing (text frame on the msgpack
  subprotocol, undecodable bytes, top level not a map). The connection must be
  closed with :attr:`ProtocolError.close_code` (always 4000 from :func:`decode`).
* :class:`RequestError`: the framing was fine but the request was not (unknown
  ``t``, missing or mistyped field). It is answered with :func:`error_frame` and the
  connection stays open. Server code raises it too for 403/404/409/429/503.

Guarantee of :func:`decode`: whatever the input, it returns a frame or raises one of
those two exceptions, in time and memory linear in the message length (hostile
length headers and deep nesting fail fast).

The typed client frames are defined in :mod:`core.client_frames`; ``data`` values are
packed and converted to JSON by :mod:`core.datavalue`. Their public names are
re-exported here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Final, NoReturn

import msgpack

from core.client_frames import (
    AckFrame,
    AuthFrame,
    ClientFrame,
    JoinFrame,
    LeaveFrame,
    PingFrame,
    PresenceFrame,
    PubFrame,
    RefreshFrame,
    RpcFrame,
    SendFrame,
)
from core.codes import CloseCode, ErrCode, should_reconnect
from core.datavalue import (
    MAX_DATA_DEPTH,
    data_from_json,
    jsonable,
    msgpack_to_json_value,
    pack_data,
)
from core.errors import ProtocolError, RequestError
from core.messages import DirectMessage, Publication

__all__ = [
    "MAX_DATA_DEPTH",
    "MAX_EPOCH_CHARS",
    "MAX_MID_CHARS",
    "MAX_ROOM_BYTES",
    "MAX_TOKEN_CHARS",
    "MAX_UID_BYTES",
    "AckFrame",
    "AuthFrame",
    "ClientFrame",
    "CloseCode",
    "Encoding",
    "ErrCode",
    "JoinFrame",
    "LeaveFrame",
    "PingFrame",
    "PresenceFrame",
    "ProtocolError",
    "PubFrame",
    "RefreshFrame",
    "RequestError",
    "RpcFrame",
    "SendFrame",
    "bye",
    "data_from_json",
    "decode",
    "encode",
    "encode_dm",
    "encode_msg",
    "err",
    "error_frame",
    "msgpack_to_json_value",
    "ok",
    "pack_data",
    "pong",
    "presence_event",
    "select_encoding",
    "should_reconnect",
    "validate_room",
    "welcome",
]

#: ``token`` in ``auth`` / ``refresh``: 1 to 8192 characters.
MAX_TOKEN_CHARS: Final = 8192
#: room names: 1 to 128 bytes of UTF-8 (PROTOCOL.md).
MAX_ROOM_BYTES: Final = 128
#: ``to`` in ``send`` (a user id): 1 to 256 bytes of UTF-8.
MAX_UID_BYTES: Final = 256
#: each ``mid`` in ``ack``: 1 to 128 characters.
MAX_MID_CHARS: Final = 128
#: ``epoch`` in ``join``: 1 to 128 characters (the server issues them, they are short).
MAX_EPOCH_CHARS: Final = 128
#: ``method`` in ``rpc``: 1 to 128 characters.
MAX_METHOD_CHARS: Final = 128

_UINT_LIMIT: Final = 2**64
# Unicode category Cc: C0 controls, DEL and C1 controls.
_CONTROL_CHARS: Final = re.compile("[\x00-\x1f\x7f-\x9f]")


# -- codes ---------------------------------------------------------------------------


class Encoding(StrEnum):
    """The two subprotocols; the value is the ``Sec-WebSocket-Protocol`` token."""

    MSGPACK = "squall.v1.msgpack"
    JSON = "squall.v1.json"


def select_encoding(offered: Sequence[str]) -> Encoding | None:
    """The first subprotocol in ``offered`` (client preference order) that we speak.

    ``None`` when the client offered none we speak: the server then uses
    :attr:`Encoding.MSGPACK` without echoing a ``Sec-WebSocket-Protocol`` header.
    """
    for name in offered:
        try:
            return Encoding(name.strip())
        except ValueError:
            continue
    return None


# -- decoding ------------------------------------------------------------------------


def decode(message: bytes | str, encoding: Encoding) -> ClientFrame:
    """Decode one WebSocket message (``bytes`` = binary frame, ``str`` = text frame).

    Raises :class:`ProtocolError` (4000) when the message is not one well-formed
    msgpack/JSON map in the right frame type, :class:`RequestError` (400) when the
    map is not a valid client frame. Nothing else escapes. Unknown extra fields are
    ignored (forward compatibility).
    """
    obj = _parse(message, encoding)
    return _frame_from_map(obj)


def _parse(message: bytes | str, encoding: Encoding) -> dict[Any, Any]:
    if encoding == Encoding.MSGPACK:
        if isinstance(message, str):
            raise ProtocolError(CloseCode.BAD_REQUEST, "text frame on the binary subprotocol")
        # Every limit is bounded by the message length, so a length header larger
        # than the frame (b"\xdd\xff\xff\xff\xff") fails before anything is
        # allocated; the C unpacker's nesting limit (1024) stops deep nesting.
        # use_list=True: arrays cannot be map keys, which keeps hashing cheap.
        # object_pairs_hook: see _map_without_timestamp_keys.
        limit = len(message)
        try:
            obj = msgpack.unpackb(
                message,
                raw=False,
                strict_map_key=False,
                use_list=True,
                object_pairs_hook=_map_without_timestamp_keys,
                max_str_len=limit,
                max_bin_len=limit,
                max_array_len=limit,
                max_map_len=limit,
                max_ext_len=limit,
            )
        except Exception as e:  # any failure of the decoder is a framing error
            raise ProtocolError(CloseCode.BAD_REQUEST, "undecodable frame") from e
    else:
        if not isinstance(message, str):
            raise ProtocolError(CloseCode.BAD_REQUEST, "binary frame on the JSON subprotocol")
        try:
            # RecursionError (deep nesting), ValueError (ints over 4300 digits) and
            # NaN/Infinity (not JSON, rejected by _reject_constant) all land here.
            obj = json.loads(message, parse_constant=_reject_constant)
        except Exception as e:  # any failure of the decoder is a framing error
            raise ProtocolError(CloseCode.BAD_REQUEST, "undecodable frame") from e
    if not isinstance(obj, dict):
        raise ProtocolError(CloseCode.BAD_REQUEST, "top level is not a map")
    return obj


def _map_without_timestamp_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """Refuse timestamps as map keys before they reach a dict.

    A timestamp hashes as a tuple of two ints, which is not randomised and can be
    inverted: a peer could fill a frame with thousands of distinct keys of one hash
    and make building the dict quadratic (half a second of CPU for one 64 KiB frame,
    a hundred times that for 640 KiB). Every other key type is safe: str, bytes and
    ext keys hash with the per-process random seed, and at most a few dozen ints or
    floats of the msgpack range share a hash.
    """
    for key, _ in pairs:
        if type(key) is msgpack.Timestamp:
            raise ValueError("timestamp used as a map key")
    return dict(pairs)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _frame_from_map(obj: dict[Any, Any]) -> ClientFrame:
    raw_id = obj.get("id")
    rid = raw_id if _is_uint(raw_id) else None
    if not all(isinstance(key, str) for key in obj):
        raise RequestError(ErrCode.BAD_REQUEST, "non-string key", rid)
    if "t" not in obj:
        raise RequestError(ErrCode.BAD_REQUEST, "missing field: t", rid)
    t = obj["t"]
    build = _BUILDERS.get(t) if isinstance(t, str) else None
    if build is None:
        raise RequestError(ErrCode.BAD_REQUEST, "unknown frame type", rid)
    return build(obj, rid)


def _is_uint(value: object) -> bool:
    # type() rather than isinstance(): bool is an int subclass and is not an id.
    return type(value) is int and 0 <= value < _UINT_LIMIT


def _missing(name: str, rid: int | None) -> RequestError:
    return RequestError(ErrCode.BAD_REQUEST, f"missing field: {name}", rid)


def _invalid(name: str, rid: int | None) -> RequestError:
    return RequestError(ErrCode.BAD_REQUEST, f"invalid field: {name}", rid)


def _require(obj: dict[Any, Any], name: str, rid: int | None) -> Any:
    if name not in obj:
        raise _missing(name, rid)
    return obj[name]


def _request_id(obj: dict[Any, Any], rid: int | None) -> int:
    _require(obj, "id", rid)
    if rid is None:
        raise _invalid("id", None)
    return rid


def _is_utf8(text: str) -> bool:
    # JSON "\ud800" escapes give lone surrogates, which have no UTF-8 form.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(value: object, name: str, rid: int | None, max_chars: int) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= max_chars or not _is_utf8(value):
        raise _invalid(name, rid)
    return value


def _token(obj: dict[Any, Any], rid: int | None) -> str:
    return _text(_require(obj, "token", rid), "token", rid, MAX_TOKEN_CHARS)


def validate_room(room: object, request_id: int | None) -> str:
    """``room`` if it is 1 to 128 bytes of UTF-8 without control characters (C0, DEL,
    C1), else :class:`RequestError` 400 ``invalid field: room`` carrying ``request_id``.
    """
    if isinstance(room, str) and 0 < len(room) <= MAX_ROOM_BYTES:
        try:
            size = len(room.encode("utf-8"))
        except UnicodeEncodeError:
            size = 0
        if 0 < size <= MAX_ROOM_BYTES and _CONTROL_CHARS.search(room) is None:
            return room
    raise _invalid("room", request_id)


def _room(obj: dict[Any, Any], rid: int | None) -> str:
    return validate_room(_require(obj, "room", rid), rid)


def _data(obj: dict[Any, Any], rid: int | None) -> bytes:
    value = _require(obj, "data", rid)
    try:
        return pack_data(value)
    except ValueError:
        raise _invalid("data", rid) from None


def _build_auth(obj: dict[Any, Any], rid: int | None) -> AuthFrame:
    return AuthFrame(_token(obj, rid))


def _build_refresh(obj: dict[Any, Any], rid: int | None) -> RefreshFrame:
    return RefreshFrame(_request_id(obj, rid), _token(obj, rid))


def _build_join(obj: dict[Any, Any], rid: int | None) -> JoinFrame:
    request_id = _request_id(obj, rid)
    room = _room(obj, rid)
    since = obj.get("since")
    if since is not None and not _is_uint(since):
        raise _invalid("since", rid)
    epoch = obj.get("epoch")
    if epoch is not None:
        epoch = _text(epoch, "epoch", rid, MAX_EPOCH_CHARS)
    room_token = obj.get("token")
    if room_token is not None:
        room_token = _text(room_token, "token", rid, MAX_TOKEN_CHARS)
    return JoinFrame(request_id, room, since, epoch, room_token)


def _build_leave(obj: dict[Any, Any], rid: int | None) -> LeaveFrame:
    return LeaveFrame(_request_id(obj, rid), _room(obj, rid))


def _build_pub(obj: dict[Any, Any], rid: int | None) -> PubFrame:
    request_id = _request_id(obj, rid)
    return PubFrame(request_id, _room(obj, rid), _data(obj, rid))


def _build_send(obj: dict[Any, Any], rid: int | None) -> SendFrame:
    request_id = _request_id(obj, rid)
    to = _require(obj, "to", rid)
    if not isinstance(to, str) or not _is_utf8(to) or not 0 < len(to.encode()) <= MAX_UID_BYTES:
        raise _invalid("to", rid)
    return SendFrame(request_id, to, _data(obj, rid))


def _build_rpc(obj: dict[Any, Any], rid: int | None) -> RpcFrame:
    request_id = _request_id(obj, rid)
    method = _text(_require(obj, "method", rid), "method", rid, MAX_METHOD_CHARS)
    data = _data(obj, rid) if "data" in obj else pack_data(None)
    return RpcFrame(request_id, method, data)


def _build_ack(obj: dict[Any, Any], rid: int | None) -> AckFrame:
    mid = _require(obj, "mid", rid)
    mids = [mid] if isinstance(mid, str) else mid
    if not isinstance(mids, list) or not mids:
        raise _invalid("mid", rid)
    return AckFrame(tuple(_text(m, "mid", rid, MAX_MID_CHARS) for m in mids))


def _build_presence(obj: dict[Any, Any], rid: int | None) -> PresenceFrame:
    return PresenceFrame(_request_id(obj, rid), _room(obj, rid))


def _build_ping(obj: dict[Any, Any], rid: int | None) -> PingFrame:
    return PingFrame(_request_id(obj, rid))


_BUILDERS: Final[Mapping[str, Callable[[dict[Any, Any], int | None], ClientFrame]]] = {
    "auth": _build_auth,
    "refresh": _build_refresh,
    "join": _build_join,
    "leave": _build_leave,
    "pub": _build_pub,
    "send": _build_send,
    "ack": _build_ack,
    "presence": _build_presence,
    "ping": _build_ping,
    "rpc": _build_rpc,
}


# -- encoding ------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(frame: Mapping[str, Any], encoding: Encoding) -> bytes | str:
    """Encode a server frame built by the helpers below: ``bytes`` for msgpack (send as
    a binary message), ``str`` for JSON (send as a text message).

    JSON values follow the same mapping as :func:`msgpack_to_json_value`.
    """
    if encoding == Encoding.MSGPACK:
        packed: bytes = msgpack.packb(
            frame if isinstance(frame, dict) else dict(frame), use_bin_type=True
        )
        return packed
    return _dumps(jsonable(frame))


def _splice(fields: list[Any], data: bytes) -> bytes:
    """A msgpack map of the key/value pairs in ``fields`` followed by ``data``.

    A msgpack map is a header followed by its keys and values, each encoded on its
    own, so ``data`` (already packed) is appended as is, never unpacked. The fields
    (at most 14, 7 pairs) are packed as one array and its one-byte fixarray header
    is swapped for the fixmap header of ``len(fields) // 2 + 1`` entries.
    """
    assert len(fields) % 2 == 0 and len(fields) <= 14
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return bytes((0x80 | (len(fields) // 2 + 1),)) + packed[1:] + b"\xa4data" + data


def encode_msg(pub: Publication, encoding: Encoding) -> bytes | str:
    """A ``msg`` frame: ``t``, ``room``, ``seq``, ``from``, ``ts``, ``epoch``, ``data``.

    ``epoch`` is an extension of PROTOCOL.md v1 (clients that do not know it ignore
    it): when a room's history is lost its ``seq`` restarts under a new epoch, and a
    connected client can tell a restarted ``seq`` from a duplicate.

    ``pub.data`` must be one packed msgpack value (as produced by :func:`pack_data`).
    The msgpack form copies it without unpacking it.
    """
    if encoding == Encoding.MSGPACK:
        fields = ["t", "msg", "room", pub.room, "seq", pub.seq, "from", pub.from_uid]
        return _splice([*fields, "ts", pub.ts, "epoch", pub.epoch], pub.data)
    return _dumps(
        {
            "t": "msg",
            "room": pub.room,
            "seq": pub.seq,
            "from": pub.from_uid,
            "ts": pub.ts,
            "epoch": pub.epoch,
            "data": msgpack_to_json_value(pub.data),
        }
    )


def encode_dm(dm: DirectMessage, offline: bool, encoding: Encoding) -> bytes | str:
    """A ``dm`` frame: ``t``, ``mid``, ``from``, ``ts``, ``offline``, ``data``.

    Same technique and precondition on ``dm.data`` as :func:`encode_msg`.
    """
    if encoding == Encoding.MSGPACK:
        fields = ["t", "dm", "mid", dm.mid, "from", dm.from_uid, "ts", dm.ts]
        return _splice([*fields, "offline", offline], dm.data)
    return _dumps(
        {
            "t": "dm",
            "mid": dm.mid,
            "from": dm.from_uid,
            "ts": dm.ts,
            "offline": offline,
            "data": msgpack_to_json_value(dm.data),
        }
    )


# -- server frame builders -----------------------------------------------------------


def welcome(
    conn: str, uid: str, node: str, hb: float, exp: int, encoding: Encoding | None = None
) -> dict[str, Any]:
    """``welcome``: connection id, user id, node id, heartbeat interval (s), token exp (ms);
    with ``encoding``, the extension field ``subprotocol`` naming the one in use."""
    frame: dict[str, Any] = {
        "t": "welcome",
        "conn": conn,
        "uid": uid,
        "node": node,
        "hb": hb,
        "exp": exp,
    }
    if encoding is not None:
        frame["subprotocol"] = encoding.value
    return frame


def ok(request_id: int, **fields: Any) -> dict[str, Any]:
    """``ok`` answering request ``request_id`` with result ``fields`` (not named t or id)."""
    return {"t": "ok", "id": request_id, **fields}


def err(
    request_id: int | None, code: ErrCode, reason: str, retry_after: float | None = None
) -> dict[str, Any]:
    """``err``; ``id`` is left out when the request had no valid one."""
    frame: dict[str, Any] = {"t": "err"}
    if request_id is not None:
        frame["id"] = request_id
    frame["code"] = int(code)
    frame["reason"] = reason
    if retry_after is not None:
        frame["retry_after"] = retry_after
    return frame


def error_frame(e: RequestError) -> dict[str, Any]:
    """The ``err`` frame answering ``e``."""
    return err(e.request_id, e.code, e.reason, e.retry_after)


def bye(code: CloseCode, reason: str) -> dict[str, Any]:
    """``bye``, sent just before a server-initiated close with the same code."""
    return {"t": "bye", "code": int(code), "reason": reason}


def pong(request_id: int) -> dict[str, Any]:
    """``pong`` answering ``ping`` ``request_id``."""
    return {"t": "pong", "id": request_id}


def presence_event(room: str, uid: str, event: str) -> dict[str, Any]:
    """``presence``: ``uid``'s first connection joined ``room`` (``event`` ``"join"``) or
    its last one left (``"leave"``)."""
    return {"t": "presence", "room": room, "uid": uid, "event": event}
