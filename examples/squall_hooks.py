"""In-process hooks (``hooks.module: examples.squall_hooks``): the same rules as
``examples/hooks_app.py``, as async functions taking and returning the typed contract.
"""

from __future__ import annotations

from core.hooks.contract import (
    ConnectAnswer,
    ConnectRequest,
    JoinAnswer,
    JoinRequest,
    PubAnswer,
    PubRequest,
    RefreshAnswer,
    RefreshRequest,
    Refuse,
    RpcAnswer,
    RpcRequest,
)


async def connect(request: ConnectRequest) -> ConnectAnswer | Refuse:
    if request.uid == "mallory":
        return Refuse(403, "mallory is banned by the app")
    if request.uid.startswith("vip-"):
        return ConnectAnswer(rooms=("vip-lounge",), meta={"plan": "pro"})
    return ConnectAnswer(meta={"plan": "free"})


async def refresh(request: RefreshRequest) -> RefreshAnswer | Refuse:
    if request.uid == "lapsed":
        return Refuse(403, "subscription lapsed")
    return RefreshAnswer(meta={**request.meta, "refreshed": True})


async def join(request: JoinRequest) -> JoinAnswer | Refuse:
    if request.room.startswith("pro:") and request.meta.get("plan") != "pro":
        return Refuse(403, "this room needs the pro plan")
    return JoinAnswer()


async def pub(request: PubRequest) -> PubAnswer | Refuse:
    data = request.data
    text = data.get("text", "") if isinstance(data, dict) else ""
    if "darn" in text:
        return Refuse(400, "mind your language")
    if request.room.startswith("loud:"):
        return PubAnswer(data={**data, "text": text.upper()})
    if request.room.startswith("broken:"):
        raise RuntimeError("a bug in the application")
    return PubAnswer()


async def rpc(request: RpcRequest) -> RpcAnswer | Refuse:
    if request.method == "add":
        return RpcAnswer({"sum": request.data["a"] + request.data["b"]})
    return Refuse(404, "unknown method")
