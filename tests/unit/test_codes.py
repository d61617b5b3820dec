"""The close codes are defined once (core/codes.py); each client's copy must match it.

The Python client and the browser client ship without the server, so they carry their
own copy of the "do not reconnect" set; this test fails when any copy drifts.
"""

from __future__ import annotations

import re
from pathlib import Path

from client.frames import NO_RECONNECT as CLIENT_NO_RECONNECT
from client.frames import RESTART as CLIENT_RESTART
from core.codes import NO_RECONNECT, RESTART, CloseCode, should_reconnect

ROOT = Path(__file__).resolve().parents[2]


def test_python_client_takes_the_servers_no_reconnect_set() -> None:
    assert set(CLIENT_NO_RECONNECT) == {int(c) for c in NO_RECONNECT}


def test_python_client_takes_the_servers_restart_set() -> None:
    assert set(CLIENT_RESTART) == set(RESTART)


def _js_set(name: str) -> set[int]:
    source = (ROOT / "static" / "squall.js").read_text()
    found = re.findall(name + r"\s*=\s*new Set\(\[([0-9,\s]+)\]\)", source)
    assert len(found) == 1, f"static/squall.js must define {name} exactly once"
    return {int(x) for x in found[0].split(",")}


def test_browser_client_takes_the_servers_no_reconnect_set() -> None:
    assert _js_set("NO_RECONNECT") == {int(c) for c in NO_RECONNECT}


def test_browser_client_takes_the_servers_restart_set() -> None:
    assert _js_set("RESTART") == set(RESTART)


def test_protocol_docs_list_the_same_codes() -> None:
    # docs/protocol.md's close-code table marks the no-reconnect codes "**no**"
    rows = re.findall(
        r"^\| (\d{4}) \|[^|]*\| \*\*no\*\* \|", (ROOT / "docs" / "protocol.md").read_text(), re.M
    )
    assert {int(x) for x in rows} == {int(c) for c in NO_RECONNECT}
    # and the contract, where it is checked out beside the repository (CI, sessions)
    contract = ROOT.parent / "shared" / "PROTOCOL.md"
    if contract.exists():
        text = contract.read_text()
        line = next(ln for ln in text.splitlines() if ln.startswith("Clients reconnect after"))
        assert {int(x) for x in re.findall(r"\b4\d{3}\b", line)} == {int(c) for c in NO_RECONNECT}


def test_every_other_code_reconnects() -> None:
    for code in CloseCode:
        assert should_reconnect(code) == (code not in NO_RECONNECT) == code.reconnect
    assert should_reconnect(1006)
