"""``/api/*``: the server API of PROTOCOL.md, a thin adapter over :mod:`core.admin`.

Each request is authenticated (admin bearer token or HMAC signature over the exact
body bytes received) before its parameters are even parsed; then the operation runs
and its result is answered as JSON. ``GET`` operations (``presence``, ``stats``)
take query arguments, ``POST`` ones a JSON object body.
"""

from __future__ import annotations

import logging
from typing import Any

from core.admin import OPERATIONS, SIGNATURES_DISABLED, ApiError, ApiGuard, ServerApi
from core.netaddr import TrustedProxies
from core.node import Node
from core.signing import RequestVerifier
from handlers.auth_http import JsonBodyHandler
from handlers.base import write_json_error

__all__ = ["ApiHandler", "api_routes"]

log = logging.getLogger("squall.api")

# JSON spends up to ~6 bytes per msgpack byte on escaped binary-ish strings; a body
# whose data would pack to over max_frame_bytes is refused 413 by the core anyway.
_JSON_OVERHEAD = 4096


class ApiHandler(JsonBodyHandler):
    """One server-API operation (``operation`` names it)."""

    SUPPORTED_METHODS = ("GET", "POST")

    def initialize(
        self,
        guard: ApiGuard,
        api: ServerApi,
        operation: str,
        trusted: TrustedProxies,
        max_body_bytes: int,
    ) -> None:
        self.guard = guard
        self.api = api
        self.operation = operation
        self.trusted = trusted
        self.max_body_bytes = max_body_bytes

    async def get(self) -> None:
        await self._run("GET")

    async def post(self) -> None:
        await self._run("POST")

    async def _run(self, method: str) -> None:
        expected = OPERATIONS[self.operation]
        if method != expected:
            write_json_error(self, 405, "method_not_allowed", f"use {expected}")
            return
        try:
            await self.guard.authenticate(
                method=method,
                path=self.request.path,
                bearer=self.bearer(),
                headers=self.request.headers,
                body=self.body,
                ip=self.client_address(),
            )
            params: dict[str, Any] | None
            if method == "GET":
                params = {
                    name: self.get_query_argument(name) for name in self.request.query_arguments
                }
            else:
                params = self.json_object()
                if params is None:
                    return
            result = await self.api.call(self.operation, params)
        except ApiError as e:
            write_json_error(self, e.status, e.error, e.message, e.retry_after)
            return
        self.write_json(result)


def api_routes(node: Node, trusted: TrustedProxies) -> list[Any]:
    """The ``/api/*`` routes of one node."""
    settings = node.settings
    if settings.api.secret is None:
        log.warning(SIGNATURES_DISABLED)
    signatures = RequestVerifier(
        settings.api.secret, settings.api.replay_window_s, node.clock, node.backend.claim_nonce
    )
    deps: dict[str, Any] = {
        "guard": ApiGuard(node, signatures),
        "api": ServerApi(node),
        "trusted": trusted,
        "max_body_bytes": 2 * settings.limits.max_frame_bytes + _JSON_OVERHEAD,
    }
    return [(rf"/api/{op}", ApiHandler, {**deps, "operation": op}) for op in OPERATIONS]
