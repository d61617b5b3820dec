"""Log hygiene: a node's log is part of its behaviour (COMMON rules).

:class:`LogHygiene` watches one test. It fails the test (at teardown, through the
``log_hygiene`` fixture of ``tests/conftest.py``) when anything it saw contains a
traceback, ``Exception ignored``, ``never awaited`` or ``generator didn't stop``:

* every logging record of the process (a handler on the root logger): a record
  with ``exc_info``, or whose message matches;
* ``sys.unraisablehook`` (``Exception ignored in: <coroutine ...>``), chained to
  the hook in place (pytest's), which still sees everything;
* warnings (``coroutine ... was never awaited`` is a RuntimeWarning), re-emitted
  afterwards so pytest's own warning handling is unchanged;
* the process's stderr captured for the test (in-process nodes), and the output
  of every subprocess node handed to :meth:`LogHygiene.check_text`
  (:class:`tests.procs.ServerProcess` does it for the processes it starts).

A test that provokes a logged failure on purpose declares it with
``@pytest.mark.log_allows(r"regex")``: a problem whose text matches is accepted.
"""

from __future__ import annotations

import gc
import logging
import re
import sys
import warnings
from collections.abc import Iterable
from typing import Any

__all__ = ["BAD_TEXT", "LogHygiene", "problems_in_text"]

#: what must never appear in a node's log
BAD_TEXT = re.compile(
    r"Traceback \(most recent call last\)|Exception ignored|never awaited"
    r"|generator didn't stop|Task was destroyed but it is pending"
)


def problems_in_text(text: str) -> list[str]:
    """The lines of ``text`` that match :data:`BAD_TEXT`, with the line after each."""
    lines = text.splitlines()
    return ["\n".join(lines[i : i + 3]) for i, line in enumerate(lines) if BAD_TEXT.search(line)]


class _Collector(logging.Handler):
    def __init__(self, owner: LogHygiene) -> None:
        super().__init__(logging.NOTSET)
        self.owner = owner

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        if record.exc_info and record.exc_info[0] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            self.owner.problems.append(f"log record with a traceback: {message}\n{text}")
        elif BAD_TEXT.search(message):
            self.owner.problems.append(f"log record: {message}")


class LogHygiene:
    """Collects problems while started; :meth:`verdict` lists the ones not allowed."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = [re.compile(p, re.DOTALL) for p in allowed]
        self.problems: list[str] = []
        self._handler = _Collector(self)
        self._prev_hook: Any = None
        self._warnings: warnings.catch_warnings[list[warnings.WarningMessage]] | None = None
        self._caught: list[warnings.WarningMessage] = []

    def start(self) -> None:
        logging.getLogger().addHandler(self._handler)
        self._prev_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        warnings.simplefilter("always", RuntimeWarning)

    def stop(self) -> None:
        """Collect garbage (finalizers report now, not in a later test), then detach."""
        gc.collect()
        if self._warnings is not None:
            self._warnings.__exit__(None, None, None)
            self._warnings = None
        for w in self._caught:
            text = str(w.message)
            if BAD_TEXT.search(text):
                self.problems.append(f"warning: {w.category.__name__}: {text}")
            else:  # hand it on to pytest's warning capture
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        if sys.unraisablehook == self._unraisable:
            sys.unraisablehook = self._prev_hook
        logging.getLogger().removeHandler(self._handler)

    def _unraisable(self, info: sys.UnraisableHookArgs) -> None:
        msg = info.err_msg or "Exception ignored in"
        self.problems.append(f"{msg}: {info.object!r}: {info.exc_type.__name__}: {info.exc_value}")
        self._prev_hook(info)

    def check_text(self, source: str, text: str) -> None:
        """Record the bad lines of ``text`` (a subprocess's output, captured stderr)."""
        self.problems.extend(f"{source}: {p}" for p in problems_in_text(text))

    def verdict(self) -> list[str]:
        """The problems no ``log_allows`` pattern accepts."""
        return [p for p in self.problems if not any(a.search(p) for a in self.allowed)]
