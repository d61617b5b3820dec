"""Every private (or undocumented) name of another library that production code uses.

Production code uses only public API of Tornado, asyncio and redis-py, except the names
listed by the two adapter modules below. This test checks that each listed name still
exists with the expected kind (an upgrade that renames one fails here, naming it), and
scans the code for ``._name`` accesses outside those modules, so a new one is a visible
decision rather than an accident.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import socket
from pathlib import Path

import pytest
import tornado.netutil
from tornado.ioloop import IOLoop

from core.backend.redis_edge import CONNECTION_CALLS
from handlers.tornado_private import PRIVATE_NAMES, accept_in_batches_of

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ["server.py", "core", "handlers", "client"]
ADAPTERS = {"handlers/tornado_private.py", "core/backend/redis_edge.py"}


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize(("owner", "name", "kind"), PRIVATE_NAMES)
def test_private_tornado_name_still_exists(owner: str, name: str, kind: str) -> None:
    where = _resolve(owner)
    if kind == "instance attribute":
        # set on each instance: the class's source must still assign it
        source = inspect.getsource(where)  # type: ignore[arg-type]
        assert f"self.{name} =" in source, f"Tornado's {owner} no longer sets self.{name}"
        return
    obj = getattr(where, name, None)
    assert obj is not None, f"Tornado no longer has {owner}.{name}: see handlers/tornado_private.py"
    if kind == "class":
        assert inspect.isclass(obj), f"{owner}.{name} is no longer a class"
    elif kind == "int":
        assert isinstance(obj, int), f"{owner}.{name} is no longer an int"
    elif kind == "function":
        assert callable(obj), f"{owner}.{name} is no longer callable"
        assert not inspect.iscoroutinefunction(obj), f"{owner}.{name} became a coroutine"
    else:
        assert inspect.iscoroutinefunction(obj), f"{owner}.{name} is no longer a coroutine"


def test_websocket_params_still_take_the_fields_we_pass() -> None:
    params = inspect.signature(_resolve("tornado.websocket._WebSocketParams")).parameters
    for field in ("ping_interval", "ping_timeout", "max_message_size", "compression_options"):
        assert field in params, f"tornado.websocket._WebSocketParams lost {field!r}"


@pytest.mark.parametrize(("owner", "name"), CONNECTION_CALLS)
def test_redis_connection_call_still_exists(owner: str, name: str) -> None:
    cls = _resolve(owner)
    has = hasattr(cls, name) or name in inspect.signature(cls).parameters  # type: ignore[arg-type]
    if not has and name == "connection_kwargs":
        has = "connection_kwargs" in inspect.getsource(cls)  # type: ignore[arg-type]
    assert has, f"redis-py no longer has {owner}.{name}: see core/backend/redis_edge.py"


def _private_accesses(path: Path) -> list[str]:
    """``obj._name`` where ``obj`` is not ``self``/``cls`` (our own objects' internals)."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if node.attr.startswith("__") and node.attr.endswith("__"):
                continue
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls", "super"):
                continue
            if isinstance(base, ast.Call) and getattr(base.func, "id", "") == "super":
                continue
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    return found


#: accesses of another object's underscore name in production code that are ours
#: (namedtuple's public ``_replace``, ``os._exit``): everything else belongs in an adapter
ALLOWED = {"_replace", "_exit"}


def test_no_private_name_outside_the_adapters() -> None:
    offenders = []
    for entry in PRODUCTION:
        base = ROOT / entry
        files = [base] if base.is_file() else sorted(base.rglob("*.py"))
        for path in files:
            if str(path.relative_to(ROOT)) in ADAPTERS:
                continue
            offenders += [
                hit for hit in _private_accesses(path) if hit.rsplit(".", 1)[1] not in ALLOWED
            ]
    assert not offenders, "private names outside the adapter modules:\n" + "\n".join(offenders)


def test_the_accept_handler_drains_the_listen_queue_in_one_wake_up() -> None:
    """After ``accept_in_batches_of(n)`` Tornado's accept handler takes every pending
    connection (up to n) in one wake-up, not 128: a storm waits in the node's
    admission queue, not in a kernel queue that overflows."""
    saved = tornado.netutil._DEFAULT_BACKLOG
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(600)]
    accepted: list[socket.socket] = []
    per_wakeup: list[int] = []

    async def run() -> None:
        accept_in_batches_of(1024)
        loop = IOLoop.current()
        remove = tornado.netutil.add_accept_handler(
            listener, lambda conn, _addr: accepted.append(conn)
        )
        try:
            while len(accepted) < len(clients):
                before = len(accepted)
                await asyncio.sleep(0)
                if len(accepted) > before:
                    per_wakeup.append(len(accepted) - before)
        finally:
            remove()
        assert loop is IOLoop.current()

    try:
        asyncio.run(asyncio.wait_for(run(), 10))
    finally:
        tornado.netutil._DEFAULT_BACKLOG = saved
        for s in (*clients, *accepted, listener):
            s.close()
    assert per_wakeup[0] == 600  # all of them at once (Tornado alone: 128)
