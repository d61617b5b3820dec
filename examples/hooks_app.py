"""An example application answering Squall's HTTP hooks (docs/hooks.md).

Run it next to Squall::

    SQUALL_API_SECRET=... python examples/hooks_app.py --port 9100

and point Squall at it (``hooks.pub.url: http://127.0.0.1:9100/squall/pub`` and so on).
It depends on Tornado only, and checks every request the way Squall checks its own
server API: the HMAC-SHA256 signature under the shared secret over
``POST\\n<path>\\n<timestamp>\\n<nonce>\\n<body>``, a timestamp within the replay
window, and a nonce never seen before. Unsigned, stale, forged or replayed requests
get 401 and are never acted upon.

Its rules are small on purpose (the integration tests drive each of them):

* connect: ``mallory`` is refused (403); ``vip-*`` users get plan ``pro`` and the
  server-side room ``vip-lounge``; everybody else plan ``free``.
* join: rooms ``pro:*`` need plan ``pro`` (403 otherwise).
* pub: ``{"text": ...}`` containing ``darn`` is refused (400); in rooms ``loud:*``
  the text is upper-cased (rewrite); rooms ``slow:*`` answer after ``--slow-s``.
* send: to ``nobody`` is refused (404); every message gets ``"checked": true``.
* rpc: ``add`` sums ``data.a + data.b``; ``whoami`` returns uid and meta; anything
  else is refused (404).
* refresh: allowed, meta gets ``refreshed: true``.

A body ``{"hook": ..., "batch": [request, ...]}`` (``hooks.pub.batch: true``) is
answered ``{"answers": [answer, ...]}``, one per request, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import re
import signal
import time
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler

REPLAY_WINDOW_S = 300
_NONCE = re.compile(r"[A-Za-z0-9._~+/=-]{16,128}")


class NonceBook:
    """Nonces seen within twice the replay window (a real app would use its database)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def claim(self, nonce: str) -> bool:
        now = time.monotonic()
        if len(self._seen) > 100_000:
            self._seen = {n: t for n, t in self._seen.items() if t > now}
        expiry = self._seen.get(nonce)
        if expiry is not None and expiry > now:
            return False
        self._seen[nonce] = now + 2 * REPLAY_WINDOW_S
        return True


def signature_ok(secret: bytes, path: str, headers: Any, body: bytes, nonces: NonceBook) -> str:
    """'' when the request is signed by Squall, fresh and not replayed; else why not."""
    timestamp = headers.get("X-Squall-Timestamp")
    nonce = headers.get("X-Squall-Nonce")
    signature = headers.get("X-Squall-Signature")
    if not timestamp or not nonce or not signature:
        return "unsigned"
    if not timestamp.isdigit() or abs(time.time() * 1000 - int(timestamp)) > REPLAY_WINDOW_S * 1000:
        return "stale"
    if _NONCE.fullmatch(nonce) is None:
        return "bad nonce"
    message = f"POST\n{path}\n{timestamp}\n{nonce}\n".encode() + body
    expected = hmac.new(secret, message, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        return "bad signature"
    if not nonces.claim(nonce):  # only after the signature: nobody can burn our nonces
        return "replayed"
    return ""


class Rules:
    """The application's decisions, one method per hook; each returns the JSON answer."""

    def __init__(self, slow_s: float) -> None:
        self.slow_s = slow_s

    async def connect(self, r: dict[str, Any]) -> dict[str, Any]:
        if r["uid"] == "mallory":
            return {"refuse": {"code": 403, "message": "mallory is banned by the app"}}
        if r["uid"].startswith("vip-"):
            return {"rooms": ["vip-lounge"], "meta": {"plan": "pro"}}
        return {"meta": {"plan": "free"}}

    async def refresh(self, r: dict[str, Any]) -> dict[str, Any]:
        return {"meta": {**r["meta"], "refreshed": True}}

    async def join(self, r: dict[str, Any]) -> dict[str, Any]:
        if r["room"].startswith("pro:") and r["meta"].get("plan") != "pro":
            return {"refuse": {"code": 403, "message": "this room needs the pro plan"}}
        return {}

    async def pub(self, r: dict[str, Any]) -> dict[str, Any]:
        data = r["data"]
        text = data.get("text", "") if isinstance(data, dict) else ""
        if r["room"].startswith("slow:"):
            await asyncio.sleep(self.slow_s)
        if "darn" in text:
            return {"refuse": {"code": 400, "message": "mind your language"}}
        if r["room"].startswith("loud:"):
            return {"data": {**data, "text": text.upper()}}
        return {}

    async def send(self, r: dict[str, Any]) -> dict[str, Any]:
        if r["to"] == "nobody":
            return {"refuse": {"code": 404, "message": "no such user"}}
        data = r["data"] if isinstance(r["data"], dict) else {"value": r["data"]}
        return {"data": {**data, "checked": True}}

    async def rpc(self, r: dict[str, Any]) -> dict[str, Any]:
        if r["method"] == "add":
            return {"data": {"sum": r["data"]["a"] + r["data"]["b"]}}
        if r["method"] == "whoami":
            return {"data": {"uid": r["uid"], "meta": r["meta"]}}
        return {"refuse": {"code": 404, "message": "unknown method"}}


class HookHandler(RequestHandler):
    def initialize(self, secret: bytes, nonces: NonceBook, rules: Rules, calls: dict[str, int]):
        self.secret = secret
        self.nonces = nonces
        self.rules = rules
        self.calls = calls

    async def post(self, hook: str) -> None:
        refused = signature_ok(
            self.secret, self.request.path, self.request.headers, self.request.body, self.nonces
        )
        if refused:
            self.set_status(401)
            self.finish({"error": refused})
            return
        handler = getattr(self.rules, hook, None)
        if handler is None:
            self.set_status(404)
            self.finish({"error": "unknown hook"})
            return
        request = json.loads(self.request.body)
        if "batch" in request:  # hooks.pub.batch: several requests, one answer each
            self.calls[hook] = self.calls.get(hook, 0) + len(request["batch"])
            answers = await asyncio.gather(*(handler(r) for r in request["batch"]))
            self.finish({"answers": list(answers)})
            return
        self.calls[hook] = self.calls.get(hook, 0) + 1
        self.finish(await handler(request))


class StatsHandler(RequestHandler):
    def initialize(self, calls: dict[str, int]) -> None:
        self.calls = calls

    def get(self) -> None:
        self.finish(self.calls)


def make_app(secret: str, slow_s: float = 2.0) -> Application:
    calls: dict[str, int] = {}
    args = {"secret": secret.encode(), "nonces": NonceBook(), "rules": Rules(slow_s)}
    return Application(
        [
            (r"/squall/(connect|refresh|join|pub|send|rpc)", HookHandler, {**args, "calls": calls}),
            (r"/stats", StatsHandler, {"calls": calls}),
        ]
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--slow-s", type=float, default=2.0)
    options = parser.parse_args()
    secret = os.environ.get("SQUALL_API_SECRET", "")
    if len(secret) < 32:
        raise SystemExit("SQUALL_API_SECRET (at least 32 bytes) is required")
    server = HTTPServer(make_app(secret, options.slow_s))
    server.listen(options.port, options.host)
    print(f"listening on {options.host}:{options.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


if __name__ == "__main__":
    asyncio.run(main())
