"""Logging set-up: JSON or text lines, with secrets redacted from every record.

The redaction filter is installed on the root handler, so it covers our loggers,
Tornado's access log and any library: ``token=<value>`` in a URL or query,
``Authorization: Bearer <value>``, and anything that looks like a JWT
(three base64url segments starting with ``eyJ``) are replaced by ``[REDACTED]``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

__all__ = ["RedactingFilter", "configure", "install_redaction", "redact"]

_PATTERNS = (
    (re.compile(r"((?:access_|refresh_)?token=)[^&\s\"']+", re.IGNORECASE), r"\1[REDACTED]"),
    (re.compile(r"(bearer\s+)[A-Za-z0-9\-_.~+/=]+", re.IGNORECASE), r"\1[REDACTED]"),
    (re.compile(r"eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"), "[REDACTED]"),
)


def redact(text: str) -> str:
    """``text`` with tokens and bearer credentials replaced by ``[REDACTED]``."""
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def _scrub(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:  # a malformed call is logging's business, not ours
        return record
    cleaned = redact(message)
    if cleaned != message:
        record.msg = cleaned
        record.args = None
    return record


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (args merged) with :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        _scrub(record)
        return True


def install_redaction() -> None:
    """Redact every log record of the process when it is created.

    A record factory (rather than a handler filter) covers every handler, including
    ones added later by a test harness or a library. Idempotent.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "squall_redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return _scrub(current(*args, **kwargs))

    factory.squall_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus ``extra`` fields."""

    _STD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STD and not key.startswith("_"):
                out[key] = (
                    value if isinstance(value, (int, float, bool, type(None))) else str(value)
                )
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, separators=(",", ":"))


def configure(level: str, fmt: str, node_id: str | None = None) -> None:
    """Replace the root handlers with one stderr handler in ``fmt`` (json | text)."""
    install_redaction()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        prefix = f"[{node_id}] " if node_id else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
