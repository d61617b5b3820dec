"""client.events: the one-line descriptions the CLI prints (the same as squall.js's)."""

from __future__ import annotations

from client.events import StatusEvent


def test_descriptions_match_the_browser_client() -> None:
    assert StatusEvent("connecting").describe() == "connecting"
    assert StatusEvent("connecting", attempt=2).describe() == "connecting (retry 2)"
    retry = StatusEvent("retry", attempt=1, delay=0.05, code=1012, reason="service restart")
    assert retry.describe() == "retry 1 in 0.1 s (1012 service restart)"
    assert StatusEvent("recovered", attempt=1).describe() == "recovered after 1 try"
    assert StatusEvent("recovered", attempt=3).describe() == "recovered after 3 tries"
    gave_up = StatusEvent("gave_up", attempt=10, code=1006)
    assert gave_up.describe() == "gave up after 10 tries (1006)"
    assert StatusEvent("closed", reason="unreachable").describe() == "closed (unreachable)"
    assert StatusEvent("open").describe() == "open"
