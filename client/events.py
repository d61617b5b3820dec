"""Status events: every change of a client's connection state, as one value each.

The Python client calls ``on_status`` with a :class:`StatusEvent`; the browser client
(``static/squall.js``) emits ``"status"`` with an object of the same fields. The
states, in the order a client goes through them:

* ``connecting``: a connection attempt starts (``attempt`` 0 for the first
  connection, then the retry number of the current outage);
* ``open``: the first connection is up (``welcome`` received);
* ``retry``: the connection was lost (``code``/``reason``) or a try failed; the
  next try, number ``attempt`` of this outage, starts in ``delay`` seconds;
* ``recovered``: a reconnect is up and every room was rejoined, after ``attempt``
  tries;
* ``gave_up``: ``max_attempts`` consecutive tries failed (``attempt``); the client
  ends with :class:`~client.errors.GaveUp`;
* ``closed``: the client ended (``code``/``reason`` of the close; 1000 for
  :meth:`~client.connection.SquallClient.close`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["State", "StatusEvent"]

State = Literal["connecting", "open", "retry", "recovered", "gave_up", "closed"]


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One state change; see the module docstring for what each field means per state."""

    state: State
    attempt: int = 0
    delay: float | None = None
    code: int | None = None
    reason: str = ""

    def describe(self) -> str:
        """One human line, as the command line prints it."""
        why = ""
        if self.code is not None:
            why = f" ({f'{self.code} {self.reason}'.strip()})"
        elif self.reason:
            why = f" ({self.reason})"
        if self.state == "connecting":
            return "connecting" if self.attempt == 0 else f"connecting (retry {self.attempt})"
        if self.state == "retry":
            return f"retry {self.attempt} in {self.delay or 0.0:.1f} s{why}"
        if self.state == "recovered":
            tries = "try" if self.attempt == 1 else "tries"
            return f"recovered after {self.attempt} {tries}"
        if self.state == "gave_up":
            return f"gave up after {self.attempt} tries{why}"
        if self.state == "closed":
            return f"closed{why}"
        return self.state
