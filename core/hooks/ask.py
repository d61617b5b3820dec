"""Asking a hook on behalf of a client request: answers into ``err`` frames.

Guarantees of :func:`ask`: it returns the application's allow answer, or raises
:class:`RequestError` carrying the request id: the refusal's code and message when
the application refused, 503 ``application unavailable`` (``retry_after`` 1 s) when
it failed and the hook is fail-closed. :func:`rewritten` packs a rewritten ``data``
value, or raises 503 when the application returned one that has no MessagePack form.
"""

from __future__ import annotations

from typing import Any

from core.codes import ErrCode
from core.datavalue import pack_data
from core.errors import RequestError
from core.hooks.contract import UNCHANGED, Answer, HookFailed, HookName, Refuse, Request
from core.hooks.runner import Hooks

__all__ = ["ask", "refusal_error", "rewritten", "unavailable_error"]


def refusal_error(answer: Refuse, request_id: int | None) -> RequestError:
    return RequestError(ErrCode(answer.code), answer.message, request_id)


def unavailable_error(request_id: int | None) -> RequestError:
    return RequestError(ErrCode.UNAVAILABLE, "application unavailable", request_id, 1.0)


async def ask(hooks: Hooks, name: HookName, request: Request, request_id: int | None) -> Answer:
    try:
        answer = await hooks.call(name, request)
    except HookFailed:
        raise unavailable_error(request_id) from None
    if isinstance(answer, Refuse):
        raise refusal_error(answer, request_id)
    return answer


def rewritten(original: bytes, value: Any, request_id: int | None) -> bytes:
    """``original`` when ``value`` is :data:`UNCHANGED`, else ``value`` packed."""
    if value is UNCHANGED:
        return original
    try:
        return pack_data(value)
    except ValueError:
        raise RequestError(
            ErrCode.UNAVAILABLE, "the application rewrote data into an invalid value", request_id
        ) from None
