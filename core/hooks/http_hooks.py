"""HTTP hooks: each request POSTed as JSON to the application, signed like the server API.

The request carries the same three headers as a server-API request (see
:mod:`core.signing`): ``X-Squall-Timestamp``, ``X-Squall-Nonce`` and
``X-Squall-Signature`` = hex HMAC-SHA256 of ``api.secret`` over
``POST\\n<path>\\n<timestamp>\\n<nonce>\\n<body>``. The application checks them the
way Squall checks its own API (``examples/hooks_app.py`` does), so it can refuse
anything that does not come from Squall, and refuse a replayed request by its nonce.

Guarantees: every attempt gets a fresh timestamp and nonce (a retried request is
never a replay); only a ``200`` with a valid JSON answer (see
:func:`core.hooks.contract.answer_from_json`) counts as an answer: any other status,
an unreachable application or a malformed body raises :class:`HookFailed`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from core.clock import Clock
from core.hooks.contract import (
    Answer,
    HookFailed,
    HookName,
    Request,
    answer_from_json,
    request_to_json,
)
from core.hooks.http_pool import HttpError, HttpPool
from core.signing import signed_headers

__all__ = ["RETRY_SAFE", "HttpHook"]

#: hooks that may be retried: asking again changes nothing (no message goes out twice)
RETRY_SAFE: frozenset[HookName] = frozenset({"connect", "refresh", "join"})
#: statuses worth another try (the application or its proxy is restarting)
_RETRY_STATUSES = frozenset({502, 503, 504})


class HttpHook:
    """One hook endpoint of the application."""

    def __init__(self, name: HookName, url: str, secret: str, pool: HttpPool, clock: Clock):
        self.name = name
        self.url = url
        self._path = urlsplit(url).path or "/"
        self._secret = secret
        self._pool = pool
        self._clock = clock
        self.retry_safe = name in RETRY_SAFE

    async def __call__(self, request: Request) -> Answer:
        obj = await self._post(request_to_json(self.name, request))
        return answer_from_json(self.name, obj)

    async def call_batch(self, requests: Sequence[Request]) -> list[Answer]:
        """One request for several (``hooks.pub.batch``): the body is
        ``{"hook": name, "batch": [request, ...]}`` and the answer must be
        ``{"answers": [answer, ...]}`` with one answer per request, in order."""
        batch = [request_to_json(self.name, r) for r in requests]
        obj = await self._post({"hook": self.name, "batch": batch})
        answers = obj.get("answers") if isinstance(obj, dict) else None
        if not isinstance(answers, list) or len(answers) != len(requests):
            raise HookFailed("bad_answer", f"hook {self.name}: answers must match the batch")
        return [answer_from_json(self.name, a) for a in answers]

    async def _post(self, payload: dict[str, Any]) -> Any:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        headers = signed_headers(
            self._secret, "POST", self._path, body, now_ms=int(self._clock.wall() * 1000)
        )
        headers["Content-Type"] = "application/json"
        try:
            response = await self._pool.post(self.url, body, headers)
        except HttpError as e:
            raise HookFailed("unreachable", f"hook {self.name}: {e}") from None
        if response.status != 200:
            reason = "retryable_status" if response.status in _RETRY_STATUSES else "status"
            raise HookFailed(reason, f"hook {self.name}: HTTP {response.status}")
        try:
            return json.loads(response.body)
        except ValueError:
            raise HookFailed("bad_answer", f"hook {self.name}: answer is not JSON") from None
