"""``data`` values: the one client-chosen value of ``pub``, ``send`` and the server API.

A ``data`` value travels packed: the decoders hand over whatever msgpack or JSON
produced, :func:`pack_data` turns it into one MessagePack value (bin type on), and
from then on every node, the backend and the history keep those bytes unchanged.
Only a JSON-subprotocol receiver needs them unpacked again, in the JSON form given
by :func:`msgpack_to_json_value` (docs/protocol.md, "JSON mapping").

Guarantees:

* :func:`pack_data` accepts exactly the values that nest at most
  :data:`MAX_DATA_DEPTH` arrays/maps deep and have a MessagePack form; anything
  else raises ``ValueError``, in time linear in the value's size, without recursion.
* Every value :func:`pack_data` returns converts with :func:`msgpack_to_json_value`,
  whose recursion stays far inside Python's limit.

Nothing here performs I/O or keeps state.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from typing import Any, Final

import msgpack

__all__ = [
    "MAX_DATA_DEPTH",
    "data_from_json",
    "jsonable",
    "msgpack_to_json_value",
    "pack_data",
]

#: ``data`` values nest at most this many arrays/maps deep, so that converting them
#: to JSON stays far inside Python's recursion limit (1000 frames).
MAX_DATA_DEPTH: Final = 100


def pack_data(value: Any) -> bytes:
    """The MessagePack encoding (bin type on) of a decoded ``data`` value.

    Accepts what the msgpack or JSON decoders produce. Raises ``ValueError`` when the
    value nests deeper than :data:`MAX_DATA_DEPTH` or has no MessagePack form (an int
    outside [-2**63, 2**64), a str with lone surrogates, another type). Every packed
    value it returns converts with :func:`msgpack_to_json_value`.
    """
    if _deeper_than(value, MAX_DATA_DEPTH):
        raise ValueError(f"data nests deeper than {MAX_DATA_DEPTH} levels")
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise ValueError(f"data has no MessagePack encoding: {e}") from e
    return packed


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` has more than ``limit`` nested arrays/maps; breadth-first, so
    it needs no recursion and visits each node once."""
    level = [value]
    for _ in range(limit + 1):  # pass n looks at the items inside n arrays/maps
        inner: list[Any] = []
        found = False
        for item in level:
            if isinstance(item, dict):
                found = True
                inner.extend(item.values())  # keys are never containers after decoding
            elif isinstance(item, list) or type(item) is tuple:  # not ExtType
                found = True
                inner.extend(item)
        if not found:
            return False
        level = inner
    return True


def data_from_json(value: Any) -> bytes:
    """:func:`pack_data` for a JSON-decoded value (server API bodies). Same guarantees."""
    return pack_data(value)


def msgpack_to_json_value(data: bytes) -> Any:
    """The JSON form of a ``data`` value packed by :func:`pack_data` (docs/protocol.md,
    "JSON mapping").

    bin -> ``{"$bin": base64}``; timestamp ext -> int Unix ms (floored); other ext ->
    ``{"$ext": code, "$bin": base64}``; NaN/Infinity -> ``null``; a map key that is
    not a str -> the JSON text of its converted form (``1`` -> ``"1"``, ``true`` ->
    ``"true"``). Raises ``ValueError`` when ``data`` is not one msgpack value.
    """
    value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    return jsonable(value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def jsonable(value: Any) -> Any:
    """The JSON form of an unpacked msgpack value (or of a server frame holding such
    values), by the mapping of :func:`msgpack_to_json_value`.

    Raises ``TypeError`` for a type msgpack does not produce. It recurses once per
    nesting level: callers pass values that went through :func:`pack_data`
    (:data:`MAX_DATA_DEPTH` levels), possibly inside a frame a few levels deep.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)  # IntEnum members become plain ints
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return {"$bin": _b64(value)}
    if isinstance(value, msgpack.Timestamp):
        return value.to_unix_nano() // 1_000_000
    if isinstance(value, msgpack.ExtType):  # before tuple: ExtType is a namedtuple
        return {"$ext": value.code, "$bin": _b64(value.data)}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, Mapping):
        return {_json_key(k): jsonable(v) for k, v in value.items()}
    raise TypeError(f"no JSON form for {type(value).__name__}")


def _json_key(key: Any) -> str:
    converted = jsonable(key)
    if isinstance(converted, str):
        return converted
    return json.dumps(converted, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
