"""Every error Squall turns into an answer, in one small hierarchy.

Each leaf knows how it is answered, so no caller maps errors to codes on its own:

* :attr:`SquallError.status`: the HTTP status of a refused HTTP request (handshake,
  ``/auth/*``, ``/api/*``);
* :attr:`SquallError.close_code`: the close code when it ends a WebSocket connection;
* :attr:`SquallError.err_code`: the ``code`` of the ``err`` frame when it answers a
  request on an open connection.

The split follows wsproto: :class:`ProtocolError` is the peer breaking the framing
(close the connection), :class:`RequestError` a bad or refused request (answer it, keep
the connection). :class:`Refusal` is a refused handshake or HTTP request with
PROTOCOL.md's JSON body. The others are raised by a layer below and keep their meaning
wherever they surface. :class:`ConfigError` is answered with exit status 2.
"""

from __future__ import annotations

from typing import ClassVar

from core.codes import CloseCode, ErrCode

__all__ = [
    "AuthError",
    "BackendUnavailable",
    "ConfigError",
    "ProtocolError",
    "RateLimited",
    "Refusal",
    "RequestError",
    "SignatureError",
    "SquallError",
]


class SquallError(Exception):
    """Base of every error the server answers; see the module docstring."""

    status: int = 500
    close_code: CloseCode = CloseCode.INTERNAL
    err_code: ErrCode = ErrCode.UNAVAILABLE


class ProtocolError(SquallError):
    """The peer broke the framing: close the connection with ``close_code``."""

    status = 400
    err_code = ErrCode.BAD_REQUEST

    def __init__(self, close_code: CloseCode, reason: str) -> None:
        super().__init__(f"{int(close_code)}: {reason}")
        self.close_code = close_code
        self.reason = reason


class RequestError(SquallError):
    """A request failed: answer with an ``err`` frame; the connection stays open.

    ``request_id`` is the request's ``id`` when it had a valid one, else ``None``.
    ``retry_after`` (seconds) goes with 429 and 503.
    """

    close_code = CloseCode.BAD_REQUEST

    def __init__(
        self,
        code: ErrCode,
        reason: str,
        request_id: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{int(code)}: {reason}")
        self.code = code
        self.err_code = code
        self.status = int(code)
        self.reason = reason
        self.request_id = request_id
        self.retry_after = retry_after


#: the close code of a refusal made after the upgrade (first-frame ``auth``), by status
_CLOSE_OF_STATUS: dict[int, CloseCode] = {
    401: CloseCode.UNAUTHORIZED,
    403: CloseCode.FORBIDDEN,
    429: CloseCode.TOO_MANY_CONNECTIONS,
    503: CloseCode.INTERNAL,
}


class Refusal(SquallError):
    """A refused handshake or HTTP request: ``status`` and PROTOCOL.md's JSON fields.

    ``close_code`` is used when the same refusal happens after the upgrade (first-frame
    authentication); by default it follows the status (401 -> 4001, 403 -> 4003,
    429 -> 4029, 503 -> 1011).
    """

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        retry_after: float | None = None,
        close_code: CloseCode | None = None,
    ) -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message
        self.retry_after = retry_after
        self.close_code = close_code or _CLOSE_OF_STATUS.get(status, CloseCode.INTERNAL)
        self.err_code = _err_code(status)


def _err_code(status: int) -> ErrCode:
    try:
        return ErrCode(status)
    except ValueError:
        return ErrCode.FORBIDDEN if status < 500 else ErrCode.UNAVAILABLE


class AuthError(SquallError):
    """A token was refused, or could not be issued.

    ``reason`` is a short machine string: ``malformed``, ``bad_signature``,
    ``algorithm``, ``expired``, ``not_yet_valid``, ``audience``, ``issuer``,
    ``missing_claim``, ``wrong_type``, ``revoked`` (raised by callers that check a
    blacklist) or ``no_signing_key`` (issuance only). The message never contains the
    token or text taken from it, so the exception is safe to log.
    """

    status = 401
    close_code = CloseCode.UNAUTHORIZED
    err_code = ErrCode.FORBIDDEN

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message if message is not None else reason)
        self.reason = reason


class SignatureError(SquallError):
    """A signed server-API request was refused; ``reason`` is a short machine string.

    Reasons: ``disabled``, ``missing_header``, ``bad_timestamp``, ``stale``,
    ``bad_nonce``, ``bad_signature``, ``replayed``.
    """

    status = 401

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BackendUnavailable(SquallError):
    """The shared store cannot be reached or answered with an error.

    Raised instead of guessing: a caller must never treat it as "not banned",
    "not revoked" or "allowed". Answered 503 (HTTP and ``err``).
    """

    status = 503
    err_code = ErrCode.UNAVAILABLE


class RateLimited(SquallError):
    """An event refused by a sliding-window rate limit; retry after ``retry_after`` s."""

    status = 429
    err_code = ErrCode.RATE_LIMITED
    close_code = CloseCode.RATE_LIMIT

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited, retry after {retry_after:.3f} s")
        self.retry_after = retry_after


class ConfigError(SquallError):
    """A configuration problem; ``key`` is the dotted key (or the file) at fault.

    Answered by the command line with exit status :attr:`exit_status` (2) and one line.
    """

    exit_status: ClassVar[int] = 2

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.key = key
        self.problem = problem

    def __str__(self) -> str:
        return f"config error: {self.key}: {self.problem}"
